"""Launch geometry shared by every CUDA kernel, set in one place.

``config.tile`` is the side of a square thread block (tile x tile threads) and of the
shared-memory tiles of the matrix products; ``config.work`` is how many outputs per
dimension one thread of a matrix product computes (register blocking), so one block
covers a (tile*work) x (tile*work) tile of the output. 1-D kernels use tile*tile threads.

On a GPU the defaults are tile 16, work 4 (a 64x64 output tile per 256-thread block).
Under numba's CUDA simulator every thread is an OS thread, so the defaults shrink to
tile 4, work 2; the code path is the same, only the constants differ. The environment
variables FASTBP_CUDA_TILE / FASTBP_CUDA_WORK or :func:`launch_config` override them.
tile must be a power of two (the block reductions halve it) and tile*tile <= 1024.
"""
import contextlib
import os
from dataclasses import dataclass

import numba

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


@dataclass
class LaunchConfig:
    tile: int
    work: int
    max_reduce_blocks: int   # blocks (and partial sums) of one loss reduction

    @property
    def block(self):
        """Threads of a 1-D block."""
        return self.tile * self.tile


def _check(tile, work):
    if tile < 1 or tile & (tile - 1) or tile * tile > 1024:
        raise ValueError(f"tile: expected a power of two with tile*tile <= 1024, got {tile}")
    if work < 1:
        raise ValueError(f"work: expected a positive int, got {work}")


config = LaunchConfig(
    tile=int(os.environ.get("FASTBP_CUDA_TILE", 4 if SIMULATOR else 16)),
    work=int(os.environ.get("FASTBP_CUDA_WORK", 2 if SIMULATOR else 4)),
    max_reduce_blocks=8 if SIMULATOR else 256,
)
_check(config.tile, config.work)


@contextlib.contextmanager
def launch_config(tile=None, work=None):
    """Temporarily change the tile and work per thread (tests use tiny ones)."""
    old = (config.tile, config.work)
    new_tile = old[0] if tile is None else int(tile)
    new_work = old[1] if work is None else int(work)
    _check(new_tile, new_work)
    config.tile, config.work = new_tile, new_work
    try:
        yield config
    finally:
        config.tile, config.work = old


def blocks(n, per_block):
    """Blocks of ``per_block`` needed to cover n items (at least one)."""
    return max((n + per_block - 1) // per_block, 1)
