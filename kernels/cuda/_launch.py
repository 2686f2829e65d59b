"""Launch geometry shared by every CUDA kernel, set in one place.

Two settings:

``config.tile``
    The side of the square thread block (tile x tile threads) of the column reductions
    (db) and the thread count (tile*tile) of the 1-D elementwise and reduction kernels.
    A power of two (the block reductions halve it) with tile*tile <= 1024.

``config.gemm[dtype]``
    The geometry of the matrix-product kernel (``blas.gemm``), a :class:`GemmGeometry`
    ``(bm, bn, bk, tm, tn[, min_blocks])``: one block computes a bm x bn tile of C,
    stepping through k bk at a time; each thread keeps tm x tn outputs in registers, so
    a block has (bm/tm)*(bn/tn) threads. ``min_blocks`` > 0 asks the compiler (CUDA's
    launch bounds) to fit that many blocks on a multiprocessor, capping the registers
    per thread at the price of spills; 0 (the default) leaves registers uncapped.
    float32 and float64 have their own (a float64 thread tile of 8x8 would need twice
    the registers).

On a GPU the defaults are tile 16, gemm float32 (128, 128, 8, 8, 8) and float64
(64, 64, 8, 4, 4), both 256-thread blocks. Under numba's CUDA simulator every thread is
an OS thread, so they shrink to tile 4 and gemm (8, 8, 4, 2, 2) (16 threads); the code
path is the same, only the constants differ. The environment variables FASTBP_CUDA_TILE
and FASTBP_CUDA_GEMM ("bm,bn,bk,tm,tn[,min_blocks]", both dtypes) or :func:`launch_config` override
them; ``benchmarks/gpu_tune.py`` times candidate geometries on a real GPU.

``config.fused`` (default False; FASTBP_CUDA_FUSED=1 turns it on)
    Whether a launch plan runs a narrow network's forward, loss and backward as one
    kernel (fused.py decides which networks), instead of a few kernels per layer. Off
    by default: on the H200 its first version was slower than the general step
    (benchmarks/README.md, "The GPU step").

``config.graphs`` (default True; FASTBP_CUDA_GRAPHS=0 turns it off)
    Whether a launch plan replays a training step's launches (forward, loss, backward,
    update, record) as one CUDA graph (plan.py) once it has seen the same inputs twice,
    where numba-cuda launches through cuda.core and the capture works; elsewhere, or
    off, it launches them one by one. ``plan.launch_path()`` says which path runs.

``config.adaptive`` (default True; FASTBP_CUDA_ADAPTIVE=0 turns it off)
    Whether a product whose output has few tiles runs on smaller ones, and splits k
    when even those are few (:func:`product_shape`). A 784-128-10 layer at batch 64
    has one 128 x 128 tile: one block of one of the H200's 132 multiprocessors walks
    k = 784 alone, the other 131 idle. An explicit geometry (FASTBP_CUDA_GEMM,
    ``launch_config(gemm=...)``) turns it off, so that geometry is the one that runs.
"""
import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

import numba

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
DTYPES = ("float32", "float64")


class GemmGeometry(NamedTuple):
    """Tile shape of the matrix-product kernel; see the module docstring."""
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    min_blocks: int = 0

    @property
    def threads(self):
        return (self.bm // self.tm) * (self.bn // self.tn)

    def check(self):
        """Raise ValueError unless the geometry is launchable; return it."""
        if any(not isinstance(v, int) or v < 1 for v in self[:5]) or \
                not isinstance(self.min_blocks, int) or self.min_blocks < 0:
            raise ValueError(f"gemm: expected five positive ints (bm, bn, bk, tm, tn) and "
                             f"min_blocks >= 0, got {tuple(self)}")
        if self.bm % self.tm or self.bn % self.tn:
            raise ValueError(f"gemm: bm must be a multiple of tm and bn of tn, got {tuple(self)}")
        if self.threads > 1024:
            raise ValueError(f"gemm: (bm/tm)*(bn/tn) threads must be <= 1024, got "
                             f"{self.threads} for {tuple(self)}")
        # Every thread stages the same number of elements of each operand per k-step.
        if (self.bm * self.bk) % self.threads or (self.bn * self.bk) % self.threads:
            raise ValueError(f"gemm: bm*bk and bn*bk must be multiples of the "
                             f"{self.threads} threads, got {tuple(self)}")
        # ... at addresses a constant apart (blas._operand): the threads walk an
        # operand's contiguous axis (bm, bn or bk long) in whole rows or whole sweeps
        t = self.threads
        if any(t % v and v % t for v in (self.bm, self.bn, self.bk)):
            raise ValueError(f"gemm: bm, bn and bk must each divide the {t} threads or "
                             f"be a multiple of them, got {tuple(self)}")
        return self


GPU_GEMM = {"float32": GemmGeometry(128, 128, 8, 8, 8),
            "float64": GemmGeometry(64, 64, 8, 4, 4)}
SIM_GEMM = GemmGeometry(8, 8, 4, 2, 2)
# The smaller tiles of the adaptive choice, largest first, each a quarter of the one
# before (256 threads on a GPU, 16 or 4 outputs a thread). Smaller tiles reload each
# operand element more often (shared-memory traffic per multiply-add: 2/tm), so they
# only pay where the large tile leaves multiprocessors idle.
GPU_SMALLER = (GemmGeometry(64, 64, 8, 4, 4), GemmGeometry(32, 32, 8, 2, 2))
SIM_SMALLER = (GemmGeometry(4, 4, 4, 2, 2),)
SIM_MULTIPROCESSORS = 4   # what the simulator pretends, so its tests take every path
# Fewest staging steps (of bk k's) a split of k may get: below that the split's sum
# costs more than its parallelism gains (64 k's on a GPU; 8 in the simulator).
MIN_SPLIT_STEPS = 2 if SIMULATOR else 8


def _check_tile(tile):
    if not isinstance(tile, int) or tile < 1 or tile & (tile - 1) or tile * tile > 1024:
        raise ValueError(f"tile: expected a power of two with tile*tile <= 1024, got {tile}")
    return tile


def _parse_gemm(value):
    """A GemmGeometry from five or six ints, as a tuple/list or a "bm,bn,bk,tm,tn[,min_blocks]"
    string."""
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",")]
        except ValueError:
            raise ValueError(f"gemm: expected 'bm,bn,bk,tm,tn[,min_blocks]' (ints), got "
                             f"{value!r}") from None
    if len(value) not in (5, 6):
        raise ValueError(f"gemm: expected five ints (bm, bn, bk, tm, tn) and optionally "
                         f"min_blocks, got {value!r}")
    return GemmGeometry(*value).check()


@dataclass
class LaunchConfig:
    tile: int
    gemm: dict = field(default_factory=dict)   # dtype name -> GemmGeometry
    max_reduce_blocks: int = 256                # blocks (and partial sums) of one reduction
    adaptive: bool = True                       # smaller tiles / split k for small outputs
    fused: bool = False                         # narrow networks' one-kernel step (fused.py)
    graphs: bool = True                         # replay a training step as a CUDA graph
    multiprocessors: int = None                 # of the current GPU; asked on first use

    @property
    def block(self):
        """Threads of a 1-D block."""
        return self.tile * self.tile


def _default_config():
    env_gemm = os.environ.get("FASTBP_CUDA_GEMM")
    if env_gemm:
        gemm = dict.fromkeys(DTYPES, _parse_gemm(env_gemm))
    elif SIMULATOR:
        gemm = dict.fromkeys(DTYPES, SIM_GEMM)
    else:
        gemm = dict(GPU_GEMM)
    tile = _check_tile(int(os.environ.get("FASTBP_CUDA_TILE", 4 if SIMULATOR else 16)))
    adaptive = not env_gemm and os.environ.get("FASTBP_CUDA_ADAPTIVE", "1") != "0"
    return LaunchConfig(tile=tile, gemm=gemm, max_reduce_blocks=8 if SIMULATOR else 256,
                        adaptive=adaptive, fused=os.environ.get("FASTBP_CUDA_FUSED", "0") == "1",
                        graphs=os.environ.get("FASTBP_CUDA_GRAPHS", "1") != "0",
                        multiprocessors=SIM_MULTIPROCESSORS if SIMULATOR else None)


config = _default_config()


@contextlib.contextmanager
def launch_config(tile=None, gemm=None, adaptive=None, fused=None, graphs=None):
    """Temporarily change the tile and/or the product geometry (both dtypes).

    ``gemm``: (bm, bn, bk, tm, tn[, min_blocks]) or the same as a comma-separated
    string; every product then runs on it (``adaptive`` off unless given). Tests use
    tiny ones; the tuning script tries candidates. ``adaptive``: True or False sets
    ``config.adaptive`` (:func:`product_shape`); ``fused``: ``config.fused`` (whether a
    launch plan may run a narrow network's step as one kernel, fused.py); ``graphs``:
    ``config.graphs`` (whether plans replay their steps as CUDA graphs, plan.py).
    """
    old = config.tile, dict(config.gemm), config.adaptive, config.fused, config.graphs
    new_tile = old[0] if tile is None else _check_tile(tile)
    new_gemm = old[1] if gemm is None else dict.fromkeys(DTYPES, _parse_gemm(gemm))
    new_adaptive = (old[2] and gemm is None) if adaptive is None else bool(adaptive)
    new_fused = old[3] if fused is None else bool(fused)
    new_graphs = old[4] if graphs is None else bool(graphs)
    (config.tile, config.gemm, config.adaptive, config.fused,
     config.graphs) = (new_tile, new_gemm, new_adaptive, new_fused, new_graphs)
    try:
        yield config
    finally:
        config.tile, config.gemm, config.adaptive, config.fused, config.graphs = old


def tiers(dtype):
    """The product geometries the adaptive choice tries for ``dtype``, largest first:
    ``config.gemm[dtype]``, then the smaller ones with fewer outputs per block."""
    first = config.gemm[dtype]
    smaller = SIM_SMALLER if SIMULATOR else GPU_SMALLER
    return (first,) + tuple(g for g in smaller if g.bm * g.bn < first.bm * first.bn)


def multiprocessors():
    """Multiprocessors of the current GPU (SIM_MULTIPROCESSORS in the simulator)."""
    if config.multiprocessors is None:
        from numba import cuda
        config.multiprocessors = int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    return config.multiprocessors


def product_shape(M, N, K, dtype):
    """(geometry, splits, kc) for an (M x K) @ (K x N) product of ``dtype``: the
    largest tier (:func:`tiers`) whose tiles of C number at least half the GPU's
    multiprocessors; when none does, the smallest tier with k cut into ``splits``
    ranges of ``kc`` (at least MIN_SPLIT_STEPS steps of its bk), enough to give every
    multiprocessor a block, each range's product summed afterwards (blas.py). With
    ``config.adaptive`` off: ``config.gemm[dtype]``, 1, K.

    Why half: a tile of a quarter the area moves twice the shared-memory bytes per
    multiply-add, so the smaller tier pays once the larger would leave more than half
    the multiprocessors idle. One product's choice depends on its shape only, so a
    step plan records it once."""
    first = config.gemm[dtype]
    if not config.adaptive:
        return first, 1, K
    sms = multiprocessors()
    options = tiers(dtype)
    for g in options:
        if blocks(M, g.bm) * blocks(N, g.bn) * 2 >= sms:
            return g, 1, K
    g = options[-1]
    tiles = blocks(M, g.bm) * blocks(N, g.bn)
    splits = max(min(blocks(sms, tiles), K // (MIN_SPLIT_STEPS * g.bk)), 1)
    kc = blocks(blocks(K, splits), g.bk) * g.bk       # k per split, whole bk steps
    splits = blocks(K, kc)
    return (g, 1, K) if splits == 1 else (g, splits, kc)


def blocks(n, per_block):
    """Blocks of ``per_block`` needed to cover n items (at least one)."""
    return max((n + per_block - 1) // per_block, 1)


# -- launching ----------------------------------------------------------------------
# Every launcher of this package launches through ``launch`` below, so that a launch
# plan (plan.py) can run a launcher once under ``recording()`` and keep what it would
# have launched (kernel, grid, block and the argument tuple, device-array views
# included) to launch again later without rebuilding any of it. The recorder is the
# calling thread's: networks may train in different threads at once
# (fastbp.concurrency), and one thread's plan recording its step must not take in
# another thread's launches.
_recording = threading.local()


def is_recording():
    """Whether ``launch`` records instead of launching in this thread (inside
    ``recording()``)."""
    return getattr(_recording, "launches", None) is not None


def launch(kernel, grid, block, args):
    """Launch ``kernel[grid, block](*args)``, or record it while this thread is
    ``recording()``."""
    recorder = getattr(_recording, "launches", None)
    if recorder is not None:
        recorder.append((kernel, grid, block, args))
        return
    kernel[grid, block](*args)


class recording:
    """``with recording() as launches:`` record this thread's launches instead of
    running them, into the list ``launches``, in order, as (kernel, grid, block, args).
    Not re-entrant (a plan records one pass at a time). A class, not a generator: a
    plan enters it every step and this costs a fraction of a microsecond."""

    def __enter__(self):
        if getattr(_recording, "launches", None) is not None:
            raise RuntimeError("recording(): already recording")
        _recording.launches = []
        return _recording.launches

    def __exit__(self, *exc):
        _recording.launches = None
