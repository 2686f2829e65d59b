"""The GPU tools of benchmarks/ run here as far as a machine without a GPU allows:
gpu_tune.py's timing and cuBLAS-ratio path with stand-ins for the GPU's events and for
cuBLAS (kernels in the simulator), gpu_check.sh's stages that are quick in the
simulator, from a copy laid out as installed, and cuda_first_step.py with the driver
stubbed. A GPU session runs them for real."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastbp import device as fdevice

REPO = Path(__file__).resolve().parents[1]
usable, why = fdevice.cuda_status()
needs_sim = pytest.mark.skipif(not (usable and fdevice.simulator_enabled()),
                               reason="needs the CUDA simulator")


def load_gpu_tune():
    spec = importlib.util.spec_from_file_location("gpu_tune", REPO / "benchmarks" / "gpu_tune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_sim
def test_gpu_tune_times_validates_and_picks_a_geometry(stand_in_gpu, tmp_path, capsys):
    out = tmp_path / "tune.json"
    gpu_tune = load_gpu_tune()
    assert gpu_tune.main(["--size", "7", "--geometry", "4,4,2,2,2", "--geometry",
                          "8,4,4,2,2", "--repeat", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["vendor"] == "numpy stand-in" and len(result["rows"]) == 6
    for row in result["rows"]:
        assert "error" not in row, row
        assert row["max_rel_error"] < 1e-5 and row["ms"] > 0 and row["vs_cublas"] > 0
    assert result["best"] in ("4,4,2,2,2", "8,4,4,2,2")
    assert "best geometry by mean fraction of cuBLAS" in capsys.readouterr().out


@needs_sim
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None,
                    reason="needs bash and tar")
def test_gpu_check_runs_its_quick_stages_from_an_installed_layout(tmp_path):
    out = tmp_path / "out"
    # the CUDA rows only: the copy's CPU kernels would compile cold (80 s), and
    # test_compare.py checks the CPU rows
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, NUMBA_ENABLE_CUDASIM="1",
               COMPARE_DEVICES="cuda", BREAKDOWN="smoke", BREAKDOWN_VARIANTS="fused",
               FUSED_ROWS="",   # one plan, no other row counts: the stage runs
               YARDSTICK_ARGS="--schedule")
    if importlib.util.find_spec("sitecustomize") is None:
        # the stages' processes run the simulator as this one does (19 s -> 10 s here);
        # left out where the environment has a sitecustomize of its own to shadow
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO / "tests" / "simulator_site"), env.get("PYTHONPATH")) if p)
    # the scripts under benchmarks/ too (run as files, they import fastbp from the
    # copy: a GPU run lost its yardstick to a ModuleNotFoundError before this did)
    # (tune: test_gpu_tune_times_validates_and_picks_a_geometry runs its script)
    stages = ["compare", "yardstick", "breakdown"]
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), *stages],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (out / "summary.txt").read_text()
    assert all(f"{stage}: exit 0" in summary for stage in stages), summary
    # the scripts timed the copy too, not the fastbp this checkout installed
    for name in ("gpu_yardstick", "gpu_step_breakdown_fused"):
        header = (out / f"{name}.txt").read_text().splitlines()
        origin = next(l for l in header if "fastbp from " in l)
        assert str(REPO) not in origin, origin
    result = json.loads((out / "gpu_yardstick.json").read_text())
    (row,) = result["rows"]   # the simulator-sized network, one round, no CPU column
    assert row["config"] == "smoke" and row["fastbp_cuda_ms"] > 0 and row["losses_agree"]
    assert row["fastbp_gpu_sched_ms"] > 0   # the column a new rate every step times
    assert result["launch_path"] == "configured"
    assert json.loads((out / "gpu_step_breakdown_fused.json").read_text())["results"]
    # fastbp came from the copy (with kernels/ inside it), not from this checkout
    line = next(l for l in summary.splitlines() if l.startswith("fastbp "))
    assert str(REPO) not in line and "simulator" in line
    compared = json.loads((out / "compare.json").read_text())
    assert compared["gpu"] == "simulator"
    assert {row["device"] for row in compared["rows"]} == {"cuda"}
    assert all(row["ok"] for row in compared["rows"])


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="numba-cuda is not installed: nothing to compile with")
def test_cuda_first_step_times_a_cold_and_a_warm_start_with_the_driver_stubbed(tmp_path):
    out = tmp_path / "first.json"
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cuda_first_step.py"),
                           "--stub", "--stub-context-seconds", "0.05", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert rows["cold"]["compiled"] > 0 and rows["warm"]["compiled"] == 0, rows
    assert rows["warm"]["loaded"] == rows["cold"]["compiled"], rows
    # the modelled context and the probe, timed side by side in MLP's construction
    assert rows["warm"]["context"] >= 0.05 and rows["warm"]["probe"] > 0, rows
    # numba.cuda's import, timed at fastbp's first cuda_status call: the stub imported
    # it before fastbp, so it cost that call next to nothing
    assert 0 <= rows["warm"]["import"] < 0.05, rows
    assert "| warm |" in proc.stdout, proc.stdout


def test_a_run_promised_a_real_gpu_stops_where_there_is_none():
    """FASTBP_TEST_REAL_GPU=1 (gpu_check.sh's tests stage) on a machine whose GPU fastbp
    cannot use stops at once and says why (conftest.py), instead of every CUDA test
    skipping and the run passing."""
    if fdevice.simulator_enabled() is False and usable:
        pytest.skip("a GPU is usable here: the run would start")
    env = dict(os.environ, FASTBP_TEST_REAL_GPU="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-n", "0", str(REPO / "tests" / "test_ready_batch.py")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FASTBP_TEST_REAL_GPU=1, but fastbp cannot use a GPU here" in proc.stdout + \
        proc.stderr
