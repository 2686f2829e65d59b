"""One knob for the threads a training step uses.

fastbp's kernels split every layer into blocks across numba's thread pool, and each
thread multiplies its block with single-threaded BLAS (kernels/cpu/blas.py). So the BLAS
that the kernels call (scipy-openblas32's OpenBLAS, or scipy's where that cannot be
loaded; MKL, loaded sequential, for the larger products where it is used) must run one
thread per call: a multithreaded BLAS inside numba's threads, or BLAS's own pool
spinning beside numba's, oversubscribes the cores (measured on a 2-core machine: a
784-128-10 step went from 0.28 ms to 28 ms with both pools at 2 threads). fastbp
therefore sets the kernels' BLAS to one thread when it is imported, and
``set_num_threads(n)`` sizes numba's pool (and every other BLAS, numpy's and scipy's,
for the user's own work) to ``n``.

Other thread pools in the same process: numba's pool is GNU OpenMP, whose idle threads
busy-wait by default. fastbp/__init__.py sets GOMP_SPINCOUNT=10000 (unless set) before
the pool starts, so idle threads soon sleep: with the default, PyTorch steps in the
same process ran 3-11x slower (784-128-10: 0.29 -> 3.2 ms); with it, about 2x at worst;
fastbp's own step times were the same either way (benchmarks/README.md). OpenBLAS's
idle threads spin too (2**28 cycles after each multithreaded call): fastbp/__init__.py
sets OPENBLAS_THREAD_TIMEOUT=20 (unless set) before it imports numpy, which reaches the
OpenBLAS copies loaded after that (benchmarks/pools_beside.py).
"""
import os
import threading

import numba

from . import validation
from .kernels.cpu import blas as kernels_blas


_SETTING = threading.Lock()


def _controller():
    # Load scipy's BLAS (the kernels' fallback, and the user's) so threadpoolctl can
    # see it; the kernels' own is loaded by kernels/cpu/blas.py.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def _is_kernels_mkl(info):
    """Whether threadpoolctl's ``info`` describes the MKL the kernels load (sequential:
    kernels/cpu/mkl.py). threadpoolctl sees MKL's single dynamic library, which the
    kernels load on Windows; the layers they load privately on Linux it does not see,
    and their sequential layer needs no limit."""
    return (kernels_blas.MKL_PATH is not None
            and os.path.realpath(info["filepath"]) == kernels_blas.MKL_PATH)


def _is_kernels_blas(info):
    """Whether threadpoolctl's ``info`` describes the OpenBLAS the kernels call."""
    path = os.path.realpath(info["filepath"])
    if kernels_blas.LIBRARY_PATH is not None:
        return path == os.path.realpath(kernels_blas.LIBRARY_PATH)
    # scipy's wheels keep their OpenBLAS beside the package (scipy.libs) on Linux and
    # Windows, inside it (scipy/.dylibs) on macOS
    import scipy
    scipy_dir = os.path.realpath(os.path.dirname(scipy.__file__))
    return path.startswith((scipy_dir + os.sep, scipy_dir + ".libs" + os.sep))


def _limit_blas(n_other):
    """The kernels' BLAS (and their MKL, where used) to 1 thread; every other BLAS to
    ``n_other`` (None: unchanged). Where the kernels call scipy's BLAS and it cannot be
    told apart (a shared system BLAS), all go to 1."""
    with _SETTING:   # two threads setting at once: one after the other
        controller = _controller()
        blas = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
        ours = [lib for lib in blas if _is_kernels_blas(lib.info())]
        if not ours and kernels_blas.LIBRARY_PATH is None:
            ours = list(blas)
        ours += [lib for lib in blas if _is_kernels_mkl(lib.info()) and lib not in ours]
        try:
            for lib in blas:
                if lib in ours:
                    lib.set_num_threads(1)
                elif n_other is not None:
                    lib.set_num_threads(n_other)
        finally:
            # a library of its own that threadpoolctl cannot see (or whose limit
            # another thread's threadpool_limits holds) is still set through its handle
            kernels_blas.hold_one_thread()
            _release_openblas_limits()


def _release_openblas_limits():
    """Let any Python thread set OpenBLAS limits next. threadpoolctl (3.8) lets only
    the first thread that set a limit on a pthreads OpenBLAS set one again, and other
    threads' calls silently do nothing; its own ``threadpool_limits`` releases that
    claim on exit, and so does this after each of fastbp's settings. Without it,
    ``set_num_threads`` called from any thread but the one that imported fastbp left
    numpy's and scipy's BLAS as they were."""
    from threadpoolctl import OpenBLASController
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear()


def set_num_threads(n):
    """Use ``n`` threads in fastbp's kernels (numba's pool) and in every other BLAS
    library of the process (numpy's, scipy's).

    ``n`` must be between 1 and numba's pool size (NUMBA_NUM_THREADS, by default the
    number of CPUs). The BLAS that the kernels call from inside their threads
    (``fastbp.kernels.cpu.blas.LIBRARY_PATH``, and ``MKL_PATH`` where MKL is used) stays
    at one thread. The BLAS settings apply to the whole process until changed again;
    numba's count applies to the calling Python thread (numba keeps it per thread), so
    call this from the thread that trains. Raises ValueError for ``n`` outside that
    range.
    """
    n = validation.positive_int("n", n)
    if n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"n: expected at most NUMBA_NUM_THREADS="
                         f"{numba.config.NUMBA_NUM_THREADS} threads, got {n}")
    numba.set_num_threads(n)
    _limit_blas(n)


def numpy_openblas_thread_timeout():
    """The OPENBLAS_THREAD_TIMEOUT numpy's OpenBLAS read when it loaded (log2 of the CPU
    cycles its idle threads spin; 0: unset, OpenBLAS's default of 28), or None where
    numpy's BLAS is not an OpenBLAS exporting ``openblas_thread_timeout``. For tests and
    benchmarks/pools_beside.py: fastbp/__init__.py sets the variable before it imports
    numpy, which reaches numpy's copy only where fastbp is imported first."""
    import ctypes
    from threadpoolctl import threadpool_info
    for info in threadpool_info():
        if info["internal_api"] == "openblas" and "numpy" in info["filepath"]:
            lib = ctypes.CDLL(info["filepath"])
            if hasattr(lib, "openblas_thread_timeout"):
                return lib.openblas_thread_timeout()
    return None


def get_num_threads():
    """(numba threads, {BLAS library path: threads}) currently in use."""
    blas = {info["filepath"]: info["num_threads"]
            for info in _controller().info() if info["user_api"] == "blas"}
    return numba.get_num_threads(), blas


def _limit_at_import():
    """The kernels' BLAS to one thread, leaving every other library as it is. Where
    fastbp loaded that BLAS itself, its handle does it (``hold_one_thread``) and nothing
    else is loaded: threadpoolctl, and scipy.linalg for its BLAS, cost about 0.17 s of
    a 0.6 s ``import fastbp`` here and would touch nothing (other libraries keep their
    settings at import). Where the kernels call scipy's BLAS, threadpoolctl sets it."""
    if not kernels_blas.hold_one_thread():
        _limit_blas(None)


_limit_at_import()
