"""One knob for the two thread pools a training step uses.

numba's parallel kernels (the elementwise passes) and OpenBLAS (the matrix products,
called from compiled code through scipy) each start their own threads. Left alone,
each sizes itself to the machine, and when both run in one step they oversubscribe the
cores (FIELD_NOTES.md measured 3x slowdowns). ``set_num_threads`` sets both together.
"""
import numba

from . import validation


def _blas_controller():
    # Load scipy's BLAS (the one numba's np.dot calls) so threadpoolctl can see it.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()


def set_num_threads(n):
    """Use ``n`` threads in numba's parallel kernels and in every loaded BLAS library.

    ``n`` must be between 1 and numba's thread pool size (NUMBA_NUM_THREADS, by
    default the number of CPUs). Applies to the whole process until called again.
    """
    n = validation.positive_int("n", n)
    if n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"n: expected at most NUMBA_NUM_THREADS="
                         f"{numba.config.NUMBA_NUM_THREADS} threads, got {n}")
    numba.set_num_threads(n)
    _blas_controller().limit(limits=n)


def get_num_threads():
    """(numba threads, {BLAS library: threads}) currently in use."""
    blas = {info["filepath"]: info["num_threads"]
            for info in _blas_controller().info() if info["user_api"] == "blas"}
    return numba.get_num_threads(), blas
