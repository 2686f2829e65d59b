"""device="cuda" where the CUDA stack cannot compile: numpy 2.5 removed numpy.row_stack,
which numba-cuda (0.30.4 and before) still overloads, so every kernel failed to compile
with an AttributeError deep inside numba at the first step. fastbp restores the alias
before numba.cuda loads (fastbp.device.numpy_compat), and where compiling fails anyway,
MLP(device="cuda") raises CudaUnavailableError at construction, naming the versions.

The numpy-2.5 condition is made here by deleting numpy.row_stack (and its __all__
entry, as numpy 2.5 has neither) in a subprocess before anything imports numba.cuda;
compiling to PTX needs numba-cuda with its CUDA libraries, not a GPU.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastbp
from fastbp import device as fdevice

needs_numba_cuda = pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None,
    reason='numba-cuda is not installed (pip install -e ".[cuda]"): nothing to '
           "compile the probe kernels with")

WITHOUT_ROW_STACK = r"""
import sys, numpy
del numpy.row_stack
if "row_stack" in numpy.__all__:
    numpy.__all__.remove("row_stack")
from fastbp import device
if sys.argv[1] == "no-shim":
    device.numpy_compat = lambda: None
ok, reason = device.compile_probe()
print("probe", ok, reason)
if ok:   # one of fastbp's own kernels compiles too
    from numba import cuda
    from fastbp.kernels.cuda import plan
    cuda.compile_ptx(plan._record_step.py_func,
                     "void(float64[::1], int64, int32[::1], int32[::1], float64[::1], "
                     "int64[::1], int64)",
                     cc=(7, 5))
    print("record kernel compiled")
"""


def _run(mode):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    where = str(Path(fastbp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", WITHOUT_ROW_STACK, mode],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@needs_numba_cuda
def test_kernels_compile_when_numpy_has_no_row_stack():
    out = _run("shim")
    assert "probe True" in out and "record kernel compiled" in out, out


@needs_numba_cuda
def test_without_the_alias_the_probe_fails_and_names_the_versions():
    out = _run("no-shim")
    assert "probe False" in out, out
    assert "row_stack" in out and "numpy " in out and "numba-cuda " in out, out


def test_construction_raises_when_the_stack_cannot_compile(monkeypatch):
    if not fdevice.cuda_status()[0]:
        pytest.skip("numba.cuda does not import here")
    monkeypatch.setattr(fdevice, "simulator_enabled", lambda: False)
    monkeypatch.setattr(fdevice, "cuda_package", lambda: "numba-cuda")
    from numba import cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    reason = "numba-cuda cannot compile kernels here (AttributeError: ...; numpy 2.5.2)"
    monkeypatch.setattr(fdevice, "compile_probe", lambda: (False, reason))
    with pytest.raises(fdevice.CudaUnavailableError, match="cannot compile") as info:
        fastbp.MLP([2, 2], device="cuda")
    assert fdevice.INSTALL_COMMAND in str(info.value)
