"""Root conftest: decide, before anything imports numba, whether the CUDA tests run on a
real GPU or in numba's CUDA simulator.

NUMBA_ENABLE_CUDASIM must be set before ``import numba`` (numba reads it once, when it
is first imported, not when numba.cuda is), so this file only touches os.environ and
imports nothing heavy. The rule:

- NUMBA_ENABLE_CUDASIM already set by the caller: left as it is.
- FASTBP_TEST_REAL_GPU=1: real GPU; the run stops at its start, saying why, if fastbp
  cannot use one (pytest_sessionstart below).
- FASTBP_TEST_REAL_GPU=0: simulator.
- otherwise: real GPU when ``nvidia-smi -L`` lists one and the numba-cuda package is
  installed (pip install -e ".[cuda]"), else the simulator.

The CUDA tests are the same either way (tiny ragged shapes).

In the simulator, each CUDA thread of a block is a Python thread; tests/cuda_simulator.py
makes numba-cuda's simulator run them without polling (and fixes a race of its own), and
is installed here for the test processes.
"""
import importlib.util
import os
import shutil
import subprocess
import sys


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


# numba's thread pool is GNU OpenMP's here, whose idle threads spin after each parallel
# region before they sleep: with two workers on two cores, one worker's spinning took
# the core the other was compiling on. Sleeping at once: set before numba loads
# libgomp, and inherited by the workers and every process the tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")


def _speed_up_simulator():
    """tests/cuda_simulator.py's speed_up(), loaded by path (tests/ is not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests",
                        "cuda_simulator.py")
    spec = importlib.util.spec_from_file_location("fastbp_tests_cuda_simulator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.speed_up()


if os.environ["NUMBA_ENABLE_CUDASIM"] == "1":
    SIMULATOR_PATCHES = _speed_up_simulator()


def pytest_sessionstart(session):
    """FASTBP_TEST_REAL_GPU=1 promises the CUDA tests a real GPU: where fastbp cannot
    use one (no GPU, a context that cannot be created, a CUDA stack that cannot
    compile), stop at once and say why, instead of letting every CUDA test skip."""
    if os.environ.get("FASTBP_TEST_REAL_GPU", "").strip() != "1":
        return
    import pytest
    from fastbp import device
    usable, reason = device.cuda_status()
    if not usable or device.simulator_enabled():
        pytest.exit(f"FASTBP_TEST_REAL_GPU=1, but fastbp cannot use a GPU here: {reason}",
                    returncode=3)


def pytest_report_header(config):
    mode = ("real GPU" if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1"
            else f"simulator, sped up: {SIMULATOR_PATCHES}")
    return f"fastbp CUDA tests: {mode} (NUMBA_ENABLE_CUDASIM={os.environ['NUMBA_ENABLE_CUDASIM']})"


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts) means at most two workers: the suite's time is
    mostly numba compiling kernels, one function at a time per process, and more
    workers than two would compile the same kernels again (tests/conftest.py,
    pytest_collection_finish, splits the shared ones between two)."""
    return min(2, os.cpu_count() or 1)
