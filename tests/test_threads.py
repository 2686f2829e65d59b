"""fastbp.set_num_threads / get_num_threads, and which BLAS the CPU kernels call.

The kernels call single-threaded ?gemm from inside numba's threads (kernels/cpu/blas.py,
fastbp/threads.py): the library they call must stay at one thread whatever the user
asks for, while the other BLAS copies in the process follow ``set_num_threads``.
"""
import ctypes
import importlib.metadata
import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastbp
from fastbp.kernels.cpu import blas

needs_two = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                               reason="numba's pool has one thread here")


def _blas_threads():
    """{real path: threads} of every BLAS threadpoolctl sees in this process."""
    return {os.path.realpath(i["filepath"]): i["num_threads"]
            for i in threadpool_info() if i["user_api"] == "blas"}


def _kernels_paths():
    """The kernels' BLAS and, where it is used and threadpoolctl sees it, their MKL
    (sequential: 1 thread; threadpoolctl sees MKL's single dynamic library, which
    fastbp loads on Windows, not the layers it loads privately on Linux)."""
    mkl = {blas.MKL_PATH} & set(_blas_threads()) if blas.MKL_PATH else set()
    return {_kernels_blas_path()} | mkl


def _kernels_blas_path():
    if blas.LIBRARY_PATH is not None:
        return os.path.realpath(blas.LIBRARY_PATH)
    import scipy   # its wheels keep OpenBLAS in scipy.libs/ (Linux) or scipy/.dylibs/
    scipy_dir = os.path.realpath(os.path.dirname(scipy.__file__))
    return next(p for p in _blas_threads()
                if p.startswith((scipy_dir + os.sep, scipy_dir + ".libs" + os.sep)))


def _package_library():
    """The shared library the scipy-openblas32 distribution installed, from its own
    file list (not from fastbp's lookup); None when it is not installed."""
    try:
        files = importlib.metadata.files("scipy-openblas32") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    suffix = {"win32": ".dll", "darwin": ".dylib"}.get(sys.platform, ".so")
    found = [f for f in files if f.name.startswith(("libscipy_openblas", "scipy_openblas"))
             and f.name.endswith(suffix)]
    return os.path.realpath(found[0].locate()) if found else None


def test_kernels_call_scipy_openblas32_where_it_is_installed():
    expected = _package_library()
    if expected is None:
        pytest.skip("scipy-openblas32 is not installed here: the kernels use scipy's BLAS")
    assert blas.LIBRARY_PATH is not None
    assert os.path.realpath(blas.LIBRARY_PATH) == expected
    # the functions the kernels call are that library's own (loading an already loaded
    # library again returns the same handle, so the same addresses)
    lib = ctypes.CDLL(expected)
    for name in ("sgemm", "dgemm"):
        own = ctypes.cast(getattr(lib, f"scipy_{name}_"), ctypes.c_void_p).value
        assert blas._ADDRESSES[name] == own, name


_AT_IMPORT = """
import os, sys
import fastbp
from fastbp.kernels.cpu import blas
from threadpoolctl import threadpool_info
assert "scipy_openblas32" not in sys.modules   # imported, it would load RTLD_GLOBAL
path = os.path.realpath(blas.LIBRARY_PATH)
print([i["num_threads"] for i in threadpool_info() if os.path.realpath(i["filepath"]) == path])
"""


def test_the_kernels_blas_is_at_one_thread_right_after_import():
    if _package_library() is None:
        pytest.skip("scipy-openblas32 is not installed here")
    result = subprocess.run([sys.executable, "-c", _AT_IMPORT], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[1]"


def test_import_loads_neither_threadpoolctl_nor_scipy_linalg():
    """Where fastbp loaded its BLAS itself, import sets it through its own handle and
    loads nothing else for that (0.17 s of a 0.6 s import here); the test above checks
    the thread count that leaves."""
    if _package_library() is None:
        pytest.skip("scipy-openblas32 is not installed here")
    script = ("import sys, fastbp; "
              "print(sorted(m for m in ('scipy.linalg', 'threadpoolctl') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


# Records both spin settings at the moment numpy is first imported, then imports
# fastbp (which imports numpy: the pools read them when their libraries load), then
# asks numpy's OpenBLAS what it read (None where numpy's BLAS is not an OpenBLAS that
# exports openblas_thread_timeout).
_SPIN_AT_NUMPY = """
import os, sys
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" and not seen:
            seen.append((os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
                         os.environ.get("GOMP_SPINCOUNT")))
        return None
sys.meta_path.insert(0, Watch())
import fastbp
from fastbp.threads import numpy_openblas_thread_timeout
assert seen, "numpy was imported before the watch was installed"
print(seen[0], numpy_openblas_thread_timeout())
"""


@pytest.mark.parametrize("user, expected", [
    ({}, ("('20', '10000')", "20")),
    ({"OPENBLAS_THREAD_TIMEOUT": "28", "GOMP_SPINCOUNT": "infinite"},
     ("('28', 'infinite')", "28"))])
def test_pools_spin_briefly_unless_the_user_says_otherwise(user, expected):
    """fastbp sets OPENBLAS_THREAD_TIMEOUT and GOMP_SPINCOUNT before it imports numpy
    (so numpy's OpenBLAS, when fastbp comes first, and numba's pool read them), and
    leaves values the user set; benchmarks/pools_beside.py measures why."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "GOMP_SPINCOUNT")}
    env.update(user)
    result = subprocess.run([sys.executable, "-c", _SPIN_AT_NUMPY], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    at_numpy, read = result.stdout.strip().rsplit(" ", 1)
    assert at_numpy == expected[0]
    if read == "None":
        pytest.skip("numpy's BLAS does not say which timeout it read (not OpenBLAS, "
                    "or no openblas_thread_timeout)")
    assert read == expected[1]


@needs_two
def test_the_kernels_blas_stays_at_one_thread_while_another_thread_holds_the_limits():
    """A thread that called threadpool_limits (without ``with``) holds threadpoolctl's
    OpenBLAS claim, and threadpoolctl then ignores fastbp's settings from other
    threads; the kernels' library is still set to one thread through its own
    handle."""
    if blas.LIBRARY_PATH is None:
        pytest.skip("the kernels call scipy's BLAS here: no handle of fastbp's own")
    from threadpoolctl import OpenBLASController, threadpool_limits
    claimed, done = threading.Event(), threading.Event()

    def hold_the_claim():   # threadpoolctl ignores the claim of a thread that ended
        threadpool_limits(limits=2, user_api="blas")
        claimed.set()
        done.wait(60)
    claim = threading.Thread(target=hold_the_claim)
    try:
        claim.start()
        assert claimed.wait(60)
        assert _blas_threads()[_kernels_blas_path()] == 2
        fastbp.set_num_threads(1)
        assert _blas_threads()[_kernels_blas_path()] == 1
    finally:
        done.set()
        claim.join()
        OpenBLASController.clear_controlling_thread(force=True)
        fastbp.set_num_threads(numba.get_num_threads())


def _glibc():
    import platform
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="LD_DEBUG is glibc's dynamic loader's")
def test_scipy_keeps_its_own_blas_after_import_fastbp():
    """fastbp loads the package's library privately: scipy.linalg, loaded after it,
    still binds its BLAS symbols to scipy's own OpenBLAS, which set_num_threads sizes
    for the user (loaded RTLD_GLOBAL it would take them over, at one thread)."""
    package = _package_library()
    if package is None:
        pytest.skip("scipy-openblas32 is not installed here")
    env = dict(os.environ, LD_DEBUG="bindings")
    result = subprocess.run([sys.executable, "-c", "import fastbp, scipy.linalg"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    gemm = [line for line in result.stderr.splitlines()
            if "normal symbol `scipy_dgemm_'" in line and "scipy/linalg" in line]
    if not gemm:
        pytest.skip("this scipy does not call scipy_dgemm_ (not a scipy-openblas build)")
    # the package's library as any path to it ends: .../scipy_openblas32/lib/<file>
    tail = os.sep.join(("scipy_openblas32", "lib", os.path.basename(package)))
    into_package = [line for line in gemm if tail in line]
    assert not into_package, into_package[:3]


@needs_two
def test_set_num_threads_keeps_the_kernels_blas_at_one_thread():
    before, _ = fastbp.get_num_threads()
    try:
        fastbp.set_num_threads(2)
        threads, libraries = fastbp.get_num_threads()
        assert threads == 2 == numba.get_num_threads()
        seen = _blas_threads()
        assert all(seen[p] == 1 for p in _kernels_paths())
        others = {p: n for p, n in seen.items() if p not in _kernels_paths()}
        assert others, "numpy's own BLAS should be visible beside the kernels'"
        assert all(n == 2 for n in others.values()), others
        assert {os.path.realpath(p): n for p, n in libraries.items()} == seen
        fastbp.set_num_threads(1)
        seen = _blas_threads()
        assert all(seen[p] == 1 for p in _kernels_paths())
        assert all(n == 1 for n in seen.values()), seen
    finally:
        fastbp.set_num_threads(before)


@needs_two
def test_set_num_threads_from_another_thread_sets_the_other_blas():
    """The BLAS settings of set_num_threads apply to the process from whichever
    thread calls it (threadpoolctl 3.8 lets only the thread holding its claim set
    OpenBLAS limits; fastbp releases the claim after each setting). numba's own count
    is per thread by numba's design and is not checked here."""
    before, _ = fastbp.get_num_threads()
    errors = []

    def set_in_thread(n):
        try:
            fastbp.set_num_threads(n)
        except Exception as exc:   # reported below, not lost in the thread
            errors.append(exc)
    try:
        fastbp.set_num_threads(2)
        for n in (1, 2):
            worker = threading.Thread(target=set_in_thread, args=(n,))
            worker.start()
            worker.join()
            assert not errors, errors
            seen = _blas_threads()
            assert all(seen[p] == 1 for p in _kernels_paths())
            others = {p: t for p, t in seen.items() if p not in _kernels_paths()}
            assert all(t == n for t in others.values()), (n, others)
    finally:
        fastbp.set_num_threads(before)


@pytest.mark.parametrize("n, message", [
    (0, r"^n: expected a positive integer, got 0$"),
    (-1, r"^n: expected a positive integer, got -1$"),
    (numba.config.NUMBA_NUM_THREADS + 1,
     rf"^n: expected at most NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} "
     rf"threads, got {numba.config.NUMBA_NUM_THREADS + 1}$")])
def test_set_num_threads_rejects_counts_outside_the_pool(n, message):
    before = numba.get_num_threads()
    with pytest.raises(ValueError, match=message):
        fastbp.set_num_threads(n)
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_through_the_bound_library_matches_float64_numpy(dtype):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((37, 53)).astype(dtype)
    B = rng.standard_normal((29, 53)).astype(dtype)
    C = rng.standard_normal((37, 29)).astype(dtype)
    expected = 0.5 * A.astype(np.float64) @ B.astype(np.float64).T + 2.0 * C
    blas.gemm(False, True, 0.5, A, B, 2.0, C)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(C, expected, rtol=tol, atol=tol * 10)


_FALLBACK = """
import sys
sys.modules["scipy_openblas32"] = None      # as if the package were not installed
import numpy as np
import fastbp
from fastbp.kernels.cpu import blas
assert blas.LIBRARY_PATH is None, blas.LIBRARY_PATH
rng = np.random.default_rng(0)
X = rng.standard_normal((16, 8))
net = fastbp.MLP([8, 5, 3], activation="tanh", seed=0, dtype="float64")
first, second = net.layers
expected = np.tanh(X @ first.W.T + first.b) @ second.W.T + second.b
np.testing.assert_allclose(net.forward(X), expected, rtol=1e-12, atol=1e-12)
print("ok")
"""


def test_scipy_blas_is_the_fallback_without_scipy_openblas32():
    """Without the package the kernels bind scipy's own BLAS and still compute right.
    (That the same on-disk cache serves both libraries, since the kernels call the
    functions by name, was checked by hand, not here.)"""
    result = subprocess.run([sys.executable, "-c", _FALLBACK], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
