"""A fully connected layer, forward and backward, with bias and activation fused.

    linear_forward   S = X @ W.T + b,  A = sigma(S)
                     X (batch, in)  W (out, in)  b (out,)  S, A (batch, out)
    linear_backward  dS = dA * sigma'(S);  dW = dS.T @ X;  db = dS.sum(0);  dX = dS @ W
                     dA, A, S, dS (batch, out)  dX (batch, in)  dW (out, in)  db (out,)

How the work is split. One thread pool does everything: numba's threads each take a
block and call single-threaded BLAS (kernels/cpu/blas.py) on it, then run the
elementwise epilogue on the block while it is still in cache.

- forward: row blocks of the batch; each computes S[rows] = X[rows] W^T, then adds b and
  applies sigma to those rows.
- backward, pass 1: column blocks of the layer's outputs; each computes dS[:, cols]
  (sigma' fused), reduces db[cols] from it, then dW[cols] = dS[:, cols]^T X. A block
  owns its rows of dW and entries of db outright: no races, no atomics, no partial
  copies of dW.
- backward, pass 2 (skipped for the first layer): row blocks; dX[rows] = dS[rows] W.

A layer whose product is below ``blocks.PARALLEL_MIN_FLOPS`` runs as one block on the calling
thread: starting the pool costs more than such a layer's whole product.
"""
from numba import prange

from .activations import activate, activation_derivative
from .blas import gemm
from .blocks import PARALLEL_MIN_FLOPS, block_bounds, n_blocks
from ._jit import parallel, scalar, serial


@scalar
def _bias_activation_rows(S, b, A, code, slope, r0, r1):
    for i in range(r0, r1):
        for j in range(S.shape[1]):
            s = S[i, j] + b[j]
            S[i, j] = s
            A[i, j] = activate(s, code, slope)


@scalar
def _sigma_prime_bias_cols(dA, A, S, dS, db, code, slope, j0, j1):
    for j in range(j0, j1):
        db[j] = 0.0
    for i in range(dA.shape[0]):
        for j in range(j0, j1):
            d = dA[i, j] * activation_derivative(A[i, j], S[i, j], code, slope)
            dS[i, j] = d
            db[j] += d


@parallel
def bias_activation(S, b, A, code, slope):
    """Epilogue of the forward product, in place: S += b, then A = sigma(S).

    S, A: (batch, out); b: (out,). A may be the same array as S.
    """
    batch = S.shape[0]
    for blk in prange(batch):
        _bias_activation_rows(S, b, A, code, slope, blk, blk + 1)


@parallel
def activation_backward_bias(dA, A, S, dS, db, code, slope):
    """dS = dA * sigma'(S) and db = dS.sum(axis=0) in one pass. dS may be dA.

    dA, A, S, dS: (batch, out); db: (out,), overwritten.
    """
    n = dA.shape[1]
    nblocks = n_blocks(n, n, 1)
    for blk in prange(nblocks):
        j0, j1 = block_bounds(blk, nblocks, n)
        _sigma_prime_bias_cols(dA, A, S, dS, db, code, slope, j0, j1)


@scalar
def _forward_rows(X, W, b, code, slope, S, A, r0, r1):
    gemm(False, True, 1.0, X[r0:r1], W, 0.0, S[r0:r1])
    _bias_activation_rows(S, b, A, code, slope, r0, r1)


@parallel
def _forward_row_blocks(X, W, b, code, slope, S, A, nblocks):
    for blk in prange(nblocks):
        r0, r1 = block_bounds(blk, nblocks, X.shape[0])
        _forward_rows(X, W, b, code, slope, S, A, r0, r1)


@serial
def linear_forward(X, W, b, code, slope, S, A):
    """A = sigma(X @ W.T + b), keeping S = X @ W.T + b.

    X: (batch, in), W: (out, in), b: (out,), S and A: (batch, out), one float dtype,
    all C-contiguous. ``code`` is an activation code (kernels.codes), ``slope`` the
    leaky_relu slope. Pass the same array for S and A when S need not be kept.
    """
    batch, n_in = X.shape
    nblocks = n_blocks(batch, 2 * batch * n_in * W.shape[0], PARALLEL_MIN_FLOPS)
    if nblocks == 1:
        _forward_rows(X, W, b, code, slope, S, A, 0, batch)
    else:
        _forward_row_blocks(X, W, b, code, slope, S, A, nblocks)


@scalar
def _weight_grad_cols(dA, A, S, X, code, slope, dS, dW, db, j0, j1):
    _sigma_prime_bias_cols(dA, A, S, dS, db, code, slope, j0, j1)
    gemm(True, False, 1.0, dS[:, j0:j1], X, 0.0, dW[j0:j1])


@parallel
def _weight_grad_col_blocks(dA, A, S, X, code, slope, dS, dW, db, nblocks):
    for blk in prange(nblocks):
        j0, j1 = block_bounds(blk, nblocks, dA.shape[1])
        _weight_grad_cols(dA, A, S, X, code, slope, dS, dW, db, j0, j1)


@parallel
def _input_grad_row_blocks(dS, W, dX, nblocks):
    for blk in prange(nblocks):
        r0, r1 = block_bounds(blk, nblocks, dS.shape[0])
        gemm(False, False, 1.0, dS[r0:r1], W, 0.0, dX[r0:r1])


@serial
def linear_backward(dA, A, S, X, W, code, slope, dS, dX, dW, db, compute_dX):
    """Gradients of a layer from the gradient of its output.

    dA: (batch, out) gradient of the loss w.r.t. A; A, S: the forward's output and
    pre-activation (S may be A, see activations.py); X: (batch, in) the layer input;
    W: (out, in). Writes dS (batch, out; may be dA), dW (out, in), db (out,) and, when
    ``compute_dX`` is true, dX (batch, in); the first layer skips dX.
    """
    batch, n_out = dA.shape
    flops = 2 * batch * n_out * X.shape[1]
    nblocks = n_blocks(n_out, flops, PARALLEL_MIN_FLOPS)
    if nblocks == 1:
        _weight_grad_cols(dA, A, S, X, code, slope, dS, dW, db, 0, n_out)
    else:
        _weight_grad_col_blocks(dA, A, S, X, code, slope, dS, dW, db, nblocks)
    if compute_dX:
        nblocks = n_blocks(batch, flops, PARALLEL_MIN_FLOPS)
        if nblocks == 1:
            gemm(False, False, 1.0, dS, W, 0.0, dX)
        else:
            _input_grad_row_blocks(dS, W, dX, nblocks)
