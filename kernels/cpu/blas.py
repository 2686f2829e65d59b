"""General matrix products from compiled code: BLAS ?gemm on row-major views.

numba's ``np.dot`` needs contiguous operands, and a column block of a matrix
(``dS[:, j0:j1]``) is not one. Calling BLAS directly with leading dimensions
lets every thread of a prange loop multiply its own block in place, with no copies, so
one thread pool (numba's) does all the work and BLAS itself runs single-threaded (see
fastbp/threads.py: two thread pools on the same cores slowed steps down 100x here).

    gemm(trans_a, trans_b, alpha, A, B, beta, C)
        C = alpha * op(A) @ op(B) + beta * C,   op(M) = M.T if trans_M else M
        C (m, n); op(A) (m, k); op(B) (k, n); 2-D float32 or float64 arrays of one
        dtype whose rows may be strided but whose elements within a row are contiguous
        (row slices and column blocks of C-contiguous arrays qualify).

A one-row operand may carry any row stride (numpy calls ``x[None, :]``, with stride 0,
C-contiguous); BLAS wants a leading dimension of at least the row's length even though
it never steps a row, and OpenBLAS silently skips a product whose leading dimension is
illegal (it only prints to stderr). ``_leading_dimension`` therefore never derives it
from the stride of a size-1 axis.

The BLAS is OpenBLAS from the scipy-openblas32 package (a dependency), or scipy's own
copy where that package's library cannot be loaded: ``LIBRARY_PATH`` says which.
"""
import ctypes
import importlib.util
import os
import sys

import llvmlite.binding as llvm
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from ._jit import scalar


def _openblas32_library():
    """Path of the shared library of the scipy-openblas32 package, found without
    importing the package; None where it is not installed or holds no such file.

    Not imported because its ``__init__`` loads the library with RTLD_GLOBAL: every
    extension loaded after that (scipy.linalg's) would bind its ``scipy_*`` BLAS and
    LAPACK symbols to this copy instead of scipy's own, silently moving the user's
    scipy work onto a library that fastbp holds at one thread."""
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "lib")
    # Linux .so, macOS .dylib; on Windows the .dll (its lib/ also holds an import .lib)
    suffix = ".dll" if sys.platform == "win32" else (".dylib" if sys.platform == "darwin"
                                                     else ".so")
    try:
        names = sorted(n for n in os.listdir(folder)
                       if "scipy_openblas" in n and n.endswith(suffix))
    except OSError:
        return None
    return os.path.join(folder, names[0]) if names else None


def _bind_openblas32():
    """({"sgemm": address, "dgemm": address}, path, set_num_threads) of the OpenBLAS of
    the scipy-openblas32 package, loaded privately (RTLD_LOCAL) with its own thread
    pool set to one thread; (None, None, None) where the package is missing or its
    library does not load.

    Why not scipy's copy: scipy 1.17 bundles OpenBLAS 0.3.30, and 0.3.34's single-
    threaded sgemm took 0.86-0.99 of its time on the yardstick's mid-size float32 layer
    products (e.g. 64 x 256 -> 256 forward: 91 us against 98) and was level on float64
    (benchmarks/README.md, "A newer OpenBLAS for the products"). It is the build scipy
    itself ships, packaged on its own (LP64, symbols prefixed ``scipy_``)."""
    path = _openblas32_library()
    if path is None:
        return None, None, None
    try:
        lib = ctypes.CDLL(path)
        addresses = {name: ctypes.cast(getattr(lib, f"scipy_{name}_"),
                                       ctypes.c_void_p).value
                     for name in ("sgemm", "dgemm")}
        set_threads = lib.scipy_openblas_set_num_threads
    except (OSError, AttributeError):   # not loadable here, or not the expected build
        return None, None, None
    set_threads.argtypes = [ctypes.c_int]
    set_threads(1)
    return addresses, path, set_threads


def _bind_scipy():
    """The same for scipy's own BLAS (scipy.linalg.cython_blas), the fallback; no
    handle of its own (threadpoolctl sizes it: fastbp/threads.py)."""
    import scipy.linalg.cython_blas  # noqa: F401
    addresses = {name: get_cython_function_address("scipy.linalg.cython_blas", name)
                 for name in ("sgemm", "dgemm")}
    return addresses, None, None


_ADDRESSES, LIBRARY_PATH, _SET_NUM_THREADS = _bind_openblas32()
if _ADDRESSES is None:
    _ADDRESSES, LIBRARY_PATH, _SET_NUM_THREADS = _bind_scipy()
"""Path of the shared library whose ?gemm the kernels call; None: scipy's own BLAS
(scipy.linalg.cython_blas). fastbp/threads.py keeps that library at one thread."""


def hold_one_thread():
    """Set the kernels' BLAS to one thread directly, where fastbp loaded it itself
    (threadpoolctl also does, but from 3.8 on only the first Python thread that set an
    OpenBLAS limit may change it). False where the kernels call scipy's BLAS."""
    if _SET_NUM_THREADS is None:
        return False
    _SET_NUM_THREADS(1)
    return True


# Fortran BLAS takes every argument by pointer: (transa, transb, m, n, k, alpha, a,
# lda, b, ldb, beta, c, ldc). The functions are bound by symbol name, not by address,
# so the kernels that call them stay cacheable on disk (an address baked into machine
# code would differ in the next process); the names are registered at every import.
# Both libraries take 32-bit integers (LP64), so compiled kernels do not depend on
# which one is bound.
_GEMM_SIGNATURE = types.void(*[types.voidptr] * 13)
for _name, _address in _ADDRESSES.items():
    llvm.add_symbol(f"fastbp_{_name}", _address)
_sgemm = types.ExternalFunction("fastbp_sgemm", _GEMM_SIGNATURE)
_dgemm = types.ExternalFunction("fastbp_dgemm", _GEMM_SIGNATURE)

_N = np.int8(ord("N"))
_T = np.int8(ord("T"))


@intrinsic
def _by_ref(typingctx, value):
    """A void pointer to a stack slot holding ``value`` (allocated once per function,
    so calling this in a loop does not grow the stack)."""
    def codegen(context, builder, signature, args):
        slot = cgutils.alloca_once_value(builder, args[0])
        return builder.bitcast(slot, cgutils.voidptr_t)
    return types.voidptr(value), codegen


@intrinsic
def _data(typingctx, array):
    """A void pointer to the first element of ``array``."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.bitcast(ary.data, cgutils.voidptr_t)
    return types.voidptr(array), codegen


@scalar
def _leading_dimension(M):
    """BLAS's leading dimension of the row-major matrix M: its row stride in elements,
    or its row length when it has a single row (whose stride is arbitrary)."""
    if M.shape[0] > 1:
        return max(M.strides[0] // M.itemsize, 1)
    return max(M.shape[1], 1)


@scalar
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """C = alpha * op(A) @ op(B) + beta * C on row-major views (module docstring)."""
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    item = C.itemsize
    lda = _leading_dimension(A)
    ldb = _leading_dimension(B)
    ldc = _leading_dimension(C)
    # A row-major (r, c) matrix is the column-major (c, r) matrix of the same memory,
    # so row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the
    # operands and keep each one's transpose flag.
    ta = _T if trans_a else _N
    tb = _T if trans_b else _N
    if item == 4:  # float32
        _sgemm(_by_ref(tb), _by_ref(ta), _by_ref(np.int32(n)), _by_ref(np.int32(m)),
               _by_ref(np.int32(k)), _by_ref(np.float32(alpha)), _data(B),
               _by_ref(np.int32(ldb)), _data(A), _by_ref(np.int32(lda)),
               _by_ref(np.float32(beta)), _data(C), _by_ref(np.int32(ldc)))
    else:
        _dgemm(_by_ref(tb), _by_ref(ta), _by_ref(np.int32(n)), _by_ref(np.int32(m)),
               _by_ref(np.int32(k)), _by_ref(np.float64(alpha)), _data(B),
               _by_ref(np.int32(ldb)), _data(A), _by_ref(np.int32(lda)),
               _by_ref(np.float64(beta)), _data(C), _by_ref(np.int32(ldc)))


# OpenBLAS (0.3.30 for SkylakeX, as scipy bundles it, when this was measured; on
# 0.3.34 the halves took 0.72-0.95 of the whole's time in 14 of 16 timings of digits'
# shapes, both dtypes: benchmarks/README.md) has separate kernels for small
# products; cut in two, a product of 1-2 million multiply-adds ran 1.2-1.5x faster
# than whole in the orientations below (benchmarks/README.md, "scikit-learn drop-in").
SMALL_PRODUCT = 1_000_000   # multiply-adds, m * n * k


@scalar
def gemm_halves(trans_a, trans_b, alpha, A, B, beta, C):
    """gemm, as two products over the halves of C's rows when it has between
    SMALL_PRODUCT and 2 SMALL_PRODUCT multiply-adds and trans_b is false. Each element
    of C is still one BLAS dot product over k: only which kernel computes it changes
    (and with it the order of its additions). With trans_b true ("TN" to BLAS) the
    halves were slower, so that is one call."""
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    work = m * n * k
    if trans_b or not SMALL_PRODUCT < work <= 2 * SMALL_PRODUCT:
        gemm(trans_a, trans_b, alpha, A, B, beta, C)
        return
    half = m // 2
    if trans_a:
        gemm(True, False, alpha, A[:, :half], B, beta, C[:half])
        gemm(True, False, alpha, A[:, half:], B, beta, C[half:])
    else:
        gemm(False, False, alpha, A[:half], B, beta, C[:half])
        gemm(False, False, alpha, A[half:], B, beta, C[half:])
