"""benchmarks/yardstick.py holds every system to the thread count it reports: the
peers' phase runs on as many cores as threads (``on_cores``: JAX's XLA has no working
thread limit of its own), threads started there keep that, and the process gets its
cores back afterwards. And a run's parent alternates peers and fastbp worker processes,
pools each system's samples across them and prints their medians, failing loudly when a
worker fails (the tests after the first)."""
import importlib
import json
import os
import subprocess
import sys
import threading
import types
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


# A run's parent process times nothing: it alternates worker processes (peers, fastbp,
# peers, ...), pools each system's samples across them and prints their medians. The
# tests below drive that logic with synthetic samples and fake workers; the last one runs
# the real script, small.

MS = 1e-3   # the workers report seconds


def _fastbp_pool(step_runs, floor_runs, fwd=1.0, fb=3.0):
    n = len(step_runs[0])
    return {"fastbp": [[t * MS for t in run] for run in step_runs],
            "epoch": [[0.5 * MS] * n for _ in step_runs],
            "floor": [[t * MS for t in run] for run in floor_runs],
            "forward": [[fwd * MS] * n for _ in step_runs],
            "forward_backward": [[fb * MS] * n for _ in step_runs]}


def test_the_table_holds_each_systems_median_over_every_rounds_samples(monkeypatch, capsys):
    yardstick = load_yardstick(monkeypatch)
    # fastbp's step over three rounds: pooled median 5, medians of the rounds 2, 4, 6
    # (their median 4), mean 5.67; quartiles (inclusive) 3 and 10.
    mine = _fastbp_pool([[1, 2, 10], [3, 4, 10], [5, 6, 10]],
                        floor_runs=[[2, 2, 2], [2, 2, 9], [2, 9, 9]])
    peers = {"floor": [[3 * MS] * 3 for _ in range(3)],   # median 3; fastbp's floor: 2
             "torch": [[10 * MS] * 3, [20 * MS] * 3, [20 * MS] * 3],
             "jax": None,                                  # not installed
             "sklearn": [[40 * MS] * 3 for _ in range(3)]}
    row = yardstick.summarize("tiny", peers, mine)
    assert row["fastbp"] == pytest.approx(5.0)
    assert row["epoch"] == pytest.approx(0.5)
    # min of the two floors' medians (3, 2), not the median of all 18 floor samples (3)
    assert row["floor"] == pytest.approx(2.0)
    assert row["torch"] == pytest.approx(20.0) and row["sklearn"] == pytest.approx(40.0)
    assert row["jax"] is None
    assert row["bwd_fwd"] == pytest.approx(2.0)   # (3 - 1) / 1
    assert row["spread"] == pytest.approx(10 / 3)
    assert row["round_medians"] == pytest.approx([2.0, 4.0, 6.0])
    assert row["samples"]["floor"] == (9, 9) and "jax" not in row["samples"]
    assert set(row["samples"].values()) == {9, (9, 9)}
    assert yardstick.note_line(row) == ("tiny     9 samples (floor 9 + 9); p75/p25 3.333; "
                                        "per round 2.000 4.000 6.000")
    yardstick.print_row(row)   # the table's row format is unchanged
    assert capsys.readouterr().out.split() == [
        "tiny", "32", "5.000", "0.500", "2.000", "20.000", "-", "40.000", "|",
        "2.500", "0.250", "0.250", "-", "0.125", "2.00"]


def test_a_note_line_names_each_systems_count_when_they_differ(monkeypatch):
    yardstick = load_yardstick(monkeypatch)
    mine = _fastbp_pool([[1, 1, 1]], floor_runs=[[1, 1, 1]])
    peers = {"floor": [[1 * MS] * 3], "torch": [[1 * MS] * 2], "jax": None, "sklearn": None}
    line = yardstick.note_line(yardstick.summarize("deep", peers, mine))
    assert line.startswith("deep     fastbp 3, epoch 3, forward 3, forward_backward 3, "
                           "torch 2 samples (floor 3 + 3)")


def _worker_kind_budget_samples(argv):
    return (argv[argv.index("--_worker") + 1], float(argv[argv.index("--budget") + 1]),
            int(argv[argv.index("--_samples") + 1]))


def _fake_result(kind, samples, value):
    systems = (("floor", "torch", "jax", "sklearn") if kind == "peers" else
               ("fastbp", "epoch", "floor", "forward", "forward_backward"))
    return {"float32": {"tiny": {s: None if s == "jax" else [value] * samples
                                 for s in systems}}}


def test_the_parent_alternates_peers_and_fastbp_workers_and_splits_the_budget(monkeypatch):
    yardstick = load_yardstick(monkeypatch)
    calls = []

    def run(argv):
        assert argv[:2] == [sys.executable, str(REPO / "benchmarks" / "yardstick.py")]
        kind, budget, samples = _worker_kind_budget_samples(argv)
        calls.append((kind, budget, samples))
        return _fake_result(kind, samples, float(len(calls)))

    pooled = yardstick.collect(["tiny"], ["float32"], 2, 1.5, 3, run=run)
    # each round's pair in the order of the last, reversed: a drift favours neither
    assert [kind for kind, _, _ in calls] == ["peers", "fastbp", "fastbp", "peers",
                                              "peers", "fastbp"]
    assert all(budget == pytest.approx(0.5) for _, budget, _ in calls)
    assert {samples for _, _, samples in calls} == {3}   # 7 samples spread over 3 rounds
    # each worker's samples kept apart, in the order the workers ran
    assert pooled["fastbp"]["float32"]["tiny"]["fastbp"] == [[2.0] * 3, [3.0] * 3, [6.0] * 3]
    assert pooled["peers"]["float32"]["tiny"]["floor"] == [[1.0] * 3, [4.0] * 3, [5.0] * 3]
    assert pooled["peers"]["float32"]["tiny"]["jax"] is None
    assert [yardstick.worker_samples(r) for r in (1, 2, 3, 7, 10)] == [7, 4, 3, 1, 1]


def test_the_parent_runs_the_rounds_of_one_config_before_the_next(monkeypatch):
    """Each worker times one config, and a config's rounds all run before the next
    config's, so its samples of both kinds lie close together in time."""
    yardstick = load_yardstick(monkeypatch)
    calls = []

    def run(argv):
        kind, _, samples = _worker_kind_budget_samples(argv)
        name = argv[argv.index("--only") + 1]
        calls.append((name, kind))
        result = _fake_result(kind, samples, float(len(calls)))
        return {"float32": {name: result["float32"]["tiny"]}}

    pooled = yardstick.collect(["tiny", "deep"], ["float32"], 2, 1.0, 2, run=run)
    assert calls == [("tiny", "peers"), ("tiny", "fastbp"), ("tiny", "fastbp"),
                     ("tiny", "peers"), ("deep", "peers"), ("deep", "fastbp"),
                     ("deep", "fastbp"), ("deep", "peers")]
    assert pooled["fastbp"]["float32"]["deep"]["fastbp"] == [[6.0] * 4, [7.0] * 4]
    assert pooled["peers"]["float32"]["tiny"]["floor"] == [[1.0] * 4, [4.0] * 4]


def test_a_fastbp_worker_holds_fastbp_to_the_thread_count_and_prints_its_samples(
        monkeypatch, capsys):
    yardstick = load_yardstick(monkeypatch)
    fake = types.ModuleType("fastbp")
    threads = []
    fake.set_num_threads = threads.append
    monkeypatch.setitem(sys.modules, "fastbp", fake)
    timed = []

    def run_fastbp(names, dtype, budget_s, samples):
        timed.append((threads[:], names, dtype, budget_s, samples))
        return {"tiny": {"fastbp": [1e-5] * samples}}
    monkeypatch.setattr(yardstick, "run_fastbp", run_fastbp)
    yardstick.worker("fastbp", ["tiny"], ["float32", "float64"], 3, 0.25, 2)
    assert timed == [([3], ["tiny"], "float32", 0.25, 2), ([3], ["tiny"], "float64", 0.25, 2)]
    line, = capsys.readouterr().out.splitlines()
    assert line.startswith(yardstick.RESULT_TAG)
    assert json.loads(line[len(yardstick.RESULT_TAG):]) == {
        dtype: {"tiny": {"fastbp": [1e-5, 1e-5]}} for dtype in ("float32", "float64")}


def test_the_parent_imports_neither_fastbp_nor_its_peers(tmp_path):
    """main with fake workers, in a fresh interpreter: the tables print, and fastbp,
    torch and jax (whose thread pools would hold cores while the workers time) were
    never imported by the parent."""
    script = tmp_path / "parent.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from benchmarks import yardstick
PEERS = ("floor", "torch", "jax", "sklearn")
FASTBP = ("fastbp", "epoch", "floor", "forward", "forward_backward")

def run(argv):
    kind, samples = argv[argv.index("--_worker") + 1], int(argv[argv.index("--_samples") + 1])
    systems = PEERS if kind == "peers" else FASTBP
    return {{"float32": {{"tiny": {{s: [1e-3] * samples for s in systems}}}}}}

yardstick.run_worker = run
assert yardstick.main(["--only", "tiny", "--dtypes", "float32", "--rounds", "2"]) == 0
imported = sorted({{"fastbp", "torch", "jax"}} & set(sys.modules))
assert not imported, imported
""")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.split()[:3] == ["tiny", "32", "1.000"] for line in lines), proc.stdout
    assert "tiny     8 samples (floor 8 + 8); p75/p25 1.000; per round 1.000 1.000" in lines


def test_a_failing_worker_stops_the_run_with_its_stderr(monkeypatch, capsys):
    yardstick = load_yardstick(monkeypatch)
    broken = [sys.executable, "-c", f"import sys; print({yardstick.RESULT_TAG!r} + '{{}}'); "
              "sys.stderr.write('KeyError: the worker broke\\n'); sys.exit(3)"]
    with pytest.raises(yardstick.WorkerError, match="(?s)exited with 3.*the worker broke"):
        yardstick.run_worker(broken)
    silent = [sys.executable, "-c", "import sys; sys.stderr.write('nothing to say')"]
    with pytest.raises(yardstick.WorkerError, match="(?s)0 result lines.*nothing to say"):
        yardstick.run_worker(silent)
    fine = [sys.executable, "-c", f"import sys; print('a warning'); "
            "sys.stderr.write('a RuntimeWarning'); "
            f"print({yardstick.RESULT_TAG!r} + '{{\"float32\": {{}}}}')"]
    assert yardstick.run_worker(fine) == {"float32": {}}
    err = capsys.readouterr().err
    assert "a warning" in err   # passed on, kept out of the table
    assert "a RuntimeWarning" in err   # the worker's stderr passed on too

    def run(argv):   # the peers worker reports, the fastbp worker fails
        kind, _, samples = _worker_kind_budget_samples(argv)
        if kind == "fastbp":
            raise yardstick.WorkerError("fastbp worker: Traceback ...")
        return _fake_result(kind, samples, 1e-3)
    monkeypatch.setattr(yardstick, "run_worker", run)
    with pytest.raises(yardstick.WorkerError, match="fastbp worker"):
        yardstick.main(["--only", "tiny", "--dtypes", "float32", "--rounds", "1"])
    assert "config" not in capsys.readouterr().out   # no table, not even a partial one
    with pytest.raises(SystemExit):
        yardstick.main(["--only", "tiny,huge"])   # refused before any worker starts
    with pytest.raises(SystemExit):
        yardstick.main(["--rounds", "0"])   # a run with no worker at all


def test_a_small_real_run_pools_two_rounds_of_workers():
    """The real script end to end, small (about 17 s on this project's 2-core machine
    with a warm numba cache: four worker processes, the peers' importing PyTorch and
    JAX when installed)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "yardstick.py"), "--only", "tiny",
         "--dtypes", "float32", "--budget", "0.05", "--rounds", "2"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    row = next(line.split() for line in lines if line.startswith("tiny "))
    assert row[:2] == ["tiny", "32"] and float(row[2]) > 0 and float(row[4]) > 0
    note = next(line for line in lines if line.startswith("tiny     8 samples"))
    assert note.startswith("tiny     8 samples (floor 8 + 8); p75/p25 ")
    assert len(note.split("per round ")[1].split()) == 2
