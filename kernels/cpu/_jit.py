"""The numba decorators every CPU kernel uses, set in one place.

``cache=True`` keeps compiled machine code on disk (NUMBA_CACHE_DIR moves it), so a
warm start costs milliseconds instead of seconds per kernel. Where numba finds no
folder it can write (NUMBA_CACHE_DIR, the sources' __pycache__ and the user-wide cache
all read-only), the kernels compile in memory in each process instead, with one
RuntimeWarning at import.

``error_model="numpy"``: a float division by zero gives inf or NaN as in numpy instead
of a Python exception. Python's model puts a check and a possible raise on every
division, and that branch alone kept LLVM from vectorising elementwise loops (tanh went
from 14 ns to under 1 ns per element without it). Kernels trust their inputs; the API
checks them.

``fastmath`` is limited to flags that keep results well defined: "contract" (fused
multiply-add), "nsz" and "arcp". "nnan"/"ninf" are left out because NaN must propagate
(fit stops on a NaN loss) and the losses must stay right for huge logits; "reassoc" is
left out because elementary.exp's rounding trick (add and subtract 1.5 * 2**52) would be
folded away, and those functions are inlined into kernels with the kernels' flags.
"""
import functools
import os
import warnings

from numba import njit
from numba.core import caching
from numba.np.ufunc.parallel import _launch_threads

from .._cache import cache_folder, clear_stale_cache, serialise_index_writes
from . import _inline_once, _optimise_once

FASTMATH = {"nsz", "arcp", "contract"}

# LLVM optimises each compiled callee once, not again in every caller above it: a
# third less CPU for a cold compile, the same results (_optimise_once.py)
_optimise_once.install_unless_asked_not_to()
# numba builds each inlined helper's IR once, not again at every call site: 4-14% less
# CPU for a cold compile in three measurements, the same results (_inline_once.py)
_inline_once.install_unless_asked_not_to()


def _probe():
    return 0


CACHE_DIR = cache_folder(lambda: njit(cache=True)(_probe))
if CACHE_DIR is None:
    warnings.warn("fastbp: numba has no writable cache folder (NUMBA_CACHE_DIR, the "
                  "package's __pycache__ and the user cache are all read-only), so the "
                  "kernels are compiled in memory in each process; set NUMBA_CACHE_DIR "
                  "to a writable folder to keep them", RuntimeWarning, stacklevel=2)
_CACHE = CACHE_DIR is not None

# Elementwise scalar helpers, inlined into the kernels that call them.
scalar = njit(cache=_CACHE, inline="always", fastmath=FASTMATH, error_model="numpy")

# Array kernels that parallelise with prange.
parallel = njit(cache=_CACHE, parallel=True, fastmath=FASTMATH, error_model="numpy")

# Drivers that only call other kernels (their parallelism lives in the callees).
serial = njit(cache=_CACHE, fastmath=FASTMATH, error_model="numpy")

# Thin drivers inlined into their callers. numba links a compiled callee's machine code
# into its caller and optimises and compiles the whole linked module again, so every
# level of compiled function between an entry point and the kernels pays for all the
# code below it once more (kernels/cpu/network.py's module doc has the numbers).
inlined = scalar


# a cached caller carries its callees' code from other files (kernels/_cache.py)
clear_stale_cache(os.path.dirname(os.path.abspath(__file__)), CACHE_DIR)
# two processes may compile the same kernel for two dtypes at once (kernels/_cache.py)
serialise_index_writes(CACHE_DIR, caching.IndexDataCacheFile)


def launch_pool_on_load(cache, index_class):
    """Launch numba's thread pool whenever a kernel is loaded from the cache folder
    ``cache`` (None: nothing to do) through ``index_class`` (numba's
    IndexDataCacheFile), before the loaded code can run. Idempotent.

    Why: numba (0.68; issues #8578 and #4807) launches its pool when it loads a cached
    function that contains a parallel loop, and when it loads a caller compiled together
    with one, but not a serial caller compiled while its parallel callee came from the
    cache. Such a caller, loaded first in a fresh process, jumps into the unlaunched
    scheduler (or reads the thread count from it: blocks.n_blocks) and the process dies
    with SIGSEGV, depending only on the cache's history: ``sgd_update`` did after one
    process had run ``optimizer_update`` and another ``sgd_update``
    (tests/test_pool_before_cache.py). fastbp's API launches the pool before its first
    kernel (fastbp.concurrency.start_pool); this makes the kernels called directly safe
    too. The pool starts at a kernel's first call, as numba's own parallel kernels start
    it, never at import."""
    if cache is None:
        return
    folder = os.path.abspath(cache)
    load = index_class.load
    if getattr(load, "_fastbp_pool", None) == folder:
        return

    @functools.wraps(load)
    def load_and_launch(self, key):
        data = load(self, key)
        if data is not None and os.path.abspath(self._cache_path) == folder:
            _launch_threads()
        return data

    load_and_launch._fastbp_pool = folder
    index_class.load = load_and_launch


launch_pool_on_load(CACHE_DIR, caching.IndexDataCacheFile)
