"""Intel MKL's ?gemm for the kernels' larger products, on Intel CPUs where the ``mkl``
package is installed (``pip install "fastbp[mkl]"``).

Why: on this project's Intel Xeons (AVX-512), MKL's single-threaded sgemm and dgemm,
called from compiled code as the kernels call BLAS, took 0.65-0.95 of OpenBLAS
0.3.34's time on the yardstick's mid-size and large layer products (128 x 784 -> 512
forward 710 against 840 us, 64 x 256 -> 256 weight gradient 58 against 87 us), while
OpenBLAS's small-matrix kernels stay faster on small ones and on the 10-wide output
layers (benchmarks/README.md, "MKL for the larger products"). On the AMD EPYC machines
measured before, MKL was slower than OpenBLAS on most of these shapes, so it is
chosen only on Intel's CPUs unless asked for. kernels/cpu/blas.py decides per product
which library multiplies it (``blas.mkl_takes``).

How it is loaded: ``libmkl_rt`` (MKL's single dynamic library) privately (RTLD_LOCAL,
so no later extension binds its BLAS symbols to it), with the LP64 interface (32-bit
integers, as the kernels pass) and the *sequential* threading layer: the kernels call
BLAS from inside numba's threads, one block each, so MKL must not start threads of
its own (fastbp/threads.py says what two pools on the same cores cost). The threading
layer is a setting of the whole library in the process, so fastbp does not touch an
MKL that something else loaded first (numpy or scipy built against MKL): then the
kernels keep OpenBLAS, and ``REASON`` says so. A library that loads MKL *after*
fastbp shares this one and runs its MKL calls on one thread; ``FASTBP_BLAS=openblas``
keeps fastbp's hands off MKL altogether.

``FASTBP_BLAS`` (read at import): "auto" (default: MKL on Intel CPUs where installed),
"mkl" (MKL on any CPU where it loads), "openblas" (never MKL).
"""
import ctypes
import importlib.metadata
import os
import platform
import sys
import warnings

CHOICES = ("auto", "mkl", "openblas")

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


def _cpu_vendor():
    """The CPU's vendor string ("GenuineIntel", "AuthenticAMD", ...), or "" where it
    cannot be read."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo") as cpuinfo:
                for line in cpuinfo:
                    if line.startswith("vendor_id"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            return ""
        return ""
    return platform.processor()   # Windows: "Intel64 Family 6 Model 143 ..., GenuineIntel"


def _already_loaded(path):
    """Whether the library at ``path`` is already loaded in this process."""
    mode = getattr(os, "RTLD_NOLOAD", None)
    if mode is None:      # Windows: GetModuleHandle would say; err on the safe side
        return False
    try:
        ctypes.CDLL(path, mode=mode | os.RTLD_LAZY)
    except OSError:
        return False
    return True


def choice():
    """``FASTBP_BLAS`` as given (lower case); a ValueError names it where it is none of
    CHOICES."""
    value = os.environ.get("FASTBP_BLAS", "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"FASTBP_BLAS: expected one of {', '.join(CHOICES)}, "
                         f"got {os.environ['FASTBP_BLAS']!r}")
    return value


def bind():
    """({"sgemm": address, "dgemm": address}, path, reason) of MKL's Fortran ?gemm
    (sequential, LP64), or (None, None, reason) where MKL is not used; ``reason`` says
    why in words either way. A FASTBP_BLAS=mkl that cannot be honoured warns
    (RuntimeWarning) and leaves the kernels on OpenBLAS."""
    wanted = choice()
    if wanted == "openblas":
        return None, None, "FASTBP_BLAS=openblas"
    path = _library_path()
    reason = None
    if path is None:
        reason = "the mkl package is not installed"
    elif wanted == "auto" and "intel" not in _cpu_vendor().lower():
        return None, None, (f"CPU vendor {_cpu_vendor() or 'unknown'!r} is not Intel "
                            "(FASTBP_BLAS=mkl would use MKL anyway)")
    elif _already_loaded(path):
        reason = ("MKL was already loaded by another library, whose threading fastbp "
                  "leaves alone")
    if reason is None:
        try:
            lib = ctypes.CDLL(path)
            lib.MKL_Set_Interface_Layer.argtypes = [ctypes.c_int]
            lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
            interface = lib.MKL_Set_Interface_Layer(_INTERFACE_LP64)
            threading_layer = lib.MKL_Set_Threading_Layer(_THREADING_SEQUENTIAL)
            if interface != _INTERFACE_LP64 or threading_layer != _THREADING_SEQUENTIAL:
                reason = (f"MKL kept interface {interface} and threading layer "
                          f"{threading_layer} (LP64 = 0 and sequential = 1 needed)")
            else:
                addresses = {name: ctypes.cast(getattr(lib, f"{name}_"),
                                               ctypes.c_void_p).value
                             for name in ("sgemm", "dgemm")}
                return addresses, path, f"MKL at {path}"
        except (OSError, AttributeError) as error:
            reason = f"MKL did not load ({error})"
    if wanted == "mkl":
        warnings.warn(f"FASTBP_BLAS=mkl: expected MKL's ?gemm for the kernels, but "
                      f"{reason}; they use OpenBLAS", RuntimeWarning, stacklevel=2)
    return None, None, reason
