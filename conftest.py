"""Root conftest: decide, before anything imports numba, whether the CUDA tests run on a
real GPU or in numba's CUDA simulator.

NUMBA_ENABLE_CUDASIM must be set before ``import numba`` (numba reads it once, when it
is first imported, not when numba.cuda is), so this file only touches os.environ and
imports nothing heavy. The rule:

- NUMBA_ENABLE_CUDASIM already set by the caller: left as it is.
- FASTBP_TEST_REAL_GPU=1: real GPU (tests fail loudly if it cannot be used).
- FASTBP_TEST_REAL_GPU=0: simulator.
- otherwise: real GPU when ``nvidia-smi -L`` lists one and the numba-cuda package is
  installed (pip install -e ".[cuda]"), else the simulator.

The CUDA tests are the same either way (tiny ragged shapes).

In the simulator, each CUDA thread of a block is a Python thread, and the thread that
runs the block polls them in a loop that holds the GIL until the interpreter's switch
interval (5 ms by default) forces it to let one of them run to its next syncthreads():
a block of n threads then takes about n x 5 ms per barrier, almost all of it waiting.
SIMULATOR_SWITCH_INTERVAL_S lets them run at once. The same threads run the same code
between the same barriers (fastbp's kernels have no races and no floating-point atomics),
so every result is the same, only sooner (ten times faster here:
tests/test_cuda_kernels.py and test_cuda_fused.py 86 s -> 10 s, measured 2026-11-30).
Threads switched that often also hit a race in the simulator itself (how it makes a
block's shared arrays: _FirstAllocationLocked), so the interval is lowered only once
that is locked.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

SIMULATOR_SWITCH_INTERVAL_S = 1e-4


def _real_gpu_usable():
    flag = os.environ.get("FASTBP_TEST_REAL_GPU", "").strip()
    if flag in ("1", "0"):
        return flag == "1"
    if importlib.util.find_spec("numba_cuda") is None or shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


if "NUMBA_ENABLE_CUDASIM" not in os.environ:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "0" if _real_gpu_usable() else "1"


class _FirstAllocationLocked(dict):
    """numba-cuda's simulator keeps a block's shared arrays in a dict keyed by the
    source line that asks for one, and its first thread to ask makes it: ``get`` the
    key, on a miss make the array and store it (FakeCUDAShared.array, numba-cuda 0.30),
    with no lock. A thread switched out between the two lets a second thread make an
    array of its own, and the block's threads then write to different arrays (seen with
    a 1 ms sleep put between them). This dict holds a lock from a missing ``get`` to
    the store that follows, so the other threads wait for the one array."""

    def __init__(self):
        super().__init__()
        self._lock = __import__("threading").Lock()

    def get(self, key, default=None):
        self._lock.acquire()
        if key in self:
            self._lock.release()
            return self[key]
        return default   # held until __setitem__ stores the new array

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if self._lock.locked():
            self._lock.release()


def _lock_simulator_shared_arrays():
    """Install _FirstAllocationLocked in the simulator; False when its shared arrays are
    not made as described there (another numba-cuda), so the switch interval stays."""
    try:
        from numba.cuda.simulator import kernelapi
        shared = kernelapi.FakeCUDAShared
        if not isinstance(shared(0)._allocations, dict):
            return False
    except (ImportError, AttributeError, TypeError):
        return False
    init = shared.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._allocations = _FirstAllocationLocked()
    shared.__init__ = __init__
    return True


if os.environ["NUMBA_ENABLE_CUDASIM"] == "1" and _lock_simulator_shared_arrays():
    sys.setswitchinterval(SIMULATOR_SWITCH_INTERVAL_S)


def pytest_report_header(config):
    mode = "simulator" if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else "real GPU"
    return f"fastbp CUDA tests: {mode} (NUMBA_ENABLE_CUDASIM={os.environ['NUMBA_ENABLE_CUDASIM']})"


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts) means at most two workers: the suite's time is
    mostly numba compiling kernels, one function at a time per process, and more
    workers than two would compile the same kernels again (tests/conftest.py,
    pytest_collection_finish, splits the shared ones between two)."""
    return min(2, os.cpu_count() or 1)
