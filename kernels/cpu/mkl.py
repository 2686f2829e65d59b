"""Intel MKL's ?gemm for the kernels' larger products, where the ``mkl`` package is
installed (``pip install "fastbp[mkl]"``) on an Intel CPU under Linux, or wherever
``FASTBP_BLAS=mkl`` asks for it.

Why: on this project's Intel Xeons (AVX-512), MKL's single-threaded sgemm and dgemm,
called from compiled code as the kernels call BLAS, took 0.57-1.07 of OpenBLAS 0.3.34's
time on the yardstick's mid-size and large layer products (most under 0.95), and the
training step 0.85-0.92 of its time at one thread on mnist, medium and deep, while
OpenBLAS's small-matrix kernels stay mostly faster on small products and on the 10-wide
output layers (benchmarks/README.md, "MKL for the larger products"; on the AMD EPYC
machines measured before, MKL was slower on most of these shapes, so other vendors'
CPUs keep OpenBLAS unless asked). kernels/cpu/blas.py decides per product which library
multiplies it (``blas.mkl_takes``).

How it is loaded, on Linux: the package's three layers, libmkl_intel_lp64 (LP64: the
32-bit integers the kernels pass), libmkl_sequential (the kernels call BLAS from inside
numba's threads, one block each; fastbp/threads.py says what two pools on the same
cores cost) and libmkl_core, into a symbol scope of their own
(kernels/cpu/private_scope.py), bound at load. MKL's own loader, libmkl_rt, puts the
layers in the process's global scope instead, where a library loaded later binds to
them: PyTorch, which exports its own ``sgemm_``, ran its 2048 x 2048 float32 product on
fastbp's single-threaded MKL, 116 ms instead of 59 (at two threads), when imported
after a fastbp step. Loaded privately, nothing of MKL's is visible to other libraries.
One case remains: a library that loads *this same* MKL later, through libmkl_rt (an MKL
build of numpy, scipy or numexpr, mkl-service, mkl_fft, mkl_random, from the same
environment), is given the already-loaded libmkl_core, bound to the sequential layer,
so its products run on one thread (a 2048 x 2048 product at two threads: 105 ms
instead of 54). ``FASTBP_BLAS=openblas`` keeps MKL out for such a process; where such a
library is loaded before fastbp, fastbp sees it and keeps OpenBLAS.

An MKL that something else loaded first (numpy or scipy built against MKL, by file name
or by its functions in the global scope; PyTorch's is static and private) is left alone,
because its threading layer is that library's setting and the layers of two copies
would bind to each other: the kernels then keep OpenBLAS, and ``blas.MKL_REASON`` says
so. Its CPU-specific BLAS libraries are loaded with the layers, and a 1 x 1 product at
load makes it load whatever else it wants (its vector-math library) then, so a broken
install fails at import rather than in a training step. On Windows, where
``FASTBP_BLAS=mkl`` must ask for it, the single dynamic library ``mkl_rt`` is loaded
and set to LP64 and sequential (Windows has no global symbol scope; a later user of the
same DLL shares its threading setting).

``FASTBP_BLAS`` (read at import; case and surrounding blanks ignored, empty is the
default): "auto" (default: MKL where the package is installed, the CPU is Intel's and
the system is Linux), "openblas" (never MKL) or "mkl" (MKL wherever it can be loaded;
a warning where it cannot).
"""
import ctypes
import importlib.metadata
import os
import re
import sys
import warnings

from . import private_scope

CHOICES = ("auto", "openblas", "mkl")

# mkl_service.h: MKL_INTERFACE_LP64 = 0; MKL_THREADING_SEQUENTIAL = 1
_INTERFACE_LP64 = 0
_THREADING_SEQUENTIAL = 1

# the layers loaded privately on Linux, in the order a program links them
_LAYERS = ("intel_lp64", "sequential", "core")
# libmkl_core's CPU-specific BLAS libraries (libmkl_def, _mc3, _avx2, _avx512, _avx10 in
# 2026.2), which it would load itself at its first product, when another MKL may be in
# the global scope: listed after the layers (those the package has, found by this
# pattern), so that they are bound at load in the private scope. They define no names
# in common. Not the vector-math ones (libmkl_vml_*): they share thousands of names, and
# listed together each bound to the first-listed one's (the review's LD_DEBUG=bindings);
# fastbp calls no vector math, and libmkl_core loads the one for this CPU by itself.
_CPU_LIBRARY = re.compile(r"libmkl_(def|mc3|avx\w*)\.so")


def _package_file(accept):
    """Real path of the first file of the ``mkl`` package for which ``accept(name)``
    holds and that exists, found through the package's file list (the wheel installs
    its libraries in the environment's lib/ or Library/bin/, not in site-packages);
    None where there is none or the package is not installed."""
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if accept(entry.name):
            path = entry.locate()
            if os.path.exists(path):
                return os.path.realpath(path)
    return None


def _library_path():
    """Path of the ``mkl`` package's single dynamic library, libmkl_rt (Linux .so,
    Windows mkl_rt.*.dll); None where the package is not installed."""
    return _package_file(lambda name: name.startswith("libmkl_rt.so") or (
        name.startswith("mkl_rt") and name.endswith(".dll")))


def _layer_paths():
    """Paths of the package's _LAYERS (libmkl_intel_lp64.so.N, libmkl_sequential.so.N,
    libmkl_core.so.N, of one release N, beside libmkl_rt), then of its CPU-specific
    BLAS libraries of that release (``_CPU_LIBRARY``), or None where a layer is
    missing."""
    rt = _library_path()
    if rt is None or not os.path.basename(rt).startswith("libmkl_rt.so"):
        return None
    version = os.path.basename(rt)[len("libmkl_rt.so"):]   # ".3", or "" before 2021
    folder = os.path.dirname(rt)
    layers = [os.path.join(folder, f"libmkl_{name}.so{version}") for name in _LAYERS]
    if not all(os.path.exists(path) for path in layers):
        return None
    cpu = sorted(name for name in os.listdir(folder)
                 if _CPU_LIBRARY.fullmatch(name[:len(name) - len(version)])
                 and name.endswith(".so" + version))
    return layers + [os.path.join(folder, name) for name in cpu]


def _cpu_vendor():
    """The CPU's vendor string (/proc/cpuinfo's vendor_id: "GenuineIntel",
    "AuthenticAMD", ...), or None where it is not to be had."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


# names of MKL's single dynamic library and of its layers (unversioned, as in MKL 2020
# and before, and the versioned names since), for noticing a copy of any release that
# another library already loaded
_OTHER_COPIES = tuple(f"libmkl_{part}.so{version}" for part in ("rt",) + _LAYERS
                      for version in ("", ".1", ".2", ".3")) + tuple(
    f"mkl_{part}{version}.dll" for part in ("rt", "core")
    for version in ("", ".1", ".2", ".3"))

# functions that MKL's layers define and call each other through (intel_lp64's
# MKL_Get_Max_Threads, sequential's thread counts, core's lock and CPU detection, the
# products'): the private scope is searched after the global one, so where
# another copy of MKL has put these in the global scope, the layers loaded here would
# bind to that copy's. A real copy exports thousands of such names (PyTorch's static
# one, 23,525 when loaded RTLD_GLOBAL); a library that exported a few other MKL
# functions alone would go unseen.
_MKL_FUNCTIONS = ("mkl_blas_sgemm", "mkl_blas_dgemm", "mkl_serv_lock",
                  "mkl_serv_cpu_detect", "mkl_serv_get_max_threads",
                  "mkl_serv_domain_get_max_threads", "MKL_Get_Max_Threads")


def _already_loaded(paths):
    """Whether MKL (a library at one of ``paths``, another copy by one of
    _OTHER_COPIES' names, or any copy whose _MKL_FUNCTIONS the global scope holds) is
    already loaded in this process."""
    if sys.platform == "win32":   # a private handle: argtypes set on it stay ours
        handle = ctypes.WinDLL("kernel32").GetModuleHandleW
        handle.argtypes, handle.restype = [ctypes.c_wchar_p], ctypes.c_void_p
        return any(handle(name) for name in
                   tuple(os.path.basename(path) for path in paths) + _OTHER_COPIES)
    everything = ctypes.CDLL(None)
    return (any(hasattr(everything, name) for name in _MKL_FUNCTIONS)
            or any(private_scope.is_loaded(name) for name in tuple(paths) + _OTHER_COPIES))


def _probe(lib):
    """One 1 x 1 sgemm through ``lib``: MKL loads what else it needs on its first
    call, and a missing library ends the process from inside the call, so that
    happens at import rather than in the middle of a training step. True where 2 * 3
    came out 6."""
    one, n = ctypes.c_int(1), ctypes.c_char(b"N")
    a, b, c = ctypes.c_float(2.0), ctypes.c_float(3.0), ctypes.c_float(0.0)
    alpha, beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
    lib.sgemm_(ctypes.byref(n), ctypes.byref(n), ctypes.byref(one), ctypes.byref(one),
               ctypes.byref(one), ctypes.byref(alpha), ctypes.byref(a), ctypes.byref(one),
               ctypes.byref(b), ctypes.byref(one), ctypes.byref(beta), ctypes.byref(c),
               ctypes.byref(one))
    return c.value == 6.0


def choice():
    """``FASTBP_BLAS`` as given (lower case; "auto" where unset or blank); a ValueError
    names it where it is none of CHOICES."""
    value = os.environ.get("FASTBP_BLAS", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"FASTBP_BLAS: expected one of {', '.join(CHOICES)}, "
                         f"got {os.environ['FASTBP_BLAS']!r}")
    return value


def auto_declines(vendor, platform):
    """Why FASTBP_BLAS=auto keeps OpenBLAS on a CPU of ``vendor`` (``_cpu_vendor()``)
    under ``platform`` (``sys.platform``), in words; None where it takes MKL."""
    if not platform.startswith("linux"):
        return (f"FASTBP_BLAS=auto uses it on Linux only, where it loads in a symbol "
                f"scope of its own (this is {platform}; FASTBP_BLAS=mkl uses it)")
    if vendor != "GenuineIntel":
        return (f"FASTBP_BLAS=auto uses it on Intel CPUs only (this one is "
                f"{vendor or 'of an unknown vendor'}; on AMD's EPYC MKL was measured "
                f"slower than OpenBLAS on most of the kernels' products; FASTBP_BLAS=mkl "
                f"uses it)")
    return None


LOADED = None
"""The ctypes handle of the MKL the kernels use (its layers, or mkl_rt on Windows),
or None."""


def bind():
    """({"sgemm": address, "dgemm": address}, path, reason) of MKL's Fortran ?gemm
    (sequential, LP64), or (None, None, reason) where MKL is not used; ``path`` is the
    library that holds the products (libmkl_core, or mkl_rt on Windows) and ``reason``
    says why in words either way. A FASTBP_BLAS=mkl that cannot be honoured warns
    (RuntimeWarning) and leaves the kernels on OpenBLAS."""
    asked = choice()
    if asked == "openblas":
        return None, None, "FASTBP_BLAS=openblas keeps it out"
    if sys.platform == "win32":
        rt = _library_path()
        paths = [rt] if rt else None
    else:
        paths = _layer_paths()
    declined = None if asked == "mkl" else auto_declines(_cpu_vendor(), sys.platform)
    if paths is None:
        reason = ("the mkl package is not installed (the extra: pip install "
                  "\"fastbp[mkl]\", or \".[mkl]\" in a checkout)")
    elif declined is not None:
        reason = declined
    elif _already_loaded(paths):
        reason = ("MKL was already loaded by another library, whose threading fastbp "
                  "leaves alone")
    else:
        loaded = _load(paths)
        if isinstance(loaded, tuple):
            addresses, path, where = loaded
            why = ("FASTBP_BLAS=mkl" if asked == "mkl" else "FASTBP_BLAS=auto: the mkl "
                   "package is installed, on an Intel CPU under Linux")
            return addresses, path, f"{where}; {why}"
        reason = loaded
    if asked == "mkl":
        warnings.warn(f"FASTBP_BLAS=mkl: expected MKL's ?gemm for the kernels, but "
                      f"{reason}; they use OpenBLAS", RuntimeWarning, stacklevel=2)
    return None, None, reason


def _load(paths):
    """(addresses, path, reason) of the MKL at ``paths`` (its layers; mkl_rt on
    Windows), LP64 and sequential, or the reason in words why it could not be."""
    global LOADED
    try:
        if sys.platform == "win32":
            lib = _load_mkl_rt(paths[0])
            if isinstance(lib, str):
                return lib
        else:
            lib = private_scope.load(paths)
        if not _probe(lib):
            return "MKL's sgemm multiplied 2 by 3 wrong"
        addresses = {name: ctypes.cast(getattr(lib, f"{name}_"), ctypes.c_void_p).value
                     for name in ("sgemm", "dgemm")}
    except (OSError, AttributeError, RuntimeError) as error:
        return f"MKL did not load ({error})"
    LOADED = lib
    if sys.platform == "win32":
        return addresses, paths[0], f"MKL at {paths[0]}"
    core = paths[len(_LAYERS) - 1]
    return addresses, core, f"MKL at {core}, in a symbol scope of its own"


def _load_mkl_rt(path):
    """MKL's single dynamic library at ``path`` (Windows), set to LP64 and sequential;
    a reason in words where it keeps other settings."""
    os.add_dll_directory(os.path.dirname(path))   # its layers sit beside it
    lib = ctypes.CDLL(path)
    lib.MKL_Set_Interface_Layer.argtypes = [ctypes.c_int]
    lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
    interface = lib.MKL_Set_Interface_Layer(_INTERFACE_LP64)
    threading_layer = lib.MKL_Set_Threading_Layer(_THREADING_SEQUENTIAL)
    if interface != _INTERFACE_LP64 or threading_layer != _THREADING_SEQUENTIAL:
        return (f"MKL kept interface {interface} and threading layer "
                f"{threading_layer} (LP64 = 0 and sequential = 1 needed)")
    return lib
