"""tests/cuda_simulator.py's event-driven barrier for numba-cuda's CUDA simulator
(``_EventBarrier``): blocks still synchronise, threads that return early do not hold a
barrier, an exception in one thread is raised (not a hang) once the block has stopped,
and syncthreads_count / _and / _or still see every thread's value.

Runs only under the simulator (on a real GPU the patch is not installed: these skip and
say so). Each kernel is small; a hang would show as the timeout of the thread that
waits for the launch.
"""
import threading

import numpy as np
import pytest

from fastbp import device as fdevice

pytestmark = pytest.mark.skipif(not fdevice.simulator_enabled(),
                                reason="tests numba-cuda's simulator, which is not in use "
                                       "(NUMBA_ENABLE_CUDASIM is not 1)")

if fdevice.simulator_enabled():
    from numba import cuda
    from numba.cuda.simulator import kernel as sim_kernel

# The whole block must finish within this many seconds (it takes milliseconds).
HANG_S = 60


def _launch(kernel, config, *args):
    """Launch in a thread so that a hang fails the test instead of stopping the suite;
    the launch's exception, if any, is re-raised here."""
    outcome = {}

    def run():
        try:
            kernel[config](*args)
        except BaseException as exc:   # noqa: BLE001 (handed back to the test)
            outcome["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_S)
    assert not t.is_alive(), f"the launch did not end within {HANG_S} s"
    if "error" in outcome:
        raise outcome["error"]


def test_the_event_barrier_is_installed():
    assert sim_kernel.BlockManager.run.__qualname__.startswith("_EventBarrier.")
    assert sim_kernel.BlockThread.syncthreads.__qualname__.startswith("_EventBarrier.")


def test_a_block_reverses_through_shared_memory_and_threads_may_return_early():
    """Each block reverses its 13-element slice of x through shared memory; threads
    with i >= 13 return before the barriers, which the others still pass."""
    @cuda.jit
    def reverse(x, out):
        tile = cuda.shared.array(16, dtype=np.float64)
        t = cuda.threadIdx.x
        if t >= 13:
            return
        i = cuda.blockIdx.x * 13 + t
        tile[t] = x[i]
        cuda.syncthreads()
        tmp = tile[12 - t]
        cuda.syncthreads()   # a second barrier with the early leavers gone
        tile[t] = tmp
        cuda.syncthreads()
        out[i] = tile[t]

    x = np.random.default_rng(0).standard_normal(3 * 13)
    out = np.zeros_like(x)
    _launch(reverse, (3, 16), x, out)
    np.testing.assert_array_equal(out, x.reshape(3, 13)[:, ::-1].ravel())


def test_an_exception_in_one_thread_is_raised_and_the_others_stop():
    """Thread 5 raises before the barrier that the others wait in: the launch raises
    that error (with the simulator's thread and block ids), and no thread of the block
    goes on past the barrier."""
    @cuda.jit
    def fails(out):
        t = cuda.threadIdx.x
        if t == 5:
            out[100] = 1.0   # out of bounds: IndexError in the simulator
        cuda.syncthreads()
        out[t] = 1.0

    out = np.zeros(8)
    with pytest.raises(IndexError, match=r"tid=\[5, 0, 0\]"):
        _launch(fails, (1, 8), out)
    assert (out == 0.0).all()


def test_syncthreads_count_and_or_see_every_thread():
    @cuda.jit
    def votes(out):
        t = cuda.threadIdx.x
        out[0] = cuda.syncthreads_count(t % 3 == 0)
        out[1] = cuda.syncthreads_and(t < 100)
        out[2] = cuda.syncthreads_or(t == 7)
        out[3] = cuda.syncthreads_and(t < 7)

    out = np.full(4, -1, np.int64)
    _launch(votes, (1, 10), out)
    assert out.tolist() == [4, 1, 1, 0]
