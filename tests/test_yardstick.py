"""benchmarks/yardstick.py holds every system to the thread count it reports: the
peers' phase runs on as many cores as threads (``on_cores``: JAX's XLA has no working
thread limit of its own), threads started there keep that, and the process gets its
cores back for fastbp's phase."""
import importlib
import os
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_yardstick(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))   # benchmarks/ is a package of the checkout
    return importlib.import_module("benchmarks.yardstick")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity (Linux) and at least two usable cores")
def test_the_peers_phase_runs_on_as_many_cores_as_threads(monkeypatch):
    yardstick = load_yardstick(monkeypatch)
    cores = os.sched_getaffinity(0)
    seen = {}

    def started_inside():
        seen["thread"] = os.sched_getaffinity(0)

    with yardstick.on_cores(1):
        seen["inside"] = os.sched_getaffinity(0)
        t = threading.Thread(target=started_inside)
        t.start()
        t.join()
    assert len(seen["inside"]) == 1 and seen["inside"] <= cores
    assert seen["thread"] == seen["inside"]
    assert os.sched_getaffinity(0) == cores   # back for fastbp's phase
    with yardstick.on_cores(len(cores)):   # as many threads as cores: left alone
        assert os.sched_getaffinity(0) == cores
