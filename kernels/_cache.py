"""numba's on-disk cache for a kernel package (kernels/cpu, kernels/cuda): where it is,
and dropping it when the package's sources change.

numba keeps a cached function's compiled code beside its source (__pycache__), under
NUMBA_CACHE_DIR, or in the user-wide cache, whichever it can write, and checks the
cached code only against the file the function is defined in. But a cached kernel
carries the compiled code of the functions it calls from other files: after
kernels/cpu/optim.py changed, network_train_step's cached copy kept running the old
update and crashed. So each package's cache folder is stamped with a hash of every
source of the package (and kernels/codes.py) and emptied of numba's files when the hash
differs.

numba's index of a cached function (one file per function, listing its compiled
signatures and their data files) is updated by read, modify, write, without a lock
(numba.core.caching.IndexDataCacheFile.save, numba 0.68). Two processes saving two
signatures of one function at once, say its float32 and float64 versions, both read the
old index, both pick the same data file name, and the index that survives can point a
signature at the other's machine code: a silently wrong kernel in every later process.
``serialise_index_writes`` puts an exclusive file lock around those saves for the
package's cache folder.
"""
import functools
import glob
import hashlib
import os

try:
    import fcntl
except ImportError:   # Windows: no flock; saves stay as numba makes them
    fcntl = None

_STAMP = "fastbp-kernel-sources.sha256"
_LOCK = "fastbp-cache.lock"
_LOCKED_FOLDERS = set()   # cache folders whose index saves take the lock


def cache_folder(probe):
    """The folder numba caches a package's functions in, or None when it has none it
    can write.

    ``probe()`` decorates a function defined in the package with the package's jit and
    ``cache=True`` (numba.njit or cuda.jit) and returns the dispatcher, whose public
    ``stats`` give numba's real choice, without its private locator classes. Where no
    folder is writable, ``cache=True`` raises RuntimeError ("no locator available") at
    decoration, which would make every kernel module fail to import.
    """
    try:
        return probe().stats.cache_path
    except RuntimeError:
        return None


def clear_stale_cache(package_dir, cache):
    """Empty ``cache`` (a folder, or None: nothing to do) of numba's files unless its
    stamp holds the hash of the sources in ``package_dir`` and kernels/codes.py."""
    if cache is None:
        return   # nothing cached on disk
    sources = sorted(glob.glob(os.path.join(package_dir, "*.py")))
    sources.append(os.path.join(os.path.dirname(package_dir), "codes.py"))
    digest = hashlib.sha256()
    for path in sources:
        with open(path, "rb") as f:
            digest.update(f.read())
    digest = digest.hexdigest()
    stamp = os.path.join(cache, _STAMP)
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


def serialise_index_writes(cache, index_class):
    """Make every save into numba's cache folder ``cache`` (a folder, or None: nothing to
    do) through ``index_class`` (numba's IndexDataCacheFile: numba.core.caching's for
    the CPU, numba-cuda's own copy for CUDA) hold an exclusive lock on the folder's
    ``fastbp-cache.lock`` (see the module doc). Idempotent; saves into other folders
    (other libraries' caches) are unchanged."""
    if cache is None or fcntl is None:
        return
    _LOCKED_FOLDERS.add(os.path.abspath(cache))
    save = index_class.save
    if getattr(save, "_fastbp_locked", False):
        return

    @functools.wraps(save)
    def locked_save(self, key, data):
        if os.path.abspath(self._cache_path) not in _LOCKED_FOLDERS:
            return save(self, key, data)
        try:
            fd = os.open(os.path.join(self._cache_path, _LOCK), os.O_RDWR | os.O_CREAT,
                         0o666)
        except OSError:   # a folder numba can write but not this file: save as numba does
            return save(self, key, data)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return save(self, key, data)
        finally:
            os.close(fd)   # releases the lock

    locked_save._fastbp_locked = True
    index_class.save = locked_save
