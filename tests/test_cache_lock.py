"""kernels/_cache.py serialise_index_writes: numba's index of a cached function survives
two processes saving different signatures of it at once (read, modify, write without a
lock in numba itself: a lost entry, or an entry pointing at the other's data file)."""
import multiprocessing
import os

import pytest
from numba.core import caching

from fastbp.kernels import _cache

SAVES = 60   # per process


def _save_many(folder, tag, start):
    _cache.serialise_index_writes(folder, caching.IndexDataCacheFile)
    cache_file = caching.IndexDataCacheFile(folder, "kernel", ("stamp", 1))
    start.wait()
    for i in range(SAVES):
        cache_file.save((tag, i), f"{tag} {i}")


@pytest.mark.skipif(_cache.fcntl is None, reason="no fcntl.flock on this platform")
def test_two_processes_saving_one_index_at_once_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_save_many, args=(str(tmp_path), tag, start))
             for tag in ("float32", "float64")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    cache_file = caching.IndexDataCacheFile(str(tmp_path), "kernel", ("stamp", 1))
    for tag in ("float32", "float64"):
        for i in range(SAVES):
            # every entry is there and leads to its own data, not the other process's
            assert cache_file.load((tag, i)) == f"{tag} {i}"
    assert os.path.exists(tmp_path / _cache._LOCK)
