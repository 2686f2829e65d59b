"""A fully connected layer, forward and backward, with bias and activation fused.

    linear_forward   S = X @ W.T + b,  A = sigma(S)
                     X (batch, in)  W (out, in)  b (out,)  S, A (batch, out)
    linear_backward  dS = dA * sigma'(S);  dW = dS.T @ X;  db = dS.sum(0);  dX = dS @ W
                     dA, A, S, dS (batch, out)  dX (batch, in)  dW (out, in)  db (out,)

The three matrix products go to BLAS through numba's ``np.dot`` (scipy's OpenBLAS);
everything elementwise rides in one pass over the product's output: bias and sigma in
forward, sigma' and the bias-gradient reduction in backward.
"""
import numpy as np
from numba import prange

from .activations import activate, activation_derivative
from ._jit import parallel, serial

# Columns handled by one task in the fused sigma'/db pass: each task owns its columns'
# db entries outright (no race, no atomics) and reads rows in contiguous 64-wide runs.
_DB_COLUMN_BLOCK = 64


@parallel
def bias_activation(S, b, A, code, slope):
    """Epilogue of the forward product, in place: S += b, then A = sigma(S).

    S, A: (batch, out); b: (out,). A may be the same array as S.
    """
    batch, n = S.shape
    for i in prange(batch):
        for j in range(n):
            s = S[i, j] + b[j]
            S[i, j] = s
            A[i, j] = activate(s, code, slope)


@parallel
def activation_backward_bias(dA, A, S, dS, db, code, slope):
    """dS = dA * sigma'(S) and db = dS.sum(axis=0) in one pass. dS may be dA.

    dA, A, S, dS: (batch, out); db: (out,), overwritten.
    """
    batch, n = dA.shape
    nblocks = (n + _DB_COLUMN_BLOCK - 1) // _DB_COLUMN_BLOCK
    for blk in prange(nblocks):
        j0 = blk * _DB_COLUMN_BLOCK
        j1 = min(j0 + _DB_COLUMN_BLOCK, n)
        for j in range(j0, j1):
            db[j] = 0.0
        for i in range(batch):
            for j in range(j0, j1):
                d = dA[i, j] * activation_derivative(A[i, j], S[i, j], code, slope)
                dS[i, j] = d
                db[j] += d


@serial
def linear_forward(X, W, b, code, slope, S, A):
    """A = sigma(X @ W.T + b), keeping S = X @ W.T + b.

    X: (batch, in), W: (out, in), b: (out,), S and A: (batch, out), one float dtype,
    all C-contiguous. ``code`` is an activation code (kernels.codes), ``slope`` the
    leaky_relu slope. Pass the same array for S and A when S need not be kept.
    """
    np.dot(X, W.T, S)
    bias_activation(S, b, A, code, slope)


@serial
def linear_backward(dA, A, S, X, W, code, slope, dS, dX, dW, db, compute_dX):
    """Gradients of a layer from the gradient of its output.

    dA: (batch, out) gradient of the loss w.r.t. A; A, S: the forward's output and
    pre-activation (S may be A, see activations.py); X: (batch, in) the layer input;
    W: (out, in). Writes dS (batch, out; may be dA), dW (out, in), db (out,) and, when
    ``compute_dX`` is true, dX (batch, in); the first layer skips dX.
    """
    activation_backward_bias(dA, A, S, dS, db, code, slope)
    np.dot(dS.T, X, dW)
    if compute_dX:
        np.dot(dS, W, dX)
