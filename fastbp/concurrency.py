"""When fastbp's kernels may run: numba's thread pool, forked processes and threads.

Thread pool. numba's pool (GNU OpenMP by default on Linux) is launched before the first
kernel call of a process, not at ``import fastbp``: a process that has launched it
cannot fork safely, and importing must not cost that.

Processes. With multiprocessing, the start methods that work are:

- "spawn" and "forkserver": always (each worker starts its own pool);
- "fork" (Linux's default before Python 3.14): only while the parent has not yet run
  a kernel (trained, predicted, ...). A child forked after that gets
  :class:`UnsafeForkError` at its first kernel call, at once, instead of being killed
  by GNU OpenMP ("fork() called from a process already using GNU OpenMP") and leaving
  ``Pool.map`` waiting forever. numba's other threading layers (TBB, workqueue, Intel
  OpenMP) are fork-safe and are not refused.

So ``multiprocessing.get_context("spawn").Pool(...)`` is the safe choice. (Choosing a
fork-safe numba threading layer, NUMBA_THREADING_LAYER=tbb with TBB installed, also
makes "fork" work; "workqueue" is fork-safe too but cannot serve two threads at once.)

Threads. One network runs one call at a time: a second thread that calls forward,
backward, compute_loss, train_step, train_epoch or fit on a network (or an optimizer's
step, or fastbp.jacobian) while another thread is inside such a call on the same
network gets a RuntimeError at once (the workspaces and gradients are shared, so the
two would silently mix). ``fit`` holds the network for its whole run. The same thread
may nest calls (a fit callback may predict). Different networks in different threads
run concurrently, as before.
"""
import functools
import os
import threading

import numba

_pool_started = False   # numba's pool launched by (or checked for) this process
_fork_refusal = None    # why kernels must not run in this forked child, or None


class UnsafeForkError(RuntimeError):
    """fastbp was used in a process forked from one that had already started numba's
    GNU OpenMP thread pool; use the "spawn" or "forkserver" start method."""


def _fork_unsafe_pool():
    """The name of numba's threading layer when it is launched and cannot survive a
    fork (GNU OpenMP), else None."""
    try:
        layer = numba.threading_layer()
    except ValueError:   # never launched: a forked child launches its own
        return None
    if layer != "omp":
        return None
    try:   # numba's OpenMP pool says which runtime it was built with
        from numba.np.ufunc import omppool
        vendor = omppool.openmp_vendor
    except (ImportError, AttributeError):
        vendor = "GNU"
    return "GNU OpenMP" if vendor == "GNU" else None


def _after_fork_in_child():
    global _pool_started, _fork_refusal
    _pool_started = False
    layer = _fork_unsafe_pool()
    if layer is not None and _fork_refusal is None:
        _fork_refusal = (
            f"this process was forked (os.fork, or multiprocessing's 'fork' start "
            f"method) from process {os.getppid()} after that process had started numba's "
            f"{layer} thread pool, which cannot run in a forked child (it would be "
            f"killed or hang); start worker processes with "
            f"multiprocessing.get_context('spawn') or 'forkserver', or fork before the "
            f"first fastbp call that computes")


os.register_at_fork(after_in_child=_after_fork_in_child)


def start_pool():
    """Launch numba's thread pool in this process (once), after checking that this
    process may use it. Raises UnsafeForkError in a child forked after its parent
    launched a GNU OpenMP pool.

    Every entry point that runs kernels calls this first. numba (0.68 and earlier;
    numba issues #8578 and #4807) relaunches its pool when it loads a cached function
    that *contains* a parallel loop, but not always a cached serial driver that only
    *calls* parallel kernels (``network_train_step`` is one): if that is the process's
    first compiled call, the driver jumps into numba's unlaunched parallel scheduler
    and the process dies with SIGSEGV, depending only on what the on-disk cache holds.
    The kernels also read the thread count from the launched pool
    (kernels/cpu/blocks.py). Code that calls ``fastbp.kernels.cpu`` directly is covered
    by kernels/cpu/_jit.py's ``launch_pool_on_load``, which launches the pool as a
    kernel is loaded from fastbp's cache; this call adds the check for a forked child."""
    global _pool_started
    if _fork_refusal is not None:
        raise UnsafeForkError(_fork_refusal)
    numba.get_num_threads()   # launches the pool the first time
    _pool_started = True


def _busy(what):
    return RuntimeError(
        f"{what}: this network is in use by another thread right now; one network runs "
        f"one call at a time (its workspaces and gradients are shared). Wait for the "
        f"other call, or give each thread its own network")


def _enter(lock, what):
    if not _pool_started:
        start_pool()
    if not lock.acquire(False):
        raise _busy(what)


def exclusive(method):
    """Decorate a network method that runs kernels: launch the pool on first use and
    refuse a call while another thread is inside one on the same network (the
    network's ``_in_use`` re-entrant lock; the same thread may nest calls). Costs a
    global check and one non-blocking lock acquire and release per call (about 0.4 us
    on this project's busy 2-core machine, against 20 us and more for a step)."""
    what = method.__name__.removeprefix("_").removesuffix("_checked")

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if not _pool_started:
            start_pool()
        lock = self._in_use
        if not lock.acquire(False):   # positional: measurably cheaper than a keyword
            raise _busy(what)
        try:
            return method(self, *args, **kwargs)
        finally:
            lock.release()
    return guarded


def exclusive_function(func):
    """``exclusive`` for a function whose first argument is the network
    (``fastbp.fit``): the network stays locked for the whole call, so a second thread
    training the same network is refused at once, not only when two steps collide."""
    what = func.__name__

    @functools.wraps(func)
    def guarded(*args, **kwargs):
        with using(args[0] if args else kwargs.get("net"), what):
            return func(*args, **kwargs)
    return guarded


def new_lock():
    """The lock ``exclusive`` uses; each network makes one."""
    return threading.RLock()


class using:
    """``with using(net, "step"):``: ``exclusive`` for code outside the network's
    methods (an optimizer's step). Objects without a lock pass unchecked."""

    def __init__(self, net, what):
        self._lock = getattr(net, "_in_use", None)
        self._what = what

    def __enter__(self):
        if self._lock is None:
            if not _pool_started:
                start_pool()
            return self
        _enter(self._lock, self._what)
        return self

    def __exit__(self, *exc):
        if self._lock is not None:
            self._lock.release()
        return False
