"""Host buffers that start on a 64-byte boundary: fastbp's own parameters, gradients,
optimizer state and activation workspaces.

    empty(shape, dtype) -> an uninitialised C-contiguous numpy array whose first element
                           is at an address divisible by ALIGNMENT
    zeros(shape, dtype) -> the same, zero-filled

numpy aligns its allocations to 16 bytes only, so from one process to the next a
network's buffers start 0, 16, 32 or 48 bytes past a cache line, at random. An
AVX-512 vector is a whole 64-byte cache line: OpenBLAS's kernels and numba's loops then
load and store across two lines wherever the buffer is off one. Measured on this
project's 2-vCPU Intel Xeon (family 6 model 167; benchmarks/README.md, "Buffers on
64-byte boundaries"), one process, two threads, float32, every buffer moved to each
offset in turn: ``train_step`` took 20.8 us with all of them on a boundary against
23.4-23.7 us off it (tiny 64-64-10), 169 against 208-216 us (mnist 784-128-10), and
1.86 against 2.20-2.26 ms (deep 256 x 10-10). The layer views inside the flat buffers
(NetworkLayout's offsets) then fall on boundaries where the widths before the output
layer are multiples of 16 float32 or 8 float64 values (64, 784, 256, 512: every
yardstick network; their 10 outputs come last).

The arrays are views into a slightly larger byte buffer (their ``base``): numpy arrays
like any other, writeable, C-contiguous, of exactly the shape asked for.
"""
import numpy as np

ALIGNMENT = 64


def empty(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` whose data start at
    an address divisible by ALIGNMENT bytes (one of no elements has nothing to align
    and is numpy's own)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0 or min(np.atleast_1d(shape), default=0) < 0:
        # numpy's own: an empty one with numpy's strides (a reshaped empty view has
        # zeros), and numpy's ValueError for a negative dimension
        return np.empty(shape, dtype)
    nbytes = count * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def zeros(shape, dtype):
    """``empty`` filled with zeros."""
    out = empty(shape, dtype)
    out[...] = 0
    return out
