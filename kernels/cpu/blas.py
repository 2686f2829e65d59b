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
        (row slices and column blocks of C-contiguous arrays qualify). Where MKL is
        used, the products ``mkl_takes`` picks go to it whole; where OpenBLAS runs
        its SkylakeX kernels, a product that just misses their small-matrix path is
        made as a few calls on blocks of C that take it (``small_blocks``).

A one-row operand may carry any row stride (numpy calls ``x[None, :]``, with stride 0,
C-contiguous); BLAS wants a leading dimension of at least the row's length even though
it never steps a row, and OpenBLAS silently skips a product whose leading dimension is
illegal (it only prints to stderr). ``_leading_dimension`` therefore never derives it
from the stride of a size-1 axis.

The BLAS is OpenBLAS from the scipy-openblas32 package (a dependency), or scipy's own
copy where that package's library cannot be loaded: ``LIBRARY_PATH`` says which.
Where the ``mkl`` package is installed (on an Intel CPU under Linux, or wherever
``FASTBP_BLAS=mkl`` asks), MKL's ?gemm multiplies the larger products (``mkl_takes``;
``MKL_PATH``, ``MKL_REASON``, ``use_mkl``, ``describe``; kernels/cpu/mkl.py says when
and how it is loaded).
"""
import ctypes
import importlib.util
import os
import sys

import llvmlite.binding as llvm
from llvmlite import ir
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import get_cython_function_address, intrinsic

from . import mkl
from ._jit import scalar, serial


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
(scipy.linalg.cython_blas). fastbp/threads.py keeps that library at one thread.
Where MKL is bound (``MKL_PATH``), it multiplies the products ``mkl_takes`` picks."""

_MKL_ADDRESSES, MKL_PATH, MKL_REASON = mkl.bind()
"""Path of the MKL library (sequential; on Linux its core, loaded with its other layers
in a symbol scope of their own) whose ?gemm multiplies the larger products, or None;
MKL_REASON says in words why it is or is not used (kernels/cpu/mkl.py)."""


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
# The "large" functions are MKL's where it is bound, else the same as the others, so
# that kernels cached in a process with MKL still link in one without it.
_GEMM_SIGNATURE = types.void(*[types.voidptr] * 13)
for _name, _address in _ADDRESSES.items():
    llvm.add_symbol(f"fastbp_{_name}", _address)
    llvm.add_symbol(f"fastbp_{_name}_large", (_MKL_ADDRESSES or _ADDRESSES)[_name])
_sgemm = types.ExternalFunction("fastbp_sgemm", _GEMM_SIGNATURE)
_dgemm = types.ExternalFunction("fastbp_dgemm", _GEMM_SIGNATURE)
_sgemm_large = types.ExternalFunction("fastbp_sgemm_large", _GEMM_SIGNATURE)
_dgemm_large = types.ExternalFunction("fastbp_dgemm_large", _GEMM_SIGNATURE)

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


@intrinsic
def _offset(typingctx, pointer, offset, itemsize):
    """``pointer`` moved on by ``offset`` elements of ``itemsize`` bytes."""
    def codegen(context, builder, signature, args):
        nbytes = builder.mul(args[1], args[2])
        moved = builder.gep(builder.bitcast(args[0], cgutils.voidptr_t), [nbytes])
        return builder.bitcast(moved, cgutils.voidptr_t)
    return types.voidptr(types.voidptr, types.intp, types.intp), codegen


# -- OpenBLAS's small-matrix kernels ----------------------------------------------------
# OpenBLAS's SkylakeX kernels (chosen on AVX-512 CPUs, Intel's and AMD's) include
# "small-matrix" ?gemm kernels that skip the packing of both operands. A call takes
# them when its shape passes a permit (?gemm_small_kernel_permit_skylakex.c, OpenBLAS
# 0.3.16 and later; in BLAS's column-major terms M x N = op(A) op(B), K inner):
# M N K <= 100**3, and for a transposed A alone ("TN", a layer's forward X W^T) only
# while M N <= 1200 and K >= 32 (both dtypes: tiny's float64 forward, 64 x 32 x 64,
# ran in OpenBLAS's packing path under perf). Products with both operands transposed
# are left whole here: no kernel makes one, and sgemm's and dgemm's permits differ
# for them. The packing a bigger call pays is a large share of the small products of
# a training step, so ``gemm`` cuts a product that fails the permit into blocks of
# C's rows or columns that pass it, where few enough blocks do: at one thread, the
# yardstick's layer products that qualify took 0.80-0.99 of the whole call's time,
# most 0.86-0.94 (a 784-128 layer at batch 64, the 256-256 layers of "deep", tiny's
# 64-64 forward; forward, weight gradient and input gradient, both dtypes), and an
# output layer's forward at batch 128 (10 columns) 0.44-0.46 (benchmarks/README.md,
# "OpenBLAS's small-matrix kernels"). Blocks are multiples of 16 rows or columns but
# the last (9 blocks of 14-15 columns were no faster than the whole call where 8 of
# 16 took 0.83 of it), at most 16 blocks (the 512-wide layers of "medium" would need
# 35-57, which measured 1.0-2.9 times the whole call). Each element of C is still one
# BLAS dot product over K: only the kernel and its order of additions change.
_SMALL_MNK = 1_000_000
_SMALL_TN_MN = 1200
_SMALL_TN_MIN_K = 32
_SMALL_BLOCK_MULTIPLE = 16
_SMALL_MAX_BLOCKS = 16
_SMALL_KERNEL_CORES = ("skylakex", "cooperlake", "sapphirerapids")


def _core_name():
    """The core type whose kernels the bound OpenBLAS runs (lower case), or None where
    it cannot say (scipy's own BLAS, the fallback, is not asked)."""
    if LIBRARY_PATH is None:
        return None
    try:
        get = ctypes.CDLL(LIBRARY_PATH).scipy_openblas_get_corename
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_char_p
    name = get()
    return name.decode("ascii", "replace").lower() if name else None


CORE_NAME = _core_name()
"""OpenBLAS's core type for the kernels' BLAS ("skylakex", "haswell", ...; None:
unknown). OPENBLAS_CORETYPE overrides OpenBLAS's own choice, and with it this."""


def describe():
    """One line, in words, of what multiplies the kernels' products in this process:
    the OpenBLAS (its library and core type) and whether MKL takes the larger
    products (``MKL_REASON``); for logs and benchmark headers."""
    openblas = (f"OpenBLAS {LIBRARY_PATH} ({CORE_NAME or 'core type unknown'} kernels)"
                if LIBRARY_PATH is not None else "scipy's BLAS")
    if MKL_PATH is None:
        return f"{openblas}; no MKL: {MKL_REASON}"
    if not _mkl_flag.value:
        return f"{openblas}; MKL loaded but switched off (use_mkl(False)): {MKL_REASON}"
    products = "every product" if _mkl_flag.value == 2 else "the larger products"
    return f"{openblas}, and MKL for {products} ({MKL_REASON})"

# Read by compiled code at every call, through a symbol (like the ?gemm functions), so
# that cached kernels follow the library loaded in this process, and benchmarks and
# tests can compare both ways in one process (``use_small_kernels``).
_small_kernels_flag = ctypes.c_int32(CORE_NAME in _SMALL_KERNEL_CORES)
llvm.add_symbol("fastbp_blas_small_kernels", ctypes.addressof(_small_kernels_flag))


def use_small_kernels(enabled=None):
    """Whether ``gemm`` cuts products into blocks for OpenBLAS's small-matrix kernels;
    ``enabled`` (True or False; any value is taken for its truth) sets it for this
    process first, for every thread and for kernels already compiled. The default is on where
    OpenBLAS runs its SkylakeX-family kernels (``CORE_NAME``), the only x86 ones with
    small-matrix kernels. Returns the setting now in force."""
    if enabled is not None:
        _small_kernels_flag.value = bool(enabled)
    return bool(_small_kernels_flag.value)


@intrinsic
def _small_kernels_on(typingctx):
    """``use_small_kernels()``, read from compiled code."""
    def codegen(context, builder, signature, args):
        flag = _external_int32(builder.module, "fastbp_blas_small_kernels")
        zero = ir.Constant(ir.IntType(32), 0)
        return builder.icmp_signed("!=", builder.load(flag), zero)
    return types.boolean(), codegen


def _external_int32(module, name):
    """The module's declaration of the external int32 global ``name``."""
    if name in module.globals:
        return module.globals[name]
    var = ir.GlobalVariable(module, ir.IntType(32), name)
    var.linkage = "external"
    return var


# -- MKL for the larger products ---------------------------------------------------------
# Where MKL is bound (kernels/cpu/mkl.py), it multiplies a product (or a thread's block
# of one) whose every dimension is at least 32 and which has at least 2**19
# multiply-adds. From `benchmarks/mkl_products.py` (both libraries called as the kernels
# call them, one thread; two runs, benchmarks/README.md "MKL for the larger products"):
# MKL's time over OpenBLAS's on the products of medium's and large's layers and their
# halves 0.78-1.01 (most under 0.95), of deep's and mnist's 0.57-1.07 (most under 0.95);
# below the line, tiny's weight and input gradients and the 10-wide output layers'
# products mostly 1.0-1.34, where OpenBLAS's small-matrix kernels run. Near the line the
# ratio moves from run to run (32 x 128 -> 128: 0.75-1.13), and some products below it
# were faster with MKL (tiny's forward 0.67-0.94, the output layer's weight gradient at
# batch 128 0.68-0.91); giving tiny's forwards to MKL too left its whole step level
# (1.00-1.04 in fresh process pairs), so the line stays simple.
_MKL_MIN_DIM = 32
_MKL_MIN_MNK = 1 << 19

_mkl_flag = ctypes.c_int32(MKL_PATH is not None)
llvm.add_symbol("fastbp_blas_mkl", ctypes.addressof(_mkl_flag))


def use_mkl(enabled=None):
    """Whether ``gemm`` hands the products ``mkl_takes`` picks to MKL; ``enabled`` sets
    it for this process first, for every thread and for kernels already compiled: True
    (the default where MKL is bound, ``MKL_PATH``), False (OpenBLAS for every product),
    or "every" (MKL for every product, whatever ``mkl_takes`` says: for measuring the
    rule, benchmarks/mkl_products.py); other values are taken for their truth, but a
    string other than "every" is a ValueError, as is True or "every" where MKL is not
    bound. Returns the setting now in force (True, False or "every")."""
    if enabled is not None:
        if isinstance(enabled, str) and enabled != "every":
            raise ValueError(f"enabled: expected True, False or 'every', got {enabled!r}")
        mode = 2 if isinstance(enabled, str) else int(bool(enabled))
        if mode and MKL_PATH is None:
            raise ValueError(f"enabled: expected False, since MKL is not used here "
                             f"({MKL_REASON}); got {enabled!r}")
        _mkl_flag.value = mode
    return "every" if _mkl_flag.value == 2 else bool(_mkl_flag.value)


@intrinsic
def _mkl_mode(typingctx):
    """``use_mkl()`` read from compiled code: 0 off, 1 by ``mkl_takes``, 2 every product."""
    def codegen(context, builder, signature, args):
        return builder.load(_external_int32(builder.module, "fastbp_blas_mkl"))
    return types.int32(), codegen


@scalar
def mkl_takes(m, n, k):
    """Whether MKL (where used) multiplies C (m, n) = op(A) op(B), k inner, in either
    orientation: the rule in the comment above this function."""
    return min(m, n, k) >= _MKL_MIN_DIM and m * n * k >= _MKL_MIN_MNK


@scalar
def _small_block(total, limit):
    """The block size along a dimension of ``total`` whose blocks may hold at most
    ``limit``: ``total`` if it fits, else ``limit`` rounded down to a multiple of
    _SMALL_BLOCK_MULTIPLE; 0 where that leaves nothing."""
    if limit >= total:
        return total
    return limit - limit % _SMALL_BLOCK_MULTIPLE


@scalar
def small_blocks(trans_a, trans_b, m, n, k):
    """The cut of C (m, n) = op(A) op(B) (k inner) for OpenBLAS's small-matrix kernels,
    as (along_columns, size): blocks of ``size`` columns of C (along_columns true) or
    rows, each ``size`` wide (the last may be narrower); size 0: no cut (the
    product passes the permit as it is, or no cut into at most 16 blocks passes it),
    and along_columns then means nothing. The plan alone: ``gemm`` follows it only
    while ``use_small_kernels()`` is on. The permit and the limits are in the comment
    above this function in kernels/cpu/blas.py."""
    # BLAS sees the column-major C^T = op(B)^T op(A)^T: M = n, N = m, transa = trans_b
    if trans_a and trans_b:
        return True, 0
    tn = trans_b and not trans_a
    if tn and k < _SMALL_TN_MIN_K:
        return True, 0
    mn_limit = _SMALL_TN_MN if tn else m * n
    if m * n <= mn_limit and m * n * k <= _SMALL_MNK:
        return True, 0
    cols = _small_block(n, min(mn_limit // max(m, 1), _SMALL_MNK // max(m * k, 1)))
    rows = _small_block(m, min(mn_limit // max(n, 1), _SMALL_MNK // max(n * k, 1)))
    n_cols = (n + cols - 1) // cols if cols > 0 else _SMALL_MAX_BLOCKS + 1
    n_rows = (m + rows - 1) // rows if rows > 0 else _SMALL_MAX_BLOCKS + 1
    if min(n_cols, n_rows) > _SMALL_MAX_BLOCKS:
        return True, 0
    if n_cols <= n_rows:
        return True, cols
    return False, rows


@scalar
def _leading_dimension(M):
    """BLAS's leading dimension of the row-major matrix M: its row stride in elements,
    or its row length when it has a single row (whose stride is arbitrary)."""
    if M.shape[0] > 1:
        return max(M.strides[0] // M.itemsize, 1)
    return max(M.shape[1], 1)


@serial
def _gemm_blocks(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, item):
    """``gemm`` on raw operands: A, B, C at addresses a, b, c with row strides lda, ldb,
    ldc (elements of ``item`` bytes: 4 float32, else float64): whole by MKL where
    ``use_mkl()`` is "every", or True and ``mkl_takes`` says so; else by OpenBLAS, in
    the blocks ``small_blocks`` gives where ``use_small_kernels()`` is on.

    One compiled function for every caller, not inlined into them: the kernels call
    gemm in many places and specialisations, and as inlined code this loop cost a cold
    training step 6-8 s more to compile."""
    mode = _mkl_mode()
    large = mode == 2 or (mode == 1 and mkl_takes(m, n, k))
    along_columns, size = small_blocks(trans_a, trans_b, m, n, k)
    if large or size == 0 or not _small_kernels_on():
        along_columns, size = True, n
    # A row-major (r, c) matrix is the column-major (c, r) matrix of the same memory,
    # so row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the
    # operands and keep each one's transpose flag.
    ta = _T if trans_a else _N
    tb = _T if trans_b else _N
    # the scalars go by pointer (Fortran BLAS), the same slots for every block
    ta_p, tb_p, k_p = _by_ref(ta), _by_ref(tb), _by_ref(np.int32(k))
    lda_p, ldb_p = _by_ref(np.int32(lda)), _by_ref(np.int32(ldb))
    ldc_p = _by_ref(np.int32(ldc))
    if item == 4:
        alpha_p, beta_p = _by_ref(np.float32(alpha)), _by_ref(np.float32(beta))
    else:
        alpha_p, beta_p = _by_ref(np.float64(alpha)), _by_ref(np.float64(beta))
    total = n if along_columns else m
    for lo in range(0, total, size):
        width = min(size, total - lo)
        if along_columns:   # C[:, lo:lo+width] = op(A) op(B)[:, lo:lo+width]
            a_at, b_at, c_at = 0, (lo * ldb if trans_b else lo), lo
            rows, cols = m, width
        else:               # C[lo:lo+width] = op(A)[lo:lo+width] op(B)
            a_at, b_at, c_at = (lo if trans_a else lo * lda), 0, lo * ldc
            rows, cols = width, n
        cols_p, rows_p = _by_ref(np.int32(cols)), _by_ref(np.int32(rows))
        a_p, b_p = _offset(a, a_at, item), _offset(b, b_at, item)
        c_p = _offset(c, c_at, item)
        if item == 4 and large:
            _sgemm_large(tb_p, ta_p, cols_p, rows_p, k_p, alpha_p, b_p, ldb_p, a_p, lda_p,
                         beta_p, c_p, ldc_p)
        elif item == 4:
            _sgemm(tb_p, ta_p, cols_p, rows_p, k_p, alpha_p, b_p, ldb_p, a_p, lda_p, beta_p,
                   c_p, ldc_p)
        elif large:
            _dgemm_large(tb_p, ta_p, cols_p, rows_p, k_p, alpha_p, b_p, ldb_p, a_p, lda_p,
                         beta_p, c_p, ldc_p)
        else:
            _dgemm(tb_p, ta_p, cols_p, rows_p, k_p, alpha_p, b_p, ldb_p, a_p, lda_p, beta_p,
                   c_p, ldc_p)


@scalar
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """C = alpha * op(A) @ op(B) + beta * C on row-major views (module docstring): by
    MKL where it takes the product, else by OpenBLAS, in blocks for its small-matrix
    kernels where ``small_blocks`` says so."""
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    _gemm_blocks(bool(trans_a), bool(trans_b), m, n, k, float(alpha), _data(A),
                 _leading_dimension(A), _data(B), _leading_dimension(B), float(beta),
                 _data(C), _leading_dimension(C), C.itemsize)
