"""Losses with mean reduction on the GPU (numba.cuda twin of kernels/cpu/losses.py).

    softmax_cross_entropy  CrossEntropyLoss:  mean_i [ logsumexp(Z_i) - Z_i[y_i] ]
                           Z (batch, classes), labels (batch,) int64 in [0, classes)
    mse                    MSELoss:           mean_ij (Z_ij - T_ij)^2
    bce_with_logits        BCEWithLogitsLoss: mean_ij [ max(Z,0) - Z*T + log1p(e^-|Z|) ]
                           Z, T (batch, n)

Each writes dZ = d loss / d Z (device array of Z's shape) and returns the loss as a
Python float, with the CPU twins' signatures. One kernel does both: threads stride over
rows (cross-entropy) or elements (the others), and each block reduces its threads' loss
terms in shared memory (float64) to one partial sum, written to the calling thread's
scratch (reduce.scratch); the host adds the few partials (one small copy, the only
transfer). ``launch_loss`` launches the kernel alone into a caller-given float64
``partials`` (at least ``config.max_reduce_blocks`` entries) and leaves them on the
device, for the launch plan (plan.py), which sums them there.
"""
import functools
import math

import numba
from numba import cuda

from .. import codes
from ._jit import kernel
from ._launch import blocks, config, launch
from .activations import sigmoid
from .reduce import block_sum, scratch

_SOFTMAX_CROSS_ENTROPY = codes.SOFTMAX_CROSS_ENTROPY
_MSE = codes.MSE


@cuda.jit(device=True)
def _softmax_row(Z, labels, dZ, i, scale):
    """Row i of softmax cross-entropy: writes dZ[i, :], returns the row's loss term."""
    classes = Z.shape[1]
    y = labels[i]
    if y < 0 or y >= classes:   # only labels that live on the device can be (the launch
        for j in range(classes):   # plan counts them): no out-of-bounds read, a NaN loss
            dZ[i, j] = math.nan
        return math.nan
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
        g = dZ[i, j] * inv * scale
        if j == y:
            g = g - scale
        dZ[i, j] = g
    # (max - z_y) first: max + log(sumexp) - z_y loses log(sumexp) for huge logits
    # in float64, where the difference of two float32 logits is exact and finite
    return (numba.float64(m) - numba.float64(Z[i, y])) + math.log(sumexp)


@cuda.jit(device=True)
def _elementwise_term(loss_code, Z, T, dZ, i, j, scale):
    """Element (i, j) of mse or bce_with_logits: writes dZ[i, j], returns the loss term."""
    z = Z[i, j]
    t = T[i, j]
    if loss_code == _MSE:
        diff = z - t
        dZ[i, j] = 2.0 * scale * diff
        return diff * diff
    dZ[i, j] = scale * (sigmoid(z) - t)
    # max(z, 0) - z*t without the cancellation of z - z*t for t near 1
    return (1.0 - t) * max(z, 0.0) - t * min(z, 0.0) + math.log1p(math.exp(-abs(z)))


@functools.lru_cache(maxsize=None)
def _loss_kernel(block):
    """The fused loss kernel for ``block`` threads per block (a power of two)."""
    NT = block

    @kernel
    def loss_kernel(loss_code, Z, labels, T, dZ, partials):
        batch = Z.shape[0]
        n = Z.shape[1]
        tid = cuda.threadIdx.x
        stride = cuda.gridDim.x * NT
        total = 0.0
        if loss_code == _SOFTMAX_CROSS_ENTROPY:
            scale = 1.0 / batch
            for i in range(cuda.grid(1), batch, stride):
                total += _softmax_row(Z, labels, dZ, i, scale)
        else:
            scale = 1.0 / (batch * n)
            for idx in range(cuda.grid(1), batch * n, stride):
                i = idx // n
                total += _elementwise_term(loss_code, Z, T, dZ, i, idx - i * n, scale)
        part = cuda.shared.array(NT, numba.float64)
        part[tid] = total
        block_sum(part, tid)
        if tid == 0:
            partials[cuda.blockIdx.x] = part[0] * scale

    return loss_kernel


def loss_blocks(loss_code, Z, partials):
    """How many blocks (and partial sums in ``partials``) the loss kernel uses for Z."""
    batch, n = Z.shape
    items = batch if loss_code == _SOFTMAX_CROSS_ENTROPY else batch * n
    return min(blocks(items, config.block), config.max_reduce_blocks, partials.shape[0])


def launch_loss(loss_code, Z, labels, T, dZ, partials):
    """Launch the loss kernel only: dZ written, the loss left in partials[:nblocks] on
    the device (their sum). Returns nblocks. labels must be an int64 device array
    (empty for the target losses), partials float64 (see the module docstring)."""
    nblocks = loss_blocks(loss_code, Z, partials)
    tpb = config.block
    launch(_loss_kernel(tpb), nblocks, tpb, (loss_code, Z, labels, T, dZ, partials))
    return nblocks


def _run(loss_code, Z, labels, T, dZ):
    partials = scratch("partials")
    nblocks = launch_loss(loss_code, Z, labels, T, dZ, partials)
    return float(partials[:nblocks].copy_to_host().sum())


def softmax_cross_entropy(Z, labels, dZ):
    """Mean softmax cross-entropy of logits Z (batch, C) against int labels (batch,)."""
    return _run(_SOFTMAX_CROSS_ENTROPY, Z, labels, Z, dZ)


def mse(Z, T, dZ):
    """Mean squared error over every element of Z, T (batch, n)."""
    return _run(codes.MSE, Z, labels_unused(Z), T, dZ)


def bce_with_logits(Z, T, dZ):
    """Mean binary cross-entropy of logits Z against targets T in [0, 1], (batch, n)."""
    return _run(codes.BCE_WITH_LOGITS, Z, labels_unused(Z), T, dZ)


def labels_unused(Z):
    """A stand-in labels argument for the losses that read targets: never indexed, but
    int64 like real labels, because the kernel compiles its softmax branch too and a
    float array there fails to type on a GPU (the simulator does not type at all).
    Made once per thread and GPU (reduce.scratch; it was one allocation per call)."""
    return scratch("no_labels")


def loss_forward_backward(loss_code, Z, labels, targets, dZ):
    """Dispatch on ``loss_code`` (kernels.codes): labels (batch,) int64 are read by
    softmax_cross_entropy, targets (batch, n) by the others; the unused one may be empty.
    """
    if loss_code == _SOFTMAX_CROSS_ENTROPY:
        return softmax_cross_entropy(Z, labels, dZ)
    if loss_code == _MSE:
        return mse(Z, targets, dZ)
    return bce_with_logits(Z, targets, dZ)
