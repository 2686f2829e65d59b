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
import glob
import hashlib
import os
import warnings

from numba import njit

FASTMATH = {"nsz", "arcp", "contract"}


def _where_numba_caches():
    """The folder numba caches the functions of this folder's modules in, or None when
    it has none it can write.

    numba picks the folder per source file from its locators (NUMBA_CACHE_DIR, i.e.
    numba.config.CACHE_DIR, first; then __pycache__ beside the source; then the
    user-wide cache), each tried for writability; with none left, ``cache=True`` raises
    RuntimeError ("no locator available") at decoration, which would make every kernel
    module fail to import. Asking numba with a probe function of this file, through the
    dispatcher's public ``stats``, gives its real choice without its private classes.
    """
    def probe():
        return 0
    try:
        return njit(cache=True)(probe).stats.cache_path
    except RuntimeError:
        return None


CACHE_DIR = _where_numba_caches()
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
    cache = CACHE_DIR
    if cache is None:
        return   # nothing cached on disk
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
        pass  # the stamp is only an optimisation; numba checked the folder itself


clear_stale_cache()
