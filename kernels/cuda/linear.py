"""A fully connected layer on the GPU (numba.cuda twin of kernels/cpu/linear.py).

    linear_forward   S = X @ W.T + b,  A = sigma(S)
                     X (batch, in)  W (out, in)  b (out,)  S, A (batch, out)
    linear_backward  dS = dA * sigma'(S);  dW = dS.T @ X;  db = dS.sum(0);  dX = dS @ W
                     dA, A, S, dS (batch, out)  dX (batch, in)  dW (out, in)  db (out,)

All three matrix products run through the tiled, register-blocked shared-memory
kernel of ``blas.gemm``. The forward product's epilogue adds the bias and applies
sigma before the single store of S and A; backward's sigma' and the bias-gradient
reduction share one pass (``activation_backward_bias``, a shared-memory tree reduction
per column block), whose dS then feeds the dW and dX products.
"""
import functools

import numba
from numba import cuda

from ._jit import kernel
from ._launch import blocks, config, launch
from .activations import activate, activation_derivative
from .blas import gemm, gemm_bias_activation


@functools.lru_cache(maxsize=None)
def _backward_bias(tile):
    """dS = dA * sigma' with db = column sums, for one tile; compiled on first launch."""
    T = tile

    @kernel
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


@kernel
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
    launch(_bias_activation_kernel, blocks(total, tpb), tpb, (S, b, A, code, slope))


def activation_backward_bias(dA, A, S, dS, db, code, slope):
    """dS = dA * sigma'(S) and db = dS.sum(axis=0) in one pass. dS may be dA.

    dA, A, S, dS: (batch, out); db: (out,), overwritten. One block per ``tile`` columns;
    its tile x tile threads stride down the rows and reduce in shared memory (float64).
    """
    n = dA.shape[1]
    if n == 0:
        return
    tile = config.tile
    launch(_backward_bias(tile), blocks(n, tile), (tile, tile), (dA, A, S, dS, db, code, slope))


def linear_forward(X, W, b, code, slope, S, A):
    """A = sigma(X @ W.T + b), keeping S = X @ W.T + b; one fused kernel.

    X: (batch, in), W: (out, in), b: (out,), S and A: (batch, out): C-contiguous device
    arrays of one float dtype. ``code`` is an activation code (kernels.codes), ``slope``
    the leaky_relu slope. Pass the same array for S and A when S need not be kept.
    """
    gemm_bias_activation(False, True, X, W, b, S, A, code, slope)


def linear_backward(dA, A, S, X, W, code, slope, dS, dX, dW, db, compute_dX):
    """Gradients of a layer from the gradient of its output (device arrays).

    dA: (batch, out) gradient of the loss w.r.t. A; A, S: the forward's output and
    pre-activation (S may be A); X: (batch, in) the layer input; W: (out, in). Writes
    dS (batch, out; may be dA), dW (out, in), db (out,) and, when ``compute_dX`` is
    true, dX (batch, in).
    """
    activation_backward_bias(dA, A, S, dS, db, code, slope)
    gemm(True, False, 1.0, dS, X, 0.0, dW)          # dW = dS.T @ X
    if compute_dX:
        gemm(False, False, 1.0, dS, W, 0.0, dX)     # dX = dS @ W
