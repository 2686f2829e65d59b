"""Losses with mean reduction, each value and gradient in one fused pass.

Definitions are PyTorch's:

    softmax_cross_entropy  CrossEntropyLoss:  mean_i [ logsumexp(Z_i) - Z_i[y_i] ]
                           Z (batch, classes), labels (batch,) int64 in [0, classes)
    mse                    MSELoss:           mean_ij (Z_ij - T_ij)^2
    bce_with_logits        BCEWithLogitsLoss: mean_ij [ max(Z,0) - Z*T + log1p(e^-|Z|) ]
                           Z, T (batch, n)

Each returns the loss as a float and writes dZ = d loss / d Z into a caller-given
array of Z's shape. All are stable for huge logits (no exp of a positive number).
"""
import math

from numba import prange

from .. import codes
from .activations import sigmoid
from ._jit import parallel, serial


@parallel
def softmax_cross_entropy(Z, labels, dZ):
    """Mean softmax cross-entropy of logits Z (batch, C) against int labels (batch,)."""
    batch, classes = Z.shape
    scale = 1.0 / batch
    total = 0.0
    for i in prange(batch):
        m = Z[i, 0]
        for j in range(1, classes):
            m = max(m, Z[i, j])
        sumexp = 0.0
        for j in range(classes):
            e = math.exp(Z[i, j] - m)
            dZ[i, j] = e
            sumexp += e
        inv = 1.0 / sumexp
        for j in range(classes):
            dZ[i, j] = dZ[i, j] * inv * scale
        y = labels[i]
        dZ[i, y] -= scale
        total += m + math.log(sumexp) - Z[i, y]
    return total * scale


@parallel
def mse(Z, T, dZ):
    """Mean squared error over every element of Z, T (batch, n)."""
    batch, n = Z.shape
    scale = 1.0 / (batch * n)
    total = 0.0
    for i in prange(batch):
        for j in range(n):
            diff = Z[i, j] - T[i, j]
            dZ[i, j] = 2.0 * scale * diff
            total += diff * diff
    return total * scale


@parallel
def bce_with_logits(Z, T, dZ):
    """Mean binary cross-entropy of logits Z against targets T in [0, 1], (batch, n)."""
    batch, n = Z.shape
    scale = 1.0 / (batch * n)
    total = 0.0
    for i in prange(batch):
        for j in range(n):
            z = Z[i, j]
            t = T[i, j]
            total += max(z, 0.0) - z * t + math.log1p(math.exp(-abs(z)))
            dZ[i, j] = scale * (sigmoid(z) - t)
    return total * scale


@serial
def loss_forward_backward(loss_code, Z, labels, targets, dZ):
    """Dispatch on ``loss_code`` (kernels.codes): labels (batch,) int64 are read by
    softmax_cross_entropy, targets (batch, n) by the others; the unused one may be empty.
    """
    if loss_code == codes.SOFTMAX_CROSS_ENTROPY:
        return softmax_cross_entropy(Z, labels, dZ)
    if loss_code == codes.MSE:
        return mse(Z, targets, dZ)
    return bce_with_logits(Z, targets, dZ)
