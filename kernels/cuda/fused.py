"""A narrow network's whole forward, loss and backward in one kernel (the fused step).

The general step (network.py) launches a few kernels per layer; for a narrow network
at a small batch each of them is a few microseconds of launch latency and a GPU that
is mostly idle. Here one block takes ``ROWS`` rows of the batch through every layer and
back:

- forward: layer l's outputs for the block's rows, a group of GROUP threads (a warp)
  per output unit j, its lanes over k, for all ROWS rows at once (each weight read
  serves ROWS rows; a warp reads consecutive weights of W's row j and consecutive
  inputs). The inputs come from shared memory (the previous layer's outputs; the
  first layer reads X). The lanes' sums meet in shared memory (``red``), one thread
  per (unit, row) adds them, the bias and sigma. S and A of every layer go to a
  workspace in global memory (WS, WA) for the backward pass, A also to shared memory.
  (The first version gave each thread a unit and all of k: 32 rows of W per warp
  load; on an H200 it was 2-5x slower than the general step, benchmarks/README.md.);
- the loss of the block's rows (the losses' own device functions, losses.py) into
  dZ, its partial sum into partials[block] (the launch plan's record step adds them);
- backward, layer by layer: dS = dA * sigma'(S) in shared memory; this block's share of
  db and dW (sums over its rows only) into its row of ``gpart`` (blocks x parameters);
  dA of the layer below = dS @ W, one thread per input unit (coalesced reads of W).

A second kernel (``_reduce_partial_grads``) adds the blocks' rows of gpart, in order of
the block (deterministic: no atomics), into ``grads``; the optimizer's update launches
follow as in the general step: four launches a step (with the record) instead of
about 4L + 2.

Which networks: two ROWS x H tiles (H the widest output, rounded up to a power of two),
forward's lane sums and the loss's per-thread sums fit the 48 KiB of static shared
memory a block may use: on a GPU H <= 512 in float32 and 128 in float64; the input
layer may be wider (read from global memory). ``eligible`` decides; the launch plan
(plan.py) falls back to the general step otherwise. Work per block grows with the
widths while the blocks number batch / ROWS, so the fused step is for narrow networks.
Off by default (``_launch.config.fused``) until a GPU shows it ahead of the general
step.
"""
import functools
import os

import numba
import numpy as np
from numba import cuda

from .. import codes
from ._jit import kernel
from ._launch import SIMULATOR, blocks, config, launch
from .activations import activate, activation_derivative
from .losses import _elementwise_term, _softmax_row
from .reduce import block_sum

def _rows():
    """Batch rows per block: FASTBP_CUDA_FUSED_ROWS (1-64; benchmarks try others), else
    8 on a GPU (a weight read serves 8 rows; batch 64 gives 8 blocks) and 2 in the
    simulator (so that its small batches span several blocks)."""
    value = os.environ.get("FASTBP_CUDA_FUSED_ROWS")
    if value is None:
        return 2 if SIMULATOR else 8
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise ValueError(f"FASTBP_CUDA_FUSED_ROWS: expected an integer from 1 to 64, got "
                         f"{value!r}")
    return int(value)


ROWS = _rows()                         # batch rows per block
GROUP = 4 if SIMULATOR else 32         # threads per output unit in forward (a warp)
SHARED_BYTES = 48 * 1024               # static shared memory a block may use
_CE = codes.SOFTMAX_CROSS_ENTROPY


def tile_width(sizes):
    """H: the widest layer output of ``sizes`` rounded up to a power of two (>= 4)."""
    widest = int(max(sizes[1:]))
    return max(4, 1 << (widest - 1).bit_length())


def eligible(sizes, dtype, batch, partials_length):
    """Whether the fused step can run this network at this batch size: two ROWS x H
    tiles of ``dtype``, forward's lane sums and the loss's float64 per-thread sums in
    shared memory, and one loss partial sum per block within the plan's
    ``partials``."""
    if not config.fused or batch < 1:
        return False
    item = np.dtype(dtype).itemsize
    reduction = (config.block // GROUP) * ROWS * (GROUP + 1) * item
    shared = 2 * ROWS * tile_width(sizes) * item + reduction + 8 * config.block
    return shared <= SHARED_BYTES and blocks(batch, ROWS) <= partials_length


@cuda.jit(device=True)
def _layer(l, sizes, w_off, b_off, act_codes, slopes):
    """Layer l's (inputs, outputs, W's offset, b's offset, activation code, slope)."""
    return sizes[l], sizes[l + 1], w_off[l], b_off[l], act_codes[l], slopes[l]


@functools.lru_cache(maxsize=None)
def _fused_kernel(R, H, NT, dtype):
    """The fused step for R rows per block, tiles of width H, NT threads, ``dtype``
    (the shared tiles' type)."""
    nbtype = numba.from_dtype(np.dtype(dtype))
    ZERO = np.dtype(dtype).type(0)   # a typed zero (0 * x would turn inf into NaN)
    TILE = R * H                     # a constant: shared arrays need one
    G = GROUP                        # threads per output unit in forward
    GP = G + 1                       # padded: a group's stores hit distinct banks
    NG = NT // G                     # output units at a time
    RED = NG * R * GP

    @kernel
    def fused_step(params, sizes, w_off, b_off, act_codes, slopes, loss_code, X, labels,
                   T, WA, WS, out, dZ, gpart, partials):
        tid = cuda.threadIdx.x
        blk = cuda.blockIdx.x
        r0 = blk * R
        batch = X.shape[0]
        rows = min(R, batch - r0)
        n_layers = act_codes.shape[0]
        P = cuda.shared.array(TILE, nbtype)
        Q = cuda.shared.array(TILE, nbtype)
        lsum = cuda.shared.array(NT, numba.float64)
        red = cuda.shared.array(RED, nbtype)
        acc = cuda.local.array(R, nbtype)
        group = tid // G
        lane = tid - group * G
        for e in range(tid, TILE, NT):   # rows past the batch stay zero throughout
            P[e] = 0
            Q[e] = 0
        cuda.syncthreads()
        # ---- forward: cur holds the layer's input rows (unused for l = 0), nxt its output
        cur = P
        nxt = Q
        off = 0                           # layer l's offset in WA and WS
        for l in range(n_layers):
            n_in, n_out, w0, b0, code, slope = _layer(l, sizes, w_off, b_off, act_codes,
                                                      slopes)
            # a group of G threads per output unit j, its lanes over k (coalesced reads
            # of W's row j and of the inputs); NG units at a time, a uniform loop so
            # that the block can synchronise: the lanes' sums meet in ``red``, then
            # one thread per (unit, row) adds them and applies the bias and sigma
            for j0 in range(0, n_out, NG):
                j = j0 + group
                for r in range(R):
                    acc[r] = 0
                if j < n_out:
                    wj = w0 + j * n_in
                    if l == 0:
                        for k in range(lane, n_in, G):
                            w = params[wj + k]
                            for r in range(R):
                                if r < rows:
                                    acc[r] += w * X[r0 + r, k]
                    else:
                        for k in range(lane, n_in, G):
                            w = params[wj + k]
                            for r in range(R):
                                acc[r] += w * cur[r * H + k]
                for r in range(R):
                    red[(group * R + r) * GP + lane] = acc[r]
                cuda.syncthreads()
                if tid < NG * R:
                    jj = j0 + tid // R
                    r = tid % R
                    if jj < n_out and r < rows:
                        s = red[tid * GP]
                        for e in range(1, G):
                            s += red[tid * GP + e]
                        s += params[b0 + jj]
                        a = activate(s, code, slope)
                        at = off + (r0 + r) * n_out + jj
                        WS[at] = s
                        WA[at] = a
                        nxt[r * H + jj] = a
                        if l == n_layers - 1:
                            out[r0 + r, jj] = a
                cuda.syncthreads()
            cuda.syncthreads()
            cur, nxt = nxt, cur
            off += batch * n_out
        # ---- the loss of this block's rows: dZ, and the partial sum of the loss
        n_last = sizes[n_layers]
        total = 0.0
        if loss_code == _CE:
            scale = 1.0 / batch
            for r in range(tid, rows, NT):
                total += _softmax_row(out, labels, dZ, r0 + r, scale)
        else:
            scale = 1.0 / (batch * n_last)
            for idx in range(tid, rows * n_last, NT):
                r = idx // n_last
                total += _elementwise_term(loss_code, out, T, dZ, r0 + r, idx - r * n_last,
                                           scale)
        lsum[tid] = total
        block_sum(lsum, tid)              # synchronises: dZ is written
        if tid == 0:
            partials[blk] = lsum[0] * scale
        for idx in range(tid, rows * n_last, NT):
            r = idx // n_last
            j = idx - r * n_last
            cur[r * H + j] = dZ[r0 + r, j]
        cuda.syncthreads()
        # ---- backward: cur holds dA of layer l's output rows, nxt receives dA below
        for l in range(n_layers - 1, -1, -1):
            n_in, n_out, w0, b0, code, slope = _layer(l, sizes, w_off, b_off, act_codes,
                                                      slopes)
            off -= batch * n_out
            below = off - batch * n_in    # layer l-1's offset (its A is layer l's input)
            for idx in range(tid, rows * n_out, NT):
                r = idx // n_out
                j = idx - r * n_out
                at = off + (r0 + r) * n_out + j
                cur[r * H + j] *= activation_derivative(WA[at], WS[at], code, slope)
            cuda.syncthreads()
            for j in range(tid, n_out, NT):
                t = ZERO
                for r in range(rows):
                    t += cur[r * H + j]
                gpart[blk, b0 + j] = t
            for idx in range(tid, n_out * n_in, NT):
                j = idx // n_in
                k = idx - j * n_in
                t = ZERO
                if l == 0:
                    for r in range(rows):
                        t += cur[r * H + j] * X[r0 + r, k]
                else:
                    for r in range(rows):
                        t += cur[r * H + j] * WA[below + (r0 + r) * n_in + k]
                gpart[blk, w0 + idx] = t
            if l > 0:
                for k in range(tid, n_in, NT):
                    for r in range(R):
                        acc[r] = 0
                    for j in range(n_out):
                        w = params[w0 + j * n_in + k]
                        for r in range(R):
                            acc[r] += cur[r * H + j] * w
                    for r in range(R):
                        if r < rows:
                            nxt[r * H + k] = acc[r]
                cuda.syncthreads()
                cur, nxt = nxt, cur

    return fused_step


@kernel
def _reduce_partial_grads(gpart, nblocks, grads):
    """grads[p] = sum over b < nblocks of gpart[b, p], in order of b."""
    for p in range(cuda.grid(1), grads.shape[0], cuda.gridsize(1)):
        t = gpart[0, p]
        for b in range(1, nblocks):
            t += gpart[b, p]
        grads[p] = t


class FusedBuffers:
    """What the fused step keeps per (network, batch): the layout as device arrays, the
    workspace WA and WS, the output and its loss gradient, and the blocks' partial
    gradients."""

    def __init__(self, sizes, w_off, b_off, act_codes, slopes, batch, n_params, dtype):
        dtype = np.dtype(dtype)
        self.layout = tuple(cuda.to_device(np.ascontiguousarray(a, t)) for a, t in
                            ((sizes, np.int64), (w_off, np.int64), (b_off, np.int64),
                             (act_codes, np.int64), (slopes, np.float64)))
        width = int(np.sum(sizes[1:]))
        self.WA = cuda.device_array(batch * width, dtype)
        self.WS = cuda.device_array(batch * width, dtype)
        self.out = cuda.device_array((batch, int(sizes[-1])), dtype)
        self.dZ = cuda.device_array((batch, int(sizes[-1])), dtype)
        self.nblocks = blocks(batch, ROWS)
        self.gpart = cuda.device_array((self.nblocks, n_params), dtype)


def launch_step(buffers, params, grads, sizes, loss_code, X, labels, targets, partials):
    """Launch the fused forward, loss and backward for batch X (or record them, under
    ``_launch.recording``), then the reduction of the partial gradients into grads.
    Returns the number of loss partial sums written to ``partials``."""
    H = tile_width(sizes)
    NT = config.block
    dtype = np.dtype(params.dtype).name
    b = buffers
    launch(_fused_kernel(ROWS, H, NT, dtype), b.nblocks, NT,
           (params,) + b.layout[:5] + (int(loss_code), X, labels, targets, b.WA, b.WS,
                                       b.out, b.dZ, b.gpart, partials))
    n = grads.shape[0]
    launch(_reduce_partial_grads, min(blocks(n, NT), config.max_reduce_blocks), NT,
           (b.gpart, b.nblocks, grads))
    return b.nblocks
