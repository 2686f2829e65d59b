"""MKL or OpenBLAS for each product: the measurement behind kernels/cpu/blas.py's
``mkl_takes``.

For each layer shape of the yardstick, and layers of half the outputs (the blocks two
threads take of a forward and a weight gradient), it times
a layer's three products (forward S = X W^T, weight gradient dW = dS^T X, input
gradient dX = dS W) on one thread, as the kernels call them (compiled code, BLAS by
pointer, single-threaded): with ``blas.use_mkl("every")`` (MKL for every product)
and with ``blas.use_mkl(False)`` (OpenBLAS, cut for its small-matrix kernels where
``small_blocks`` says so), and prints MKL's time over OpenBLAS's and whether
``mkl_takes`` gives the product to MKL. CPU time, median of --repeats.

    python benchmarks/mkl_products.py [--dtypes float32,float64] [--repeats 11]

Needs MKL: ``pip install "fastbp[mkl]"`` (on an Intel CPU under Linux that is all; on
other CPUs also ``FASTBP_BLAS=mkl`` in the environment).
"""
import argparse
import os
import sys
import time

import numpy as np
from numba import njit

import fastbp
from fastbp.kernels.cpu import blas
from fastbp.kernels.cpu.blas import gemm, mkl_takes

# (batch, in, out): the yardstick's layers, and layers of half their outputs
SHAPES = [(32, 64, 64), (32, 64, 10), (32, 128, 128), (64, 784, 128), (64, 784, 64),
          (64, 128, 10), (64, 256, 256), (64, 256, 128), (128, 784, 512), (128, 784, 256),
          (128, 512, 512), (128, 512, 256), (128, 512, 10), (512, 1024, 2048)]
PRODUCTS = ("forward", "dW", "dX")


@njit(cache=True)
def _repeat(X, W, dS, S, dW, dX, product, reps):
    for _ in range(reps):
        if product == 0:
            gemm(False, True, 1.0, X, W, 0.0, S)
        elif product == 1:
            gemm(True, False, 1.0, dS, X, 0.0, dW)
        else:
            gemm(False, False, 1.0, dS, W, 0.0, dX)


def _orientation(product, batch, n_in, n_out):
    """(m, n, k) of ``gemm`` for one of a layer's products (C is m x n, k inner)."""
    return [(batch, n_out, n_in), (n_out, n_in, batch), (batch, n_in, n_out)][product]


def time_products(dtype, repeats):
    """{(shape, product): (MKL us, OpenBLAS us)} on the calling thread."""
    rng = np.random.default_rng(0)
    out = {}
    for batch, n_in, n_out in SHAPES:
        X = rng.standard_normal((batch, n_in)).astype(dtype)
        W = rng.standard_normal((n_out, n_in)).astype(dtype)
        dS = rng.standard_normal((batch, n_out)).astype(dtype)
        S, dW, dX = (np.empty(s, dtype) for s in ((batch, n_out), (n_out, n_in),
                                                  (batch, n_in)))
        reps = max(1, int(3e7 / (2 * batch * n_in * n_out)))
        for product in range(3):
            times = []
            for mode in ("every", False):
                blas.use_mkl(mode)
                _repeat(X, W, dS, S, dW, dX, product, 1)
                samples = []
                for _ in range(repeats):
                    start = time.process_time()
                    _repeat(X, W, dS, S, dW, dX, product, reps)
                    samples.append((time.process_time() - start) / reps * 1e6)
                times.append(float(np.median(samples)))
            out[(batch, n_in, n_out), product] = tuple(times)
    blas.use_mkl(True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args(argv)
    if blas.MKL_PATH is None:
        print(f"MKL is not used here: {blas.MKL_REASON}", file=sys.stderr)
        return 1
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    fastbp.set_num_threads(1)
    print(f"MKL {blas.MKL_PATH}; OpenBLAS {blas.LIBRARY_PATH} ({blas.CORE_NAME}); "
          "us per product on one thread, MKL / OpenBLAS; * = mkl_takes")
    for dtype in args.dtypes.split(","):
        results = time_products(np.dtype(dtype), args.repeats)
        print(f"\n{dtype}\n{'batch x in -> out':>18} | " +
              " | ".join(f"{p:>22}" for p in PRODUCTS))
        for shape in SHAPES:
            cells = []
            for product in range(3):
                mkl_us, openblas_us = results[shape, product]
                mark = "*" if mkl_takes(*_orientation(product, *shape)) else " "
                ratio = mkl_us / openblas_us
                cells.append(f"{mkl_us:8.1f} / {openblas_us:8.1f} {ratio:4.2f}{mark}")
            batch, n_in, n_out = shape
            print(f"{batch:>5} x {n_in:>4} -> {n_out:>4} | " + " | ".join(cells),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
