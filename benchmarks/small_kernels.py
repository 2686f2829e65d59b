"""OpenBLAS's small-matrix kernels: what cutting products into blocks for them buys.

kernels/cpu/blas.py's ``gemm`` cuts a product that fails OpenBLAS's small-kernel
permit into blocks of C's rows or columns that pass it (``small_blocks``), where
OpenBLAS runs its SkylakeX kernels. The switch (``blas.use_small_kernels``) is read at
every call, so both ways run the same compiled code in one process, and this script
alternates them: on, off, off, on, ... Each figure is the median over the pairs of
(time with blocks) / (time without): below 1, the blocks are faster.

    python benchmarks/small_kernels.py                      # products and steps, 1 thread
    python benchmarks/small_kernels.py --part steps --threads 2 --only mnist,deep

Products: every distinct layer of the yardstick's networks (batch, in -> out) and
scikit-learn's digits (batch 200, 64 -> 100 -> 10), forward S = X W^T ("fwd"), weight
gradient dW = dS^T X ("dW") and input gradient dX = dS W ("dX"); a dash where the
product is one call either way. Steps: ``net.train_step`` of the yardstick's networks
(tanh, softmax cross-entropy, SGD), as benchmarks/yardstick.py builds them.
"""
import argparse
import time

import numpy as np

try:   # run as a script (python benchmarks/x.py) or imported as benchmarks.x
    from .yardstick import CONFIGS, make_data
except ImportError:
    from yardstick import CONFIGS, make_data

# (batch, in, out) of every distinct layer of the yardstick's networks but "large"
# (no product of it passes the permit in any cut), and digits' layers
LAYERS = [(32, 64, 64), (32, 64, 10), (64, 784, 128), (64, 128, 10), (128, 784, 512),
          (128, 512, 512), (128, 512, 10), (64, 256, 256), (64, 256, 10), (200, 64, 100),
          (200, 100, 10)]


def _alternated(run, pairs):
    """Median over ``pairs`` alternations of (seconds of run(True)) / (seconds of
    run(False)), and the medians of each, in microseconds."""
    from fastbp.kernels.cpu.blas import use_small_kernels
    on, off = [], []
    for i in range(pairs):
        for flag in ((True, False) if i % 2 == 0 else (False, True)):
            use_small_kernels(flag)
            t0 = time.perf_counter()
            run()
            (on if flag else off).append(time.perf_counter() - t0)
    on, off = np.array(on), np.array(off)
    return float(np.median(on / off)), float(np.median(on)), float(np.median(off))


def products(dtype, pairs, budget_s):
    from numba import njit

    from fastbp.kernels.cpu.blas import gemm, small_blocks

    @njit
    def forward(n, X, W, dS, S, dW, dX):
        for _ in range(n):
            gemm(False, True, 1.0, X, W, 0.0, S)

    @njit
    def weight_grad(n, X, W, dS, S, dW, dX):
        for _ in range(n):
            gemm(True, False, 1.0, dS, X, 0.0, dW)

    @njit
    def input_grad(n, X, W, dS, S, dW, dX):
        for _ in range(n):
            gemm(False, False, 1.0, dS, W, 0.0, dX)

    print(f"\nproducts, {np.dtype(dtype).name}: blocks/whole per product (median of "
          f"{pairs} alternated pairs), the cut (c: columns of C, r: rows; size) and the "
          "whole call's time")
    print(f"{'batch x in -> out':<22}" + "".join(f"{p:>26}" for p in ("fwd", "dW", "dX")))
    rng = np.random.default_rng(0)
    for batch, n_in, n_out in LAYERS:
        X = rng.standard_normal((batch, n_in)).astype(dtype)
        W = rng.standard_normal((n_out, n_in)).astype(dtype)
        dS = rng.standard_normal((batch, n_out)).astype(dtype)
        S, dW, dX = (np.empty((batch, n_out), dtype), np.empty((n_out, n_in), dtype),
                     np.empty((batch, n_in), dtype))
        args = (X, W, dS, S, dW, dX)
        cells = []
        for fn, (ta, tb, m, n, k) in ((forward, (False, True, batch, n_out, n_in)),
                                      (weight_grad, (True, False, n_out, n_in, batch)),
                                      (input_grad, (False, False, batch, n_in, n_out))):
            along_columns, size = small_blocks(ta, tb, m, n, k)
            if size == 0:
                cells.append("-")
                continue
            fn(1, *args)
            t0 = time.perf_counter()
            fn(1, *args)
            reps = max(1, int(budget_s / pairs / 2 / max(time.perf_counter() - t0, 1e-7)))
            ratio, _, whole = _alternated(lambda: fn(reps, *args), pairs)
            cells.append(f"{ratio:.2f} ({'c' if along_columns else 'r'}{size}, "
                         f"{whole / reps * 1e6:.1f} us)")
        print(f"{f'{batch} x {n_in} -> {n_out}':<22}" + "".join(f"{c:>26}" for c in cells))


def steps(configs, dtype, pairs, budget_s):
    import fastbp
    print(f"\ntrain_step, {np.dtype(dtype).name}: blocks/whole (median of {pairs} "
          "alternated pairs) and the medians, ms per step")
    for name in configs:
        sizes, batch = CONFIGS[name]
        net = fastbp.MLP(sizes, activation="tanh", dtype=dtype, seed=0)
        opt = fastbp.SGD(net, lr=1e-6)   # small steps: the values stay in range
        X, y = make_data(sizes, batch, dtype)
        net.train_step(X, y, opt)
        t0 = time.perf_counter()
        net.train_step(X, y, opt)
        reps = max(1, int(budget_s / pairs / 2 / max(time.perf_counter() - t0, 1e-7)))

        def run():
            for _ in range(reps):
                net.train_step(X, y, opt)
        ratio, on, off = _alternated(run, pairs)
        print(f"{name:<8} {ratio:6.3f}   blocks {on / reps * 1e3:8.4f}   "
              f"whole {off / reps * 1e3:8.4f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("products", "steps", "both"), default="both",
                        help="the layer products alone, the training steps, or both "
                             "(default)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for the kernels (fastbp.set_num_threads; default 1)")
    parser.add_argument("--dtypes", default="float32,float64",
                        help="comma-separated (default float32,float64)")
    parser.add_argument("--only", default="tiny,mnist,medium,deep",
                        help="step configurations, comma-separated (of "
                             + ", ".join(CONFIGS) + ")")
    parser.add_argument("--pairs", type=int, default=21,
                        help="alternated pairs per figure (default 21)")
    parser.add_argument("--budget", type=float, default=2.0,
                        help="seconds of timing per figure (default 2)")
    args = parser.parse_args(argv)
    import fastbp
    from fastbp.kernels.cpu import blas
    fastbp.set_num_threads(args.threads)
    print(f"OpenBLAS {blas.LIBRARY_PATH}: core {blas.CORE_NAME}; blocks on by default: "
          f"{blas.use_small_kernels()}; threads {args.threads}")
    default = blas.use_small_kernels()
    try:
        for dtype in args.dtypes.split(","):
            if args.part in ("products", "both"):
                products(np.dtype(dtype).type, args.pairs, args.budget)
            if args.part in ("steps", "both"):
                steps(args.only.split(","), np.dtype(dtype).type, args.pairs,
                      args.budget)
    finally:
        blas.use_small_kernels(default)


if __name__ == "__main__":
    main()
