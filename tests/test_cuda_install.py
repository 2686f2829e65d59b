"""device="cuda" where the CUDA stack cannot compile: numpy 2.5 removed numpy.row_stack,
which numba-cuda (0.30.4 and before) still overloads, so every kernel failed to compile
with an AttributeError deep inside numba at the first step. fastbp restores the alias
before numba.cuda loads (fastbp.device.numpy_compat), and where compiling fails anyway,
MLP(device="cuda") raises CudaUnavailableError at construction, naming the versions.

The numpy-2.5 condition is made here by deleting numpy.row_stack (and its __all__
entry, as numpy 2.5 has neither) in a subprocess before anything imports numba.cuda;
compiling to PTX needs numba-cuda with its CUDA libraries, not a GPU.

The probe runs while the GPU's context is created on a thread of its own
(fastbp.device.ContextOpening); that is checked with the driver stubbed
(benchmarks/cuda_host_overhead.py), creating the context modelled as a wait.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastbp
from fastbp import device as fdevice

REPO = Path(__file__).resolve().parents[1]

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


def _run(script, *args):
    """``script``'s stdout, run in a fresh process with the simulator off and this
    fastbp importable."""
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    where = str(Path(fastbp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", script, *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@needs_numba_cuda
def test_kernels_compile_when_numpy_has_no_row_stack():
    out = _run(WITHOUT_ROW_STACK, "shim")
    assert "probe True" in out and "record kernel compiled" in out, out


@needs_numba_cuda
def test_without_the_alias_the_probe_fails_and_names_the_versions():
    out = _run(WITHOUT_ROW_STACK, "no-shim")
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


CONTEXT_BESIDE_PROBE = r"""
import contextlib, json, sys, threading, time
sys.path.insert(0, sys.argv[1])
import cuda_host_overhead as bench
cuda = bench.stub_driver(context_seconds=0.3)
from numba.cuda.cudadrv import driver
from fastbp import device
seen, stubbed_context, real_probe = {}, cuda.current_context, device.compile_probe

def probe():   # the first call compiles; later ones return its result
    start = time.perf_counter()
    result = real_probe()
    seen.setdefault("probe", [start, time.perf_counter()])
    return result

def context(devnum=None):
    start = time.perf_counter()
    if seen.get("fail"):
        raise RuntimeError("cuDevicePrimaryCtxRetain: CUDA_ERROR_OUT_OF_MEMORY")
    ctx = stubbed_context()
    seen.setdefault("contexts", []).append(
        [threading.current_thread().name, start, time.perf_counter()])
    return ctx

device.compile_probe, cuda.current_context = probe, context
out = {"first": device.cuda_status()}
opening = device.ContextOpening.last
out["again"] = device.cuda_status()
out["opened_again"] = device.ContextOpening.last is not opening
out["probe"] = seen["probe"]
# a thread with a context of its own (made current by the caller, or another library)
device.ContextOpening.last = None
driver.driver.get_active_context = lambda: contextlib.nullcontext(True)
out["has_one"] = device.cuda_status()
out["opened_for_it"] = device.ContextOpening.last is not None
# creating the context fails: said by cuda_status, in the caller's thread
driver.driver.get_active_context = lambda: contextlib.nullcontext(False)
seen["fail"] = True
out["failing"] = device.cuda_status()
out["failing_again"] = device.cuda_status()   # tried again, and failed again
# the caller then makes a context of its own current (another GPU, say): usable
driver.driver.get_active_context = lambda: contextlib.nullcontext(True)
out["own_context_after_failure"] = device.cuda_status()
# or the GPU has room again: the next call opens it
driver.driver.get_active_context = lambda: contextlib.nullcontext(False)
seen["fail"] = False
out["recovered"] = device.cuda_status()
# no thread can be started: nothing opened, the caller's thread creates its own
device.ContextOpening.last = None
threading.Thread.start = lambda self: (_ for _ in ()).throw(RuntimeError("can't start"))
out["no_thread"] = device.cuda_status()
out["opened_without_thread"] = device.ContextOpening.last is not None
out["contexts"] = seen["contexts"]
print(json.dumps(out))
"""


@needs_numba_cuda
def test_the_context_is_created_on_its_own_thread_while_the_probe_compiles():
    import json
    out = json.loads(_run(CONTEXT_BESIDE_PROBE, str(REPO / "benchmarks"))
                     .strip().splitlines()[-1])
    assert out["first"][0] and out["again"][0], out
    # opened once by the first two calls, and once more after the failure below
    (thread, c_start, c_end), again = out["contexts"]
    p_start, p_end = out["probe"]
    assert thread == again[0] == "fastbp-cuda-context", out
    assert p_start < c_end and c_start < p_end, out   # they ran at the same time
    assert not out["opened_again"], out
    assert out["has_one"][0] and not out["opened_for_it"], out
    for usable, reason in (out["failing"], out["failing_again"]):
        assert not usable and "driver failed" in reason and "OUT_OF_MEMORY" in reason, out
    assert out["own_context_after_failure"][0] and out["recovered"][0], out
    assert out["no_thread"][0] and not out["opened_without_thread"], out
