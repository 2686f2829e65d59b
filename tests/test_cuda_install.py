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
import json, os, sys, threading, time
sys.path.insert(0, sys.argv[1])
import cuda_host_overhead as bench
cuda = bench.stub_driver(context_seconds=0.3)
from fastbp import device
seen = {"probes": [], "contexts": [], "threads": 0}
stubbed_context, real_probe, start = cuda.current_context, device.compile_probe, \
    threading.Thread.start

def probe():   # compiles when device._probe is None; later calls return its result
    compiles = device._probe is None
    begin = time.perf_counter()
    result = real_probe()
    if compiles:
        seen["probes"].append([threading.current_thread().name, begin,
                               time.perf_counter()])
    return result

def context(devnum=None):
    begin = time.perf_counter()
    seen["contexts"].append([threading.current_thread().name, begin, None])
    if seen.get("fail"):
        raise RuntimeError("cuDevicePrimaryCtxRetain: CUDA_ERROR_OUT_OF_MEMORY")
    ctx = stubbed_context()
    seen["contexts"][-1][2] = time.perf_counter()
    return ctx

def counted_start(self):
    seen["threads"] += 1
    return start(self)

device.compile_probe, cuda.current_context = probe, context
threading.Thread.start = counted_start
out = {"first": device.cuda_status(), "again": device.cuda_status()}
out["threads"] = seen["threads"]   # one probe thread for both calls
# creating the context fails: said by every call, until it works
seen["fail"] = True
out["failing"] = [device.cuda_status(), device.cuda_status()]
seen["fail"] = False
out["recovered"] = device.cuda_status()
# the first call's context fails while its probe compiles
device._probe = None
seen["fail"] = True
out["failing_first"] = device.cuda_status()
seen["fail"] = False
# the probe known to fail: its reason, and no context opened for nothing
device._probe = (False, "numba-cuda cannot compile kernels here (a test)")
contexts = len(seen["contexts"])
out["probe_failed"] = device.cuda_status()
out["opened_for_failed_probe"] = len(seen["contexts"]) - contexts
# FASTBP_CUDA_PROBE_THREAD=0: in turn, in the caller's thread
device._probe, threads = None, seen["threads"]
os.environ["FASTBP_CUDA_PROBE_THREAD"] = "0"
out["serial"] = device.cuda_status()
out["serial_threads"] = seen["threads"] - threads
del os.environ["FASTBP_CUDA_PROBE_THREAD"]
# no thread can be started: the same
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
    assert out["first"][0] and out["again"][0] and out["threads"] == 1, out
    # compiled on its own thread twice (the first call, the failing first call), then
    # in the caller's thread: FASTBP_CUDA_PROBE_THREAD=0, no thread to be had
    assert [p[0] for p in out["probes"]] == ["fastbp-cuda-probe"] * 2 + ["MainThread"] * 2
    assert out["serial"][0] and out["serial_threads"] == 0 and out["no_thread"][0], out
    # the context is always the caller's thread's: the first call's ran beside the probe
    assert {c[0] for c in out["contexts"]} == {"MainThread"}, out
    _, p_start, p_end = out["probes"][0]
    _, c_start, c_end = out["contexts"][0]
    assert p_start < c_end and c_start < p_end, out   # they ran at the same time
    for usable, reason in out["failing"] + [out["failing_first"]]:
        assert not usable and "could not create a CUDA context" in reason, out
        assert "OUT_OF_MEMORY" in reason, out
    assert out["recovered"][0], out
    assert out["probe_failed"] == [False, "numba-cuda cannot compile kernels here (a test)"]
    assert out["opened_for_failed_probe"] == 0, out


IMPORT_TIMED = r"""
import json, sys
from fastbp import device
before = "numba.cuda" in sys.modules
first = device.cuda_status()   # no GPU here: numba.cuda imports, the driver says none
timed = dict(device.startup)
device.cuda_status()
print(json.dumps({"before": before, "after": "numba.cuda" in sys.modules,
                  "first": timed, "again": device.startup}))
"""


@needs_numba_cuda
def test_the_first_cuda_status_times_importing_numba_cuda():
    """device.startup["import"] and ["driver"]: what importing numba.cuda and
    initialising the driver cost the first cuda_status call of a process
    (benchmarks/cuda_first_step.py reports them beside the context and the probe);
    later calls leave them as they were."""
    import json
    out = json.loads(_run(IMPORT_TIMED).strip().splitlines()[-1])
    assert not out["before"] and out["after"], out
    # a real import: numba-cuda's registries, its bindings (0.2 s here without
    # ml_dtypes, 0.8 s with it)
    assert out["first"]["import"] > 0.01, out
    assert out["first"]["driver"] >= 0, out   # no GPU here: the driver says so
    for part in ("import", "driver"):
        assert out["again"][part] == out["first"][part], out
