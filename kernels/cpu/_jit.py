"""The numba decorators every CPU kernel uses, set in one place.

``cache=True`` keeps compiled machine code on disk (NUMBA_CACHE_DIR moves it), so a
warm start costs milliseconds instead of seconds per kernel.

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
import glob
import hashlib
import os

from numba import njit

FASTMATH = {"nsz", "arcp", "contract"}

# Elementwise scalar helpers, inlined into the kernels that call them.
scalar = njit(cache=True, inline="always", fastmath=FASTMATH, error_model="numpy")

# Array kernels that parallelise with prange.
parallel = njit(cache=True, parallel=True, fastmath=FASTMATH, error_model="numpy")

# Drivers that only call other kernels (their parallelism lives in the callees).
serial = njit(cache=True, fastmath=FASTMATH, error_model="numpy")


def _cache_dir():
    """The folder numba caches this package's functions in (the locator numba would
    pick for a function of this module), or __pycache__ beside the sources."""
    try:
        from numba.core.caching import _CacheImpl
        return _CacheImpl(_cache_dir)._locator.get_cache_path()
    except Exception:  # private numba API: fall back to numba's default location
        return os.path.join(os.path.dirname(__file__), "__pycache__")


def clear_stale_cache():
    """Drop numba's cached machine code when any kernel source has changed.

    numba checks a cached function only against the file it is defined in, but a
    cached caller carries the compiled code of the callees it inlined from other
    files: after kernels/cpu/optim.py changed, network_train_step's cached copy kept
    running the old update and crashed. The cache folder is therefore stamped with a
    hash of every source in this package (and kernels/codes.py), and emptied of
    numba's files when the hash differs.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join(here, "*.py")))
    sources.append(os.path.join(os.path.dirname(here), "codes.py"))
    digest = hashlib.sha256()
    for path in sources:
        with open(path, "rb") as f:
            digest.update(f.read())
    digest = digest.hexdigest()
    cache = _cache_dir()
    stamp = os.path.join(cache, "fastbp-kernel-sources.sha256")
    try:
        with open(stamp) as f:
            if f.read().strip() == digest:
                return
    except OSError:
        pass
    try:
        for pattern in ("*.nbi", "*.nbc"):
            for path in glob.glob(os.path.join(cache, pattern)):
                os.remove(path)
        os.makedirs(cache, exist_ok=True)
        with open(stamp, "w") as f:
            f.write(digest)
    except OSError:
        pass  # a read-only cache folder: numba then compiles in memory each process


clear_stale_cache()
