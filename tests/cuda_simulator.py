"""numba-cuda's CUDA simulator, sped up for fastbp's tests: ``speed_up()``.

The root conftest.py calls it in the test processes; tests/distributed_checks.py in the
MPI ranks the suite starts (each rank runs CUDA checks in the simulator). Call it after
NUMBA_ENABLE_CUDASIM=1 is set and before any kernel runs.

In the simulator, each CUDA thread of a block is a Python thread, and numba-cuda's
BlockManager (numba-cuda 0.30, simulator/kernel.py) runs a block by polling its threads
in a loop that holds the GIL until the interpreter's switch interval (5 ms by default)
forces it to let one of them run to its next syncthreads(): a block of n threads then
took about n x 5 ms per barrier, almost all of it waiting. A shorter switch interval
(1e-4 s) made it ten times faster (tests/test_cuda_kernels.py and test_cuda_fused.py
86 s -> 10 s, measured 2026-11-30) but still spent most of the CUDA tests' CPU polling
and switching threads. ``_EventBarrier`` replaces the polling: a thread reaching
syncthreads() waits on a condition that the block's last thread to arrive (or to
finish) releases, and the manager sleeps in join() until every thread has finished.
The same threads run the same code between the same barriers (fastbp's kernels have no
races and no floating-point atomics), so every result is the same, only sooner: ten
files of CUDA tests took 36 s of pytest time and 44 s of CPU with the switch interval,
22 s and 27 s with the barrier (alone, one process, 2026-12-01). The simulator also has
a race of its own in how it makes a block's shared arrays (_FirstAllocationLocked).
Both patches are installed only when the simulator is built as described here.
"""
import inspect
import sys
import threading

import numpy as np

# The interpreter's switch interval (seconds) when the barrier cannot be installed.
SIMULATOR_SWITCH_INTERVAL_S = 1e-4


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
        self._lock = threading.Lock()

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
            def target():
                self._f(*args)
            self._cond = threading.Condition()
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


def speed_up():
    """Install the simulator patches above; returns what was installed: "barrier"
    (both), "switch interval" (the shared-array lock and the shorter switch interval:
    this numba-cuda's block manager is not the one _EventBarrier replaces) or "none"
    (this numba-cuda's simulator is built otherwise: it runs as shipped)."""
    if not _lock_simulator_shared_arrays():
        return "none"
    from numba.cuda.simulator import kernel
    if _EventBarrier.install(kernel):
        return "barrier"
    sys.setswitchinterval(SIMULATOR_SWITCH_INTERVAL_S)
    return "switch interval"
