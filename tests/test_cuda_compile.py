"""Every CUDA kernel compiles for a real GPU, and the matrix products keep their
accumulators in registers: checks the simulator cannot make, since it runs kernels as
Python and types nothing (it passed a loss kernel that could not compile, and would pass
a product kernel whose accumulators sit in local memory).

Compiles to sm_90 PTX with numba-cuda's NVVM, in a subprocess with the simulator off
(benchmarks/cuda_resources.py --all --check --no-ptxas). No GPU needed, but numba-cuda
with its CUDA libraries is (pip install "fastbp[cuda13]"; .ci/run installs it); without
numba-cuda the test skips and says so.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None,
    reason='numba-cuda is not installed (pip install "fastbp[cuda13]"): the GPU compile '
           "check cannot run")


def test_every_cuda_kernel_compiles_and_products_stay_in_registers():
    import fastbp
    # the subprocess imports the fastbp this process imported, wherever it lives
    where = str(Path(fastbp.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (where, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cuda_resources.py"),
                           "--all", "--check", "--no-ptxas"],
                          capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for name in ("fwd +b tanh", "dW = dS.T@X", "dX = dS@W", "activation_backward",
                 "backward_bias", "loss", "sum_squares", "adam", "rmsprop"):
        rows = [line for line in proc.stdout.splitlines() if f" {name} " in line + " "]
        assert {line.split()[0] for line in rows} >= {"float32", "float64"}, (name, out)
