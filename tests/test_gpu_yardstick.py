"""benchmarks/gpu_yardstick.py through benchmarks/gpu_check.sh's yardstick stage, from
the installed layout gpu_check.sh builds: under numba's CUDA simulator it shrinks to a
4-3-2 network (one round, no CPU column), which checks that the stage and the script run
and write their JSON; the numbers come from a GPU session."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastbp import device as fdevice

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (fdevice.simulator_enabled() and fdevice.cuda_status()[0]),
                    reason="runs the yardstick's simulator-sized network")
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tar") is None,
                    reason="needs bash and tar")
def test_gpu_check_yardstick_stage_runs_and_writes_its_table(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "yardstick"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "yardstick: exit 0" in (out / "summary.txt").read_text()
    result = json.loads((out / "gpu_yardstick.json").read_text())
    (row,) = result["rows"]
    assert row["config"] == "smoke" and row["fastbp_cuda_ms"] > 0 and row["losses_agree"]
    assert result["launch_path"] == "configured"
    assert "fb cuda" in (out / "gpu_yardstick.txt").read_text()
