"""device="cuda" where the CUDA stack cannot compile: numpy 2.5 removed numpy.row_stack,
which numba-cuda (0.30.4 and before) still overloads, so every kernel failed to compile
with an AttributeError deep inside numba at the first step. fastbp restores the alias
before numba.cuda loads (fastbp.device.numpy_compat), and where compiling fails anyway,
MLP(device="cuda") raises CudaUnavailableError at construction, naming the versions.

The numpy-2.5 condition is made here by deleting numpy.row_stack (and its __all__
entry, as numpy 2.5 has neither) in a subprocess before anything imports numba.cuda;
compiling to PTX needs numba-cuda with its CUDA libraries, not a GPU.

The probe compiles on a thread of its own while the caller's thread creates the GPU's
context (fastbp.device._probe_beside); that is checked with the driver stubbed
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
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
import cuda_host_overhead as bench
cuda = bench.stub_driver(context_seconds=0.3)
from fastbp import device
seen, stubbed_context, real_probe = {"probes": [], "contexts": []}, \
    cuda.current_context, device.compile_probe

def probe():   # compiles when device._probe is None; later calls return its result
    compiles = device._probe is None
    start = time.perf_counter()
    result = real_probe()
    if compiles:
        seen["probes"].append([threading.current_thread().name, start,
                               time.perf_counter()])
    return result

def context(devnum=None):
    start = time.perf_counter()
    if seen.get("fail"):
        raise RuntimeError("cuDevicePrimaryCtxRetain: CUDA_ERROR_OUT_OF_MEMORY")
    ctx = stubbed_context()
    seen["contexts"].append([threading.current_thread().name, start,
                             time.perf_counter()])
    return ctx

device.compile_probe, cuda.current_context = probe, context
out = {"first": device.cuda_status(), "again": device.cuda_status()}
# creating the context fails: said by every call, in the caller's thread, until it works
seen["fail"] = True
out["failing"] = [device.cuda_status(), device.cuda_status()]
seen["fail"] = False
out["recovered"] = device.cuda_status()
# no thread can be started: the probe runs in the caller's thread, after the context
device._probe = None
threading.Thread.start = lambda self: (_ for _ in ()).throw(RuntimeError("can't start"))
out["no_thread"] = device.cuda_status()
out["probes"], out["contexts"] = seen["probes"], seen["contexts"]
print(json.dumps(out))
"""


@needs_numba_cuda
def test_the_probe_compiles_on_its_own_thread_while_the_context_is_created():
    import json
    out = json.loads(_run(CONTEXT_BESIDE_PROBE, str(REPO / "benchmarks"))
                     .strip().splitlines()[-1])
    assert out["first"][0] and out["again"][0], out
    # the probe compiled once on its own thread, and once more, in the caller's thread,
    # where no thread could be started
    (p_thread, p_start, p_end), (inline, _, _) = out["probes"]
    assert p_thread == "fastbp-cuda-probe" and inline == "MainThread", out
    # the context is always the caller's thread's: the first call's ran beside the probe
    c_thread, c_start, c_end = out["contexts"][0]
    assert {c[0] for c in out["contexts"]} == {"MainThread"}, out
    assert p_start < c_end and c_start < p_end, out   # they ran at the same time
    for usable, reason in out["failing"]:
        assert not usable and "driver failed" in reason and "OUT_OF_MEMORY" in reason, out
    assert out["recovered"][0] and out["no_thread"][0], out
