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

In the simulator, each CUDA thread of a block is a Python thread, and numba-cuda's
BlockManager (numba-cuda 0.30, simulator/kernel.py) runs a block by polling its threads in
a loop that holds the GIL until the interpreter's switch interval (5 ms by default)
forces it to let one of them run to its next syncthreads(): a block of n threads then
took about n x 5 ms per barrier, almost all of it waiting. A shorter switch interval
(1e-4 s) made it ten times faster (tests/test_cuda_kernels.py and test_cuda_fused.py
86 s -> 10 s, measured 2026-11-30) but still spent most of the CUDA tests' CPU polling
and switching threads. ``_EventBarrier`` replaces the polling: a thread reaching
syncthreads() waits on a condition that the block's last thread to arrive (or to
finish) releases, and the manager sleeps in join() until every thread has finished. The same threads run the same code between the same barriers (fastbp's
kernels have no races and no floating-point atomics), so every result is the same,
only sooner: the ten files of CUDA tests 36 s -> 22 s of pytest time and 44 s -> 27 s of CPU
(alone, one process, 2026-12-01). The simulator also has a race of its own in how it
makes a block's shared arrays (_FirstAllocationLocked); both patches are installed
only when the simulator is built as described here, else it runs as shipped, with the
shorter switch interval.
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


class _EventBarrier:
    """A block of the simulator run without polling: installed over numba-cuda's
    BlockManager.run, BlockThread.run and BlockThread.syncthreads (``install``).

    The block's state lives on its BlockManager: ``_cond`` (a Condition), ``_alive``
    (threads not finished), ``_waiting`` (threads in the current syncthreads),
    ``_generation`` (barriers released so far) and ``_failed`` (the first thread that
    raised), ``_threads`` (all of them). As numba-cuda's manager does, a barrier is
    released when every thread still running waits in it, so threads that have
    returned no longer count; when a thread raises, every thread is told to abort (a
    thread waiting in a barrier, or reaching one, raises instead of going on) and the
    first exception is raised once all have stopped."""

    @staticmethod
    def _release_if_complete(manager):
        """Release the barrier (under manager._cond) if every live thread waits in it."""
        if manager._waiting and manager._waiting == manager._alive:
            manager._waiting = 0
            manager._generation += 1
            manager._cond.notify_all()

    @classmethod
    def install(cls, kernel):
        """Patch the simulator module ``kernel``; False (nothing patched) when its
        classes are not the ones this was written against."""
        import inspect
        thread, manager = kernel.BlockThread, kernel.BlockManager
        try:
            built_as_expected = (
                list(inspect.signature(thread.__init__).parameters)
                == ["self", "f", "manager", "blockIdx", "threadIdx", "debug"]
                and list(inspect.signature(manager.__init__).parameters)
                == ["self", "f", "grid_dim", "block_dim", "debug"]
                and callable(getattr(thread, "syncthreads", None)))
        except (TypeError, ValueError):
            built_as_expected = False
        if not built_as_expected:
            return False
        thread_run = thread.run

        def syncthreads(self):
            if self.abort:
                raise RuntimeError("abort flag set on syncthreads call")
            m = self._manager
            with m._cond:
                generation = m._generation
                m._waiting += 1
                cls._release_if_complete(m)
                while m._generation == generation and not self.abort:
                    m._cond.wait()
            if self.abort:
                raise RuntimeError("abort flag set on syncthreads clear")

        def run_thread(self):
            try:
                thread_run(self)   # numba-cuda's: stores an exception in self.exception
            finally:
                m = self._manager
                with m._cond:
                    m._alive -= 1
                    if self.exception is not None:
                        if m._failed is None:
                            m._failed = self
                        for t in m._threads:   # none goes past its next barrier
                            t.abort = True
                    else:
                        cls._release_if_complete(m)
                    m._cond.notify_all()

        def run_block(self, grid_point, *args):
            import numpy as np

            def target():
                self._f(*args)
            self._cond = __import__("threading").Condition()
            self._waiting = self._generation = 0
            self._failed = None
            threads = [kernel.BlockThread(target, self, grid_point, point, self._debug)
                       for point in np.ndindex(*self._block_dim)]
            self._threads, self._alive = threads, len(threads)
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if self._failed is not None:
                raise self._failed.exception[0].with_traceback(self._failed.exception[1])

        thread.syncthreads, thread.run, manager.run = syncthreads, run_thread, run_block
        return True


if os.environ["NUMBA_ENABLE_CUDASIM"] == "1" and _lock_simulator_shared_arrays():
    from numba.cuda.simulator import kernel as _simulator_kernel
    if not _EventBarrier.install(_simulator_kernel):
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
