"""Row gathers on the device: a data set that lives on the GPU is shuffled and split
there, never copied to the host.

    take_rows(src, order, dst)
        dst[i] = src[order[i]] for i in range(len(order)); src, dst (n, k) or (n,)
        device arrays of one dtype, C-contiguous; order (m,) int64 on the device with
        every entry in [0, n); dst has m rows. What ``np.take(src, order, axis=0,
        out=dst)`` does on the host (fastbp.training's shuffle of host data), so host
        and device data see the same rows in the same order.

No CPU twin (like plan.py): on the host the shuffle is numpy's ``take``. The indices are
not range-checked on the device: the host draws them (a permutation or a sorted subset
of range(n)) and checks their count and bounds before the launch.
"""
from numba import cuda

from ._jit import kernel
from ._launch import blocks, config, launch


@kernel
def _take_rows_2d(src, order, dst):
    start = cuda.grid(1)
    stride = cuda.gridDim.x * cuda.blockDim.x
    k = dst.shape[1]
    for idx in range(start, dst.shape[0] * k, stride):
        i = idx // k
        j = idx - i * k
        dst[i, j] = src[order[i], j]


@kernel
def _take_rows_1d(src, order, dst):
    start = cuda.grid(1)
    stride = cuda.gridDim.x * cuda.blockDim.x
    for i in range(start, dst.shape[0], stride):
        dst[i] = src[order[i]]


def take_rows(src, order, dst):
    """dst[i] = src[order[i]] on the device (module docstring). Raises ValueError when
    the shapes disagree; launches nothing for empty arrays."""
    if src.ndim != dst.ndim or src.ndim not in (1, 2) or dst.shape[0] != order.shape[0] \
            or src.shape[1:] != dst.shape[1:]:
        raise ValueError(f"take_rows: expected src (n[, k]), order (m,) and dst (m[, k]), "
                         f"got {src.shape}, {order.shape} and {dst.shape}")
    size = dst.shape[0] * (dst.shape[1] if dst.ndim == 2 else 1)
    if size == 0:
        return
    block = config.block
    grid = min(blocks(size, block), 4 * config.max_reduce_blocks)
    kernel = _take_rows_2d if dst.ndim == 2 else _take_rows_1d
    launch(kernel, grid, block, (src, order, dst))
