"""A fully connected layer on the GPU (numba.cuda twin of kernels/cpu/linear.py).

    linear_forward   S = X @ W.T + b,  A = sigma(S)
                     X (batch, in)  W (out, in)  b (out,)  S, A (batch, out)
    linear_backward  dS = dA * sigma'(S);  dW = dS.T @ X;  db = dS.sum(0);  dX = dS @ W
                     dA, A, S, dS (batch, out)  dX (batch, in)  dW (out, in)  db (out,)

All three matrix products run through one tiled shared-memory kernel (``_gemm``):

    C[m, n] = sum_k  opA(m, k) * opB(n, k)       opA(m, k) = A[m, k] or A[k, m]
                                                 opB(n, k) = B[n, k] or B[k, n]

A block of tile x tile threads owns a (tile*work)^2 tile of C; it stages
(tile*work) x tile slices of both operands in shared memory, and each thread keeps a
work x work block of C in registers (strided by tile, so loads and stores coalesce).
Ragged edges are zero-padded in shared memory and masked on store. The forward
product's epilogue adds the bias and applies sigma before the single store of S and A;
backward's sigma' and the bias-gradient reduction share one pass
(``activation_backward_bias``, a shared-memory tree reduction per column block), whose
dS then feeds the dW and dX products.
"""
import functools

import numba
import numpy as np
from numba import cuda

from ._launch import blocks, config
from .activations import activate, activation_derivative

_STORE = 0            # epilogue: C = product
_BIAS_ACTIVATION = 1  # epilogue: S = product + b, A = sigma(S)


@functools.lru_cache(maxsize=None)
def _gemm(tile, work, dtype):
    """The tiled product kernel for one (tile, work, dtype); compiled on first launch."""
    T = tile
    R = work
    BM = T * R           # rows (and columns) of C per block
    NT = T * T           # threads per block
    LOADS = BM * T // NT  # shared elements each thread stages per operand and k-step (= R)
    BMP = BM + 1         # padded rows: staging stores of untransposed operands, strided
                         # by BMP, fall into different shared-memory banks
    nbtype = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def gemm(A, a_t, B, b_t, C, b, A_out, mode, code, slope):
        M = C.shape[0]
        N = C.shape[1]
        K = A.shape[0] if a_t else A.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * T + tx
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BM
        As = cuda.shared.array((T, BMP), nbtype)
        Bs = cuda.shared.array((T, BMP), nbtype)
        acc = cuda.local.array((R, R), nbtype)
        a_reg = cuda.local.array(R, nbtype)
        b_reg = cuda.local.array(R, nbtype)
        for r in range(R):
            for c in range(R):
                acc[r, c] = 0
        for k0 in range(0, K, T):
            # Stage opA(m0:m0+BM, k0:k0+T) and opB(n0:n0+BM, k0:k0+T) as [k, m] / [k, n];
            # consecutive threads read consecutive addresses of the source array.
            for l in range(LOADS):
                e = tid + l * NT
                if a_t:
                    kk = e // BM
                    mm = e - kk * BM
                else:
                    mm = e // T
                    kk = e - mm * T
                m = m0 + mm
                k = k0 + kk
                if m < M and k < K:
                    if a_t:
                        As[kk, mm] = A[k, m]
                    else:
                        As[kk, mm] = A[m, k]
                else:
                    As[kk, mm] = 0
                if b_t:
                    kk = e // BM
                    nn = e - kk * BM
                else:
                    nn = e // T
                    kk = e - nn * T
                n = n0 + nn
                k = k0 + kk
                if n < N and k < K:
                    if b_t:
                        Bs[kk, nn] = B[k, n]
                    else:
                        Bs[kk, nn] = B[n, k]
                else:
                    Bs[kk, nn] = 0
            cuda.syncthreads()
            for kk in range(T):
                for r in range(R):
                    a_reg[r] = As[kk, ty + r * T]
                for c in range(R):
                    b_reg[c] = Bs[kk, tx + c * T]
                for r in range(R):
                    for c in range(R):
                        acc[r, c] = acc[r, c] + a_reg[r] * b_reg[c]
            cuda.syncthreads()
        for r in range(R):
            m = m0 + ty + r * T
            if m < M:
                for c in range(R):
                    n = n0 + tx + c * T
                    if n < N:
                        if mode == _BIAS_ACTIVATION:
                            s = acc[r, c] + b[n]
                            C[m, n] = s
                            A_out[m, n] = activate(s, code, slope)
                        else:
                            C[m, n] = acc[r, c]

    return gemm


def _launch_gemm(A, a_t, B, b_t, C, b, A_out, mode, code, slope):
    M, N = C.shape
    if M == 0 or N == 0:
        return
    tile, work = config.tile, config.work
    per_block = tile * work
    kernel = _gemm(tile, work, np.dtype(C.dtype).name)
    kernel[(blocks(N, per_block), blocks(M, per_block)), (tile, tile)](
        A, a_t, B, b_t, C, b, A_out, mode, code, slope)


@functools.lru_cache(maxsize=None)
def _backward_bias(tile):
    """dS = dA * sigma' with db = column sums, for one tile; compiled on first launch."""
    T = tile

    @cuda.jit
    def backward_bias(dA, A, S, dS, db, code, slope):
        batch = dA.shape[0]
        n = dA.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        j = cuda.blockIdx.x * T + tx
        part = cuda.shared.array((T, T), numba.float64)
        total = 0.0
        if j < n:
            for i in range(ty, batch, T):
                d = dA[i, j] * activation_derivative(A[i, j], S[i, j], code, slope)
                dS[i, j] = d
                total += d
        part[ty, tx] = total
        cuda.syncthreads()
        half = T // 2
        while half > 0:
            if ty < half:
                part[ty, tx] = part[ty, tx] + part[ty + half, tx]
            cuda.syncthreads()
            half //= 2
        if ty == 0 and j < n:
            db[j] = part[0, tx]

    return backward_bias


@cuda.jit
def _bias_activation_kernel(S, b, A, code, slope):
    n = S.shape[1]
    idx = cuda.grid(1)
    if idx < S.shape[0] * n:
        i = idx // n
        j = idx - i * n
        s = S[i, j] + b[j]
        S[i, j] = s
        A[i, j] = activate(s, code, slope)


def bias_activation(S, b, A, code, slope):
    """Epilogue alone, in place: S += b, then A = sigma(S). S, A: (batch, out); b: (out,).

    linear_forward fuses this into the product; it is here as the CPU module's twin.
    """
    total = S.shape[0] * S.shape[1]
    if total == 0:
        return
    tpb = config.block
    _bias_activation_kernel[blocks(total, tpb), tpb](S, b, A, code, slope)


def activation_backward_bias(dA, A, S, dS, db, code, slope):
    """dS = dA * sigma'(S) and db = dS.sum(axis=0) in one pass. dS may be dA.

    dA, A, S, dS: (batch, out); db: (out,), overwritten. One block per ``tile`` columns;
    its tile x tile threads stride down the rows and reduce in shared memory (float64).
    """
    n = dA.shape[1]
    if n == 0:
        return
    tile = config.tile
    _backward_bias(tile)[blocks(n, tile), (tile, tile)](dA, A, S, dS, db, code, slope)


def linear_forward(X, W, b, code, slope, S, A):
    """A = sigma(X @ W.T + b), keeping S = X @ W.T + b; one fused kernel.

    X: (batch, in), W: (out, in), b: (out,), S and A: (batch, out): C-contiguous device
    arrays of one float dtype. ``code`` is an activation code (kernels.codes), ``slope``
    the leaky_relu slope. Pass the same array for S and A when S need not be kept.
    """
    _launch_gemm(X, False, W, False, S, b, A, _BIAS_ACTIVATION, code, slope)


def linear_backward(dA, A, S, X, W, code, slope, dS, dX, dW, db, compute_dX):
    """Gradients of a layer from the gradient of its output (device arrays).

    dA: (batch, out) gradient of the loss w.r.t. A; A, S: the forward's output and
    pre-activation (S may be A); X: (batch, in) the layer input; W: (out, in). Writes
    dS (batch, out; may be dA), dW (out, in), db (out,) and, when ``compute_dX`` is
    true, dX (batch, in).
    """
    activation_backward_bias(dA, A, S, dS, db, code, slope)
    # dW[j, k] = sum_i dS[i, j] X[i, k]: opA = dS transposed, opB = X transposed.
    _launch_gemm(dS, True, X, True, dW, db, dW, _STORE, 0, 0.0)
    if compute_dX:
        # dX[i, k] = sum_j dS[i, j] W[j, k]: opA = dS, opB = W transposed.
        _launch_gemm(dS, False, W, True, dX, db, dX, _STORE, 0, 0.0)
