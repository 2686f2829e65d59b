"""Intel MKL's ?gemm for the kernels' larger products, where asked for
(``FASTBP_BLAS=mkl``) and the ``mkl`` package is installed (``pip install "fastbp[mkl]"``).

Why: on this project's Intel Xeons (AVX-512), MKL's single-threaded sgemm and dgemm,
called from compiled code as the kernels call BLAS, took 0.57-1.07 of OpenBLAS 0.3.34's
time on the yardstick's mid-size and large layer products (most under 0.95), and the
training step 0.85-0.92 of its time at one thread on mnist, medium and deep, while
OpenBLAS's small-matrix kernels stay mostly faster on small products and on the 10-wide
output layers (benchmarks/README.md, "MKL for the larger products"; on the AMD EPYC
machines measured before, MKL was slower on most of these shapes). kernels/cpu/blas.py
decides per product which library multiplies it (``blas.mkl_takes``).

Why only when asked: MKL's single dynamic library, ``libmkl_rt``, is loaded here with
RTLD_LOCAL, but the layers it loads on its first call (libmkl_intel_lp64, libmkl_core,
libmkl_sequential) go into the process's global symbol scope, and MKL's threading
layer is a setting of that whole copy. A library loaded *after* them that calls
unprefixed BLAS, LAPACK or MKL functions binds to these instead, on one thread: one
that exports its own copies and calls them through its symbol table (PyTorch, whose
libtorch_cpu exports ``sgemm_`` and 23,525 ``mkl_*`` functions: imported after a
fastbp step, its 2048 x 2048 float32 product at two threads took 116 ms instead of
59), one linked against a system ``libblas.so.3``, one that loads this same
``libmkl_rt`` (an MKL build of scipy or numexpr), and code that looks such symbols up
at run time. So MKL is opt-in; import such libraries before fastbp when using it
(symbols they bound at load stay theirs).

How it is loaded: LP64 interface (32-bit integers, as the kernels pass) and the
*sequential* threading layer, since the kernels call BLAS from inside numba's threads,
one block each (fastbp/threads.py says what two pools on the same cores cost). An MKL
that something else loaded first (numpy or scipy built against MKL, PyTorch's is
static and not seen) is left alone, because its threading layer is that library's
setting: the kernels then keep OpenBLAS, and ``blas.MKL_REASON`` says so. A 1 x 1 product at
load makes MKL load its layers then, so a broken install fails at import.

``FASTBP_BLAS`` (read at import; case and surrounding blanks ignored, empty is the
default): "openblas" (default) or "mkl".
"""
import ctypes
import importlib.metadata
import os
import sys
import warnings

CHOICES = ("openblas", "mkl")

# mkl_service.h: MKL_INTERFACE_LP64 = 0; MKL_THREADING_SEQUENTIAL = 1
_INTERFACE_LP64 = 0
_THREADING_SEQUENTIAL = 1


def _library_path():
    """Path of the ``mkl`` package's libmkl_rt (Linux .so, Windows mkl_rt.*.dll), found
    through the package's file list (the wheel installs it in the environment's lib/ or
    Library/bin/, not in site-packages); None where the package is not installed."""
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        name = entry.name
        if (name.startswith("libmkl_rt.so") or
                (name.startswith("mkl_rt") and name.endswith(".dll"))):
            path = entry.locate()
            if os.path.exists(path):
                return os.path.realpath(path)
    return None


# names of MKL's single dynamic library and of its core (unversioned, as in MKL 2020
# and before, and the versioned names since), for noticing a copy of any release that
# another library already loaded
_OTHER_COPIES = tuple(f"libmkl_{part}.so{version}" for part in ("rt", "core")
                      for version in ("", ".1", ".2", ".3")) + tuple(
    f"mkl_{part}{version}.dll" for part in ("rt", "core")
    for version in ("", ".1", ".2", ".3"))


def _already_loaded(path):
    """Whether MKL (the library at ``path``, or another copy by one of _OTHER_COPIES'
    names) is already loaded in this process."""
    if sys.platform == "win32":   # a private handle: argtypes set on it stay ours
        handle = ctypes.WinDLL("kernel32").GetModuleHandleW
        handle.argtypes, handle.restype = [ctypes.c_wchar_p], ctypes.c_void_p
        return any(handle(name) for name in (os.path.basename(path),) + _OTHER_COPIES)
    mode = getattr(os, "RTLD_NOLOAD", None)
    if mode is None:
        return False
    for name in (path,) + _OTHER_COPIES:
        try:
            ctypes.CDLL(name, mode=mode | os.RTLD_LAZY)
        except OSError:
            continue
        return True
    return False


def _probe(lib):
    """One 1 x 1 sgemm through ``lib``: MKL loads its layers on its first call, and a
    missing one ends the process from inside the call, so that happens at import
    rather than in the middle of a training step. True where 2 * 3 came out 6."""
    one, n = ctypes.c_int(1), ctypes.c_char(b"N")
    a, b, c = ctypes.c_float(2.0), ctypes.c_float(3.0), ctypes.c_float(0.0)
    alpha, beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
    lib.sgemm_(ctypes.byref(n), ctypes.byref(n), ctypes.byref(one), ctypes.byref(one),
               ctypes.byref(one), ctypes.byref(alpha), ctypes.byref(a), ctypes.byref(one),
               ctypes.byref(b), ctypes.byref(one), ctypes.byref(beta), ctypes.byref(c),
               ctypes.byref(one))
    return c.value == 6.0


def choice():
    """``FASTBP_BLAS`` as given (lower case); a ValueError names it where it is none of
    CHOICES."""
    value = os.environ.get("FASTBP_BLAS", "openblas").strip().lower() or "openblas"
    if value not in CHOICES:
        raise ValueError(f"FASTBP_BLAS: expected one of {', '.join(CHOICES)}, "
                         f"got {os.environ['FASTBP_BLAS']!r}")
    return value


def bind():
    """({"sgemm": address, "dgemm": address}, path, reason) of MKL's Fortran ?gemm
    (sequential, LP64), or (None, None, reason) where MKL is not used; ``reason`` says
    why in words either way. A FASTBP_BLAS=mkl that cannot be honoured warns
    (RuntimeWarning) and leaves the kernels on OpenBLAS."""
    if choice() == "openblas":
        return None, None, "not asked for (FASTBP_BLAS=mkl uses it)"
    path = _library_path()
    if path is None:
        reason = ("the mkl package is not installed (the extra: pip install "
                  "\"fastbp[mkl]\", or \".[mkl]\" in a checkout)")
    elif _already_loaded(path):
        reason = ("MKL was already loaded by another library, whose threading fastbp "
                  "leaves alone")
    else:
        reason = _load(path)
        if isinstance(reason, tuple):
            return reason
    warnings.warn(f"FASTBP_BLAS=mkl: expected MKL's ?gemm for the kernels, but {reason}; "
                  f"they use OpenBLAS", RuntimeWarning, stacklevel=2)
    return None, None, reason


def _load(path):
    """(addresses, path, reason) of the MKL at ``path`` set to LP64 and sequential, or
    the reason in words why it could not be."""
    if sys.platform == "win32":   # its layers sit beside it (the package's Library/bin)
        os.add_dll_directory(os.path.dirname(path))
    try:
        lib = ctypes.CDLL(path)
        lib.MKL_Set_Interface_Layer.argtypes = [ctypes.c_int]
        lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        interface = lib.MKL_Set_Interface_Layer(_INTERFACE_LP64)
        threading_layer = lib.MKL_Set_Threading_Layer(_THREADING_SEQUENTIAL)
        if interface != _INTERFACE_LP64 or threading_layer != _THREADING_SEQUENTIAL:
            return (f"MKL kept interface {interface} and threading layer "
                    f"{threading_layer} (LP64 = 0 and sequential = 1 needed)")
        if not _probe(lib):
            return "MKL's sgemm multiplied 2 by 3 wrong"
        addresses = {name: ctypes.cast(getattr(lib, f"{name}_"), ctypes.c_void_p).value
                     for name in ("sgemm", "dgemm")}
    except (OSError, AttributeError) as error:
        return f"MKL did not load ({error})"
    return addresses, path, f"MKL at {path}"
