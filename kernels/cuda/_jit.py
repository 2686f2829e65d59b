"""The decorator every CUDA kernel uses: ``cuda.jit`` with numba-cuda's on-disk cache.

Compiling a CUDA kernel (Python to PTX with NVVM, then PTX to machine code) takes
0.5-1.8 s per kernel on an H200 host, and a network's step uses about ten kernels, so
without a cache every new process waited that long before its first step.
``cache=True`` keeps the compiled kernels beside the sources (or under
NUMBA_CACHE_DIR, as the CPU kernels), keyed by the kernel's source, its argument types,
the GPU's compute capability and the values its factory closed over (the tile, the
product geometry), so another geometry or GPU compiles its own. As for the CPU
kernels, the cache folder is emptied when any source of this package changes
(kernels/_cache.py): a cached kernel carries the device functions it calls from other
files.

Device functions (``cuda.jit(device=True)``) are compiled into the kernels that call
them and need no cache of their own. numba's CUDA simulator runs Python and caches
nothing; neither does a process where no cache folder is writable.
"""
import os

from numba import cuda

from .._cache import cache_folder, clear_stale_cache, serialise_index_writes
from ._launch import SIMULATOR


def _probe(x):
    x[0] = 0


CACHE_DIR = None if SIMULATOR else cache_folder(lambda: cuda.jit(cache=True)(_probe))
clear_stale_cache(os.path.dirname(os.path.abspath(__file__)), CACHE_DIR)
# two processes may compile the same kernel for two dtypes at once (kernels/_cache.py)
if CACHE_DIR is not None:
    try:   # numba-cuda's own copy of numba's cache classes
        from numba.cuda.core.caching import IndexDataCacheFile
    except ImportError:   # a numba-cuda that caches through numba's
        from numba.core.caching import IndexDataCacheFile
    serialise_index_writes(CACHE_DIR, IndexDataCacheFile)


def kernel(func=None, **options):
    """``@kernel`` or ``@kernel(**options)``: ``cuda.jit(**options)`` with the cache on
    where there is one (module docstring)."""
    if CACHE_DIR is not None:
        options["cache"] = True
    if func is None:
        return cuda.jit(**options)
    return cuda.jit(**options)(func)
