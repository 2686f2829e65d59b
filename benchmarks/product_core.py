"""Which product core to use: the measurement behind kernels/cpu/linear.py's choice.

For the layer shapes of the yardstick it times a layer's three matrix products
(S = X W^T, dW = dS^T X, dX = dS W) done three ways, in one process:

    cols        what fastbp does: numba's threads each call single-threaded BLAS
                (the kernels' ?gemm) on their block of output columns (kernels/cpu/blas.py)
    rows        the same, with the forward and dX products split by batch rows
    blas-pool   numba's np.dot from one thread, letting OpenBLAS use its own pool
    hand-tiled  a prange numba kernel (row blocks, dot products over contiguous rows,
                four output columns per pass), no BLAS

and, for the small shapes, the single-threaded variants (one block on the calling
thread), which decide blocks.PARALLEL_MIN_FLOPS.

    python benchmarks/product_core.py [--threads 2] [--dtype float32]
"""
import argparse

import numpy as np

try:   # run as a script (python benchmarks/x.py) or imported by asv as benchmarks.x
    from .common import median_seconds
except ImportError:
    from common import median_seconds
from numba import njit, prange
from threadpoolctl import threadpool_limits

import fastbp
from fastbp.kernels.cpu.blas import gemm
from fastbp.kernels.cpu.blocks import block_bounds

# (batch, in, out) of every distinct layer in the yardstick configurations
SHAPES = [(32, 64, 64), (32, 64, 10), (32, 128, 128), (64, 784, 128), (64, 128, 10), (128, 784, 512),
          (128, 512, 512), (64, 256, 256), (512, 1024, 4096), (512, 4096, 4096),
          (512, 4096, 1024)]


@njit(parallel=True, cache=True, fastmath=True)
def _col_blocks(X, W, dS, S, dW, dX, nblocks):
    """What fastbp does: every product split into blocks of output columns."""
    n_out, n_in = W.shape
    for blk in prange(nblocks):
        j0, j1 = block_bounds(blk, nblocks, n_out)
        gemm(False, True, 1.0, X, W[j0:j1], 0.0, S[:, j0:j1])
    for blk in prange(nblocks):
        j0, j1 = block_bounds(blk, nblocks, n_out)
        gemm(True, False, 1.0, dS[:, j0:j1], X, 0.0, dW[j0:j1])
    for blk in prange(nblocks):
        k0, k1 = block_bounds(blk, nblocks, n_in)
        gemm(False, False, 1.0, dS, W[:, k0:k1], 0.0, dX[:, k0:k1])


@njit(parallel=True, cache=True, fastmath=True)
def _row_blocks(X, W, dS, S, dW, dX, nblocks):
    """The alternative: forward and dX split into blocks of batch rows."""
    batch, n_out = S.shape
    for blk in prange(nblocks):
        r0, r1 = block_bounds(blk, nblocks, batch)
        gemm(False, True, 1.0, X[r0:r1], W, 0.0, S[r0:r1])
    for blk in prange(nblocks):
        j0, j1 = block_bounds(blk, nblocks, n_out)
        gemm(True, False, 1.0, dS[:, j0:j1], X, 0.0, dW[j0:j1])
    for blk in prange(nblocks):
        r0, r1 = block_bounds(blk, nblocks, batch)
        gemm(False, False, 1.0, dS[r0:r1], W, 0.0, dX[r0:r1])


@njit(cache=True)
def _serial(X, W, dS, S, dW, dX):
    gemm(False, True, 1.0, X, W, 0.0, S)
    gemm(True, False, 1.0, dS, X, 0.0, dW)
    gemm(False, False, 1.0, dS, W, 0.0, dX)


@njit(cache=True)
def _blas_pool(X, W, dS, S, dW, dX):
    np.dot(X, W.T, S)
    np.dot(dS.T, X, dW)
    np.dot(dS, W, dX)


@njit(parallel=True, cache=True, fastmath=True)
def _nt_hand(A, B, C):
    """C = A @ B.T: every C[i, j] a dot product of two contiguous rows."""
    m, k = A.shape
    n = B.shape[0]
    for i in prange(m):
        j = 0
        while j + 4 <= n:
            a0 = a1 = a2 = a3 = 0.0
            for p in range(k):
                x = A[i, p]
                a0 += x * B[j, p]
                a1 += x * B[j + 1, p]
                a2 += x * B[j + 2, p]
                a3 += x * B[j + 3, p]
            C[i, j] = a0
            C[i, j + 1] = a1
            C[i, j + 2] = a2
            C[i, j + 3] = a3
            j += 4
        while j < n:
            acc = 0.0
            for p in range(k):
                acc += A[i, p] * B[j, p]
            C[i, j] = acc
            j += 1


@njit(parallel=True, cache=True, fastmath=True)
def _nn_hand(A, B, C):
    """C = A @ B, i-k-j order: rows of B stream through contiguous rows of C."""
    m, k = A.shape
    n = B.shape[1]
    for i in prange(m):
        for j in range(n):
            C[i, j] = 0.0
        for p in range(k):
            a = A[i, p]
            for j in range(n):
                C[i, j] += a * B[p, j]


@njit(cache=True)
def _hand_tiled(X, W, dS, S, dW, dX, dST):
    _nt_hand(X, W, S)
    dST[...] = dS.T
    _nn_hand(dST, X, dW)
    _nn_hand(dS, W, dX)


def median_ms(fn, budget_s=1.0, rounds=7):
    """Median milliseconds of one call of ``fn`` (common.median_seconds)."""
    return 1e3 * median_seconds(fn, budget_s, rounds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--skip-hand", action="store_true",
                        help="skip the hand-tiled kernel (slow on the large shapes)")
    args = parser.parse_args(argv)
    fastbp.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{args.dtype}, {args.threads} threads; GFLOP/s of a layer's three products "
          "(median)")
    print(f"{'batch x in x out':>18} {'MFLOP':>8} {'cols':>8} {'rows':>8} {'serial':>8} "
          f"{'blas-pool':>9} {'hand':>8}")
    for batch, n_in, n_out in SHAPES:
        X = rng.standard_normal((batch, n_in)).astype(args.dtype)
        W = rng.standard_normal((n_out, n_in)).astype(args.dtype)
        dS = rng.standard_normal((batch, n_out)).astype(args.dtype)
        S = np.empty((batch, n_out), args.dtype)
        dW = np.empty_like(W)
        dX = np.empty_like(X)
        dST = np.empty((n_out, batch), args.dtype)
        flops = 3 * 2 * batch * n_in * n_out

        def gflops(ms):
            return flops / ms / 1e6
        cols = median_ms(lambda: _col_blocks(X, W, dS, S, dW, dX, args.threads))
        rows = median_ms(lambda: _row_blocks(X, W, dS, S, dW, dX, args.threads))
        serial = median_ms(lambda: _serial(X, W, dS, S, dW, dX))
        # np.dot from one numba thread, with OpenBLAS's own pool at --threads
        with threadpool_limits(args.threads, user_api="blas"):
            pool = median_ms(lambda: _blas_pool(X, W, dS, S, dW, dX))
        hand = None
        if not (args.skip_hand and flops > 1e9):
            hand = median_ms(lambda: _hand_tiled(X, W, dS, S, dW, dX, dST))
        hand_txt = f"{gflops(hand):8.1f}" if hand else f"{'-':>8}"
        print(f"{f'{batch}x{n_in}x{n_out}':>18} {flops / 1e6:8.2f} {gflops(cols):8.1f} "
              f"{gflops(rows):8.1f} "
              f"{gflops(serial):8.1f} {gflops(pool):9.1f} {hand_txt}", flush=True)


if __name__ == "__main__":
    main()
