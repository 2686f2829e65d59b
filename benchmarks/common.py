"""What every asv suite shares: timing settings, seeded data, thread pinning, devices.

asv_runner re-runs a benchmark's ``setup`` before *every* timed call when a class has
one (asv#966), so each sample is a single call. Suites therefore build their state
once per process through :func:`cached` (a re-run setup is a dictionary lookup) and
warm it up there: the first setup compiles (or loads numba's on-disk cache) and
touches every buffer, so no sample pays for compilation or first-touch page faults.
"""
import functools
import os
import statistics
import time

import numpy as np

DTYPES = ["float32", "float64"]

# Devices the whole-network suites are parameterised over; "cuda" skips without a GPU.
DEVICES = ["cpu", "cuda"]


class Benchmark:
    """Base of every suite: wall-clock timing and a bounded time budget per case.

    numba's parallel kernels run on several threads, so the timer is wall clock
    (asv's default, process_time, would add the threads' CPU time together).
    """
    timer = time.perf_counter
    # Per round: at least 5 samples, at most 15, stopping after ~0.25 s; 2 rounds in
    # separate processes (asv interleaves them across commits with
    # --interleave-rounds), the reported number is the median of all samples.
    repeat = (5, 15, 0.25)
    rounds = 2
    warmup_time = 0.05
    # The first setup of a fresh environment compiles the kernels (seconds each).
    timeout = 300


def pin_threads():
    """Size numba's and BLAS's thread pools together (FASTBP_BENCH_THREADS, default:
    numba's pool, i.e. every CPU) so the two never oversubscribe the cores."""
    import numba
    n = int(os.environ.get("FASTBP_BENCH_THREADS", numba.config.NUMBA_NUM_THREADS))
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    import fastbp
    setter = getattr(fastbp, "set_num_threads", None)   # absent on early commits
    if setter is not None:
        setter(n)
    else:
        numba.set_num_threads(n)
    return n


_STATE = {}


def cached(build):
    """Decorator: ``build(*params)`` runs once per process and parameter tuple; later
    calls return the same object, so a re-run ``setup`` costs a dictionary lookup."""
    @functools.wraps(build)
    def get(*params):
        key = (build.__module__, build.__qualname__, params)
        if key not in _STATE:
            pin_threads()
            _STATE[key] = build(*params)
        return _STATE[key]
    return get


def rng(seed=0):
    return np.random.default_rng(seed)


def normal(shape, dtype, seed=0, scale=1.0):
    """C-contiguous standard-normal data of ``dtype``, seeded."""
    return np.ascontiguousarray(rng(seed).standard_normal(shape) * scale, dtype=dtype)


def round_seconds(fn, budget_s=0.3, rounds=7):
    """The mean wall time of one call of ``fn`` in each of ``rounds`` rounds, a list:
    calls per round chosen to fill ``budget_s`` (after one warm-up and one timed call).
    benchmarks/yardstick.py pools these lists across processes."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    per_round = max(1, int(budget_s / rounds / once))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        samples.append((time.perf_counter() - start) / per_round)
    return samples


def median_seconds(fn, budget_s=0.3, rounds=7):
    """Median over ``rounds`` of the mean wall time of one call of ``fn`` (for track_
    benchmarks, which asv calls once): calls per round chosen to fill ``budget_s``."""
    return statistics.median(round_seconds(fn, budget_s, rounds))


def require_device(device):
    """Raise NotImplementedError (asv's "skip this case") unless ``device`` is usable:
    "cpu" always is; "cuda" needs fastbp.kernels.cuda and a real GPU (the CUDA
    simulator is far too slow to time)."""
    if device == "cpu":
        return
    if device != "cuda":
        raise NotImplementedError(f"unknown device {device!r}")
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        raise NotImplementedError("CUDA simulator active: GPU cases are not timed")
    try:
        import fastbp.kernels.cuda  # noqa: F401
        from numba import cuda
        usable = cuda.is_available()
    except Exception as exc:   # no numba-cuda, no driver, no twins on this commit
        raise NotImplementedError(f"CUDA unavailable: {exc!r}") from None
    if not usable:
        raise NotImplementedError("CUDA unavailable: no usable GPU")


def synchronize(device):
    """Wait for queued GPU work (no-op on the CPU)."""
    if device == "cuda":
        from numba import cuda
        cuda.synchronize()
