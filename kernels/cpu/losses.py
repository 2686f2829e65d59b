"""Losses with mean reduction, each value and gradient in one fused pass.

Definitions are PyTorch's:

    softmax_cross_entropy  CrossEntropyLoss:  mean_i [ logsumexp(Z_i) - Z_i[y_i] ]
                           Z (batch, classes), labels (batch,) int64 in [0, classes)
    mse                    MSELoss:           mean_ij (Z_ij - T_ij)^2
    bce_with_logits        BCEWithLogitsLoss: mean_ij [ max(Z,0) - Z*T + log1p(e^-|Z|) ]
                           Z, T (batch, n)

Each returns the loss as a float and writes dZ = d loss / d Z into a caller-given
array of Z's shape. All are stable for huge logits (no exp of a positive number), and
no term is a difference of two large numbers: cross-entropy's row loss is
(max_j Z_ij - Z_i[y_i]) + log(sum_j exp(Z_ij - max)), not max + log(...) - Z_i[y_i]
(with logits of 1e16 the latter rounds to 0 instead of ln 2), and binary
cross-entropy's max(z, 0) - z*t is evaluated as (1 - t) max(z, 0) - t min(z, 0), which
has no z - z*t to cancel when t is near 1 (kernels/reference.py does the same in
float64; tests/test_loss_precision.py pins the values).
Each works on row blocks: ``_<loss>_rows`` does rows [r0, r1) and returns their
summed (unscaled) loss; the public function runs one block, or one per thread when the
batch is large enough (blocks.PARALLEL_MIN_ELEMENTS).
"""
import math

import numpy as np
from llvmlite import ir
from numba import carray, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

from .. import codes
from . import elementary
from .activations import sigmoid
from .blocks import PARALLEL_MIN_ELEMENTS, block_bounds, n_blocks
from ._jit import parallel, scalar, serial


# Classes of a row whose exponentials softmax cross-entropy keeps on the stack at a
# time (8 KiB of float64); wider rows are done in chunks of this many.
_STACK_ROW = 1024


@intrinsic
def _stack_row(typingctx):
    """A pointer to _STACK_ROW float64 slots on the stack of the compiled function
    (allocated once per function, so calling this in a loop does not grow the stack):
    scratch that costs no allocation."""
    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, ir.DoubleType(),
                                   size=context.get_constant(types.intp, _STACK_ROW))
    return types.CPointer(types.float64)(), codegen


# Narrow rows (at most _NARROW classes: 10 in every yardstick network) go _GROUP rows at
# a time, each step of a row's work done for the group's rows side by side, in the same
# order within each row: the bits are those of the row-at-a-time form (_wide below;
# tests/test_loss_precision.py compares them), and the loops run
# over the group's rows in vector lanes instead of over a row's few classes (ten
# classes filled two 4-lane vectors and left two exponentials to scalar code). 32 x 10,
# one thread: 1.36 -> 1.10 us float32, 2.29 -> 0.93 us float64 (benchmarks/README.md,
# "numba's reference counts, and the update's non-finite count").
_GROUP = 8
_NARROW = 32


@intrinsic
def _stack_group(typingctx, like):
    """A pointer to (_NARROW + 1) * _GROUP slots of the type of the number ``like`` on
    the stack of the compiled function (allocated once per call site): a group of rows,
    transposed, and one more value per row."""
    if not isinstance(like, types.Float):
        return None

    def codegen(context, builder, signature, args):
        size = context.get_constant(types.intp, (_NARROW + 1) * _GROUP)
        return cgutils.alloca_once(builder, context.get_data_type(like), size=size)
    return types.CPointer(like)(like), codegen


@scalar
def _softmax_cross_entropy_narrow(Z, labels, dZ, scale, r0, r1):
    """_softmax_cross_entropy_rows for Z.shape[1] <= _NARROW, _GROUP rows at a time:
    T[j * _GROUP + r] is Z[g0 + r, j]; E holds the exponentials the same way, then the
    rows' sums. A last group of fewer rows fills its other lanes with zeros, whose
    results are never read."""
    n = Z.shape[1]
    T = carray(_stack_group(Z.dtype.type(0.0)), ((_NARROW + 1) * _GROUP,))
    E = carray(_stack_group(0.0), ((_NARROW + 1) * _GROUP,))
    at_max = _NARROW * _GROUP   # T[at_max + r]: row r's maximum, in Z's dtype
    at_sum = _NARROW * _GROUP   # E[at_sum + r]: its sum of exponentials, float64
    total = 0.0
    for g0 in range(r0, r1, _GROUP):
        rows = min(_GROUP, r1 - g0)
        for r in range(rows):
            for j in range(n):
                T[j * _GROUP + r] = Z[g0 + r, j]
        for r in range(rows, _GROUP):
            for j in range(n):
                T[j * _GROUP + r] = 0.0
        for r in range(_GROUP):
            T[at_max + r] = T[r]
        for j in range(1, n):
            for r in range(_GROUP):
                T[at_max + r] = max(T[at_max + r], T[j * _GROUP + r])
        for j in range(n):
            for r in range(_GROUP):
                E[j * _GROUP + r] = elementary.exp(T[j * _GROUP + r] - T[at_max + r])
        for r in range(_GROUP):
            E[at_sum + r] = 0.0
        for j in range(n):
            for r in range(_GROUP):
                E[at_sum + r] += E[j * _GROUP + r]
        for r in range(rows):
            i = g0 + r
            inv = scale / E[at_sum + r]
            for j in range(n):
                # rounded to dZ's dtype, then scaled, as the row-at-a-time form stores it
                dZ[i, j] = dZ.dtype.type(E[j * _GROUP + r]) * inv
            y = labels[i]
            dZ[i, y] -= scale
            total += ((np.float64(T[at_max + r]) - np.float64(Z[i, y]))
                      + math.log(E[at_sum + r]))
    return total


@scalar
def _softmax_cross_entropy_rows(Z, labels, targets, dZ, scale, r0, r1):
    if Z.shape[1] <= _NARROW:
        return _softmax_cross_entropy_narrow(Z, labels, dZ, scale, r0, r1)
    return _softmax_cross_entropy_wide(Z, labels, dZ, scale, r0, r1)


@scalar
def _softmax_cross_entropy_wide(Z, labels, dZ, scale, r0, r1):
    """Softmax cross-entropy of rows [r0, r1) one row at a time (any width): their
    summed loss; each row's dZ written."""
    total = 0.0
    for i in range(uint64(r0), uint64(r1)):
        m = Z[i, 0]
        for j in range(1, Z.shape[1]):
            m = max(m, Z[i, j])
        # The exponentials, in float64, go to a float64 row on the stack in a loop of
        # their own, _STACK_ROW classes at a time, and are summed after in the same
        # order: summed in the loop that computes them (a float reduction, kept in
        # order without "reassoc") they ran one at a time, exp and all; apart, they
        # fill vector lanes and the bits are the same. dZ takes each rounded to its
        # dtype, then the scale, as when dZ held them from the start.
        row = carray(_stack_row(), (_STACK_ROW,))
        sumexp = 0.0
        for chunk in range(0, Z.shape[1], _STACK_ROW):
            c0 = uint64(chunk)   # unsigned indices vectorise (blocks.py)
            width = uint64(min(_STACK_ROW, Z.shape[1] - chunk))
            for j in range(width):
                row[j] = elementary.exp(Z[i, c0 + j] - m)
            for j in range(width):
                sumexp += row[j]
            for j in range(width):
                dZ[i, c0 + j] = row[j]
        inv = scale / sumexp
        for j in range(Z.shape[1]):
            dZ[i, j] = dZ[i, j] * inv
        y = labels[i]
        dZ[i, y] -= scale
        # in float64: the difference of two float32 logits is then exact and finite
        total += (np.float64(m) - np.float64(Z[i, y])) + math.log(sumexp)
    return total


@scalar
def _mse_rows(Z, labels, T, dZ, scale, r0, r1):
    total = 0.0
    for i in range(uint64(r0), uint64(r1)):
        for j in range(Z.shape[1]):
            diff = Z[i, j] - T[i, j]
            dZ[i, j] = 2.0 * scale * diff
            total += diff * diff
    return total


@scalar
def _bce_with_logits_rows(Z, labels, T, dZ, scale, r0, r1):
    total = 0.0
    for i in range(uint64(r0), uint64(r1)):
        for j in range(Z.shape[1]):
            z = Z[i, j]
            t = T[i, j]
            total += ((1.0 - t) * max(z, 0.0) - t * min(z, 0.0)
                      + math.log1p(elementary.exp(-abs(z))))
            dZ[i, j] = scale * (sigmoid(z) - t)
    return total


# compiled once (not inlined), shared by the one-thread path and the parallel loop
@serial
def _rows(loss_code, Z, labels, targets, dZ, scale, r0, r1):
    if loss_code == codes.SOFTMAX_CROSS_ENTROPY:
        return _softmax_cross_entropy_rows(Z, labels, targets, dZ, scale, r0, r1)
    if loss_code == codes.MSE:
        return _mse_rows(Z, labels, targets, dZ, scale, r0, r1)
    return _bce_with_logits_rows(Z, labels, targets, dZ, scale, r0, r1)


@parallel
def _row_blocks(loss_code, Z, labels, targets, dZ, scale, nblocks):
    total = 0.0
    for blk in prange(nblocks):
        r0, r1 = block_bounds(blk, nblocks, Z.shape[0])
        total += _rows(loss_code, Z, labels, targets, dZ, scale, r0, r1)
    return total


@serial
def loss_forward_backward(loss_code, Z, labels, targets, dZ):
    """Mean loss of ``loss_code`` (kernels.codes) and its gradient dZ, in one pass.

    Z, dZ (batch, n); labels (batch,) int64 are read by softmax_cross_entropy, targets
    (batch, n) by the others; the unused one may be empty. dZ must not be Z itself
    (cross-entropy reads a row's Z[i, labels[i]] after writing its dZ).
    """
    batch, n = Z.shape
    # cross-entropy averages over rows, the elementwise losses over every element
    count = batch if loss_code == codes.SOFTMAX_CROSS_ENTROPY else batch * n
    scale = 1.0 / count
    nblocks = n_blocks(batch, batch * n, PARALLEL_MIN_ELEMENTS)
    if nblocks == 1:
        # bounds as run-time values: a constant 0 would compile a second _rows for it
        r0, r1 = block_bounds(0, 1, batch)
        total = _rows(loss_code, Z, labels, targets, dZ, scale, r0, r1)
    else:
        total = _row_blocks(loss_code, Z, labels, targets, dZ, scale, nblocks)
    return total * scale


@serial
def softmax_cross_entropy(Z, labels, dZ):
    """Mean softmax cross-entropy of logits Z (batch, C) against int labels (batch,).
    dZ must not be Z itself: the loss reads Z[i, labels[i]] after the row's dZ."""
    return loss_forward_backward(codes.SOFTMAX_CROSS_ENTROPY, Z, labels, Z[:0], dZ)


@serial
def mse(Z, T, dZ):
    """Mean squared error over every element of Z, T (batch, n)."""
    return loss_forward_backward(codes.MSE, Z, np.empty(0, np.int64), T, dZ)


@serial
def bce_with_logits(Z, T, dZ):
    """Mean binary cross-entropy of logits Z against targets T in [0, 1], (batch, n)."""
    return loss_forward_backward(codes.BCE_WITH_LOGITS, Z, np.empty(0, np.int64), T, dZ)
