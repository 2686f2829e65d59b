"""The CUDA launch plan: what a steady-state step costs the host, and the lazy loss.

The counts come from benchmarks/cuda_host_overhead.py's stubbed driver (numba-cuda's
real arrays, dispatch and marshalling; only the driver's launch, copy and sync calls
recorded), run in a subprocess with the simulator off: they keep per-step device-array
views, device-to-host copies and extra launches from creeping back. That needs
numba-cuda with its CUDA libraries (.ci/run installs it), not a GPU. The lazy-loss tests
run in numba's CUDA simulator on a tiny network.
"""
import gc
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice

REPO = Path(__file__).resolve().parents[1]
usable, why = fdevice.cuda_status()
needs_cuda = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")

COUNT_STEPS = r"""
import gc, json, sys, warnings
sys.path.insert(0, sys.argv[1])
import cuda_host_overhead as bench
bench.stub_driver()
warnings.simplefilter("ignore")
import numpy as np, fastbp
from fastbp import cuda_plan
from fastbp.kernels.cuda import plan
from numba.cuda.dispatcher import CUDADispatcher
out = {"path": plan.launch_path()}

# every launch of a plan's passes, launched or captured, must hold the plan's current
# inputs (TrainStepPlan binds them lazily: a stubbed graph would not notice otherwise)
running = []
run, call, capture = plan.TrainStepPlan.run, plan.PreparedLaunch.__call__, plan._capture

def unbound(launches):
    p = running[-1]
    return sum(launch.args[i] is not p.inputs[w] for launch, i, w in p._uses
               if any(launch is l for l in launches))

def tracked_run(self, *args, **kwargs):
    running.append(self)
    try:
        return run(self, *args, **kwargs)
    finally:
        running.pop()

def checked_call(self):
    if running:
        bench.counts["unbound"] += unbound([self])
    return call(self)

def checked_capture(launches):
    bench.counts["unbound"] += unbound(launches)
    return capture(launches)
plan.TrainStepPlan.run, plan.PreparedLaunch.__call__ = tracked_run, checked_call
plan._capture = checked_capture

def in_memory():   # CUDA kernels compiled or loaded in this process
    return sum(len(k.overloads) for k in gc.get_objects() if isinstance(k, CUDADispatcher))

rng = np.random.default_rng(0)
for name, loss, y_of, clip in (
        ("softmax_cross_entropy", "softmax_cross_entropy", lambda: rng.integers(0, 3, 4), 0),
        ("mse", "mse", lambda: rng.standard_normal((4, 3)), 0),
        ("clipped", "softmax_cross_entropy", lambda: rng.integers(0, 3, 4), 1e-3),
        ("adam", "softmax_cross_entropy", lambda: rng.integers(0, 3, 4), 0)):
    net = fastbp.MLP([5, 4, 3], activation="tanh", loss=loss, seed=0, device="cuda")
    if name == "adam":   # its bias corrections change every step
        opt = fastbp.Adam(net, lr=0.01)
    else:
        opt = fastbp.SGD(net, lr=0.01, momentum=0.9,   # 'first' flips after step 1
                         max_grad_norm=clip or None)
    fastbp.warmup(net, opt)   # every kernel of the step, before the first step
    kernels = in_memory()
    X, y = rng.standard_normal((4, 5)), y_of()
    for _ in range(4):   # each staging slot's graph captured (steps 3 and 4)
        net.train_step(X, y, opt)
    bench.counts.clear()
    losses = [net.train_step(X, y, opt) for _ in range(5)]
    steps = dict(bench.counts)
    bench.counts.clear()
    values = [float(l) for l in losses]
    read = dict(bench.counts)
    out[name] = {"steps": steps, "read": read, "planned": cuda_plan.planned_launches(net),
                 "passes": len(cuda_plan.runner(net).plans[4].passes),
                 "compiled_after_warmup": in_memory() - kernels,
                 "finite": all(np.isfinite(values))}
    bench.counts.clear()
    net.train_epoch(np.tile(X, (3, 1)), np.concatenate([y] * 3), opt, batch_size=4)
    bench.counts.clear()
    net.train_epoch(np.tile(X, (3, 1)), np.concatenate([y] * 3), opt, batch_size=4)
    out[name]["epoch"] = dict(bench.counts)
    if name == "softmax_cross_entropy":   # a new view of the same device rows each step
        from numba import cuda
        dX = cuda.to_device(np.tile(X, (2, 1)).astype(np.float32))
        dy = cuda.to_device(np.concatenate([y, y]).astype(np.int64))
        bench.counts.clear()
        for _ in range(3):
            net.train_step(dX[0:4], dy[0:4], opt)
        out[name]["views"] = dict(bench.counts)
# a host batch in the kernels' form (float32 X, int64 labels) has its values checked
# in numpy: the CPU's compiled check, which would load numba's CPU target in this
# process, never runs
from fastbp.kernels.cpu import checks
net = fastbp.MLP([5, 4, 3], activation="tanh", seed=0, device="cuda")
opt = fastbp.SGD(net, lr=0.01)
for _ in range(2):
    net.train_step(rng.standard_normal((4, 5)).astype(np.float32),
                   rng.integers(0, 3, 4), opt)
out["cpu check"] = len(checks.batch_values_ok.signatures)
# numba-cuda's disk cache (kernels/cuda/_jit.py): kernels compiled or loaded
out["cache"] = {"hits": 0, "misses": 0}
for k in gc.get_objects():
    if isinstance(k, CUDADispatcher):
        out["cache"]["hits"] += sum(k.stats.cache_hits.values())
        out["cache"]["misses"] += sum(k.stats.cache_misses.values())
print(json.dumps(out))
"""


needs_numba_cuda = pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None,
    reason='numba-cuda is not installed (pip install -e ".[cuda]"): the stubbed-'
           "driver runs need its real compiler, device arrays and launch path")


def stubbed(script, cache, *args, env=None):
    """Run ``script`` (which stubs the driver itself) in a fresh process with the
    simulator off, this fastbp importable, numba's cache in ``cache`` and the variables
    ``env`` set; (its last stdout line as JSON, its stderr)."""
    env = dict(os.environ, **(env or {}))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    where = str(Path(fastbp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (where, env.get("PYTHONPATH")) if p)
    env["NUMBA_CACHE_DIR"] = str(cache)
    proc = subprocess.run([sys.executable, "-c", script, str(REPO / "benchmarks"), *args],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory):
    """numba's cache folder of this file's stubbed-driver processes, shared so that a
    later test compiles only what is its own (its network's products), not the kernels
    an earlier one compiled."""
    return tmp_path_factory.mktemp("numba")


@needs_numba_cuda
def test_steady_state_steps_make_no_views_no_copies_back_and_only_planned_launches(
        kernel_cache, tmp_path):
    # a cold start needs an empty cache: the shared one unless another test used it first
    cache = tmp_path / "numba" if any(kernel_cache.iterdir()) else kernel_cache

    def run(**env):   # an empty cache, then a warm one
        return stubbed(COUNT_STEPS, cache, env=env)

    out, stderr = run()
    # the CUDA kernels compiled into an empty cache, announced on stderr first
    # (MLP(device="cuda") compiles the passes', warmup the update's); a second process
    # loads every one and says nothing
    assert out["cache"]["hits"] == 0 and out["cache"]["misses"] > 0, out["cache"]
    assert "compiling fastbp's CUDA kernels for this GPU; about" in stderr, stderr[-2000:]
    # the second process launches every kernel by itself (no CUDA graphs)
    again, stderr = run(FASTBP_CUDA_GRAPHS="0")
    assert again["cache"] == {"hits": out["cache"]["misses"], "misses": 0}, again["cache"]
    assert "compiling" not in stderr, stderr[-2000:]
    assert out["path"] == "graph" and again["path"] == "pre-packed"
    assert out["cpu check"] == 0 and again["cpu check"] == 0, (out, again)
    for name, graphs in [(n, g) for n in ("softmax_cross_entropy", "mse", "clipped", "adam")
                         for g in (True, False)]:
        r = (out if graphs else again)[name]
        assert r["compiled_after_warmup"] == 0, r   # warmup left nothing to compile
        steps = r["steps"]
        for part in ("steps", "epoch"):   # every launch had this step's inputs
            assert r[part].get("unbound", 0) == 0, r
        # 5 steps: no new device arrays, nothing copied back, no sync, the batch in
        assert steps.get("views", 0) == 0, r
        assert steps.get("D2H", 0) == 0 and steps.get("syncs", 0) == 0, r
        assert steps.get("H2D", 0) == 5 * 2, r   # X and labels or targets, per step
        # pinned double-buffered staging: each step waits only for the copy of two
        # steps back (its slot's), never for the GPU as a whole
        assert steps.get("waits", 0) == 5, r
        if graphs:   # each step one graph, the update and record in it (Adam's too:
            # its step number is read on the device)
            assert steps.get("graph launches", 0) == 5, r
            assert steps["launches"] == 5, r
            # and no launch re-prepared for the step's inputs (the staging slot's):
            # the graph holds them
            assert steps.get("rebinds", 0) == 0, r
        else:
            assert steps.get("graph launches", 0) == 0, r
            assert 0 < steps["launches"] <= 5 * r["planned"], r
            assert steps.get("rebinds", 0) > 0, r   # the slots' inputs alternate
        # reading the five losses: one copy of the ring, no views
        assert r["read"].get("D2H", 0) == 1 and r["read"].get("views", 0) == 0, r
        assert r["finite"]
        # a repeated epoch of 3 steps: X and y uploaded once, no views; copied back:
        # the ring once, and the snapshot of params and momentum that a divergence
        # would restore (once per call, as on the CPU)
        epoch = r["epoch"]
        assert epoch.get("H2D", 0) == 2 and epoch.get("views", 0) == 0, r
        assert epoch.get("D2H", 0) == 1 + 2, r
        assert epoch.get("launches", 0) <= 3 * r["planned"], r
        # each minibatch was seen once in the epoch before: now replayed as a graph
        assert epoch.get("graph launches", 0) == (3 if graphs else 0), r
        if "views" in r:   # graphs follow the memory, not the array objects: the
            # second and third fresh views of the same rows replay one graph
            assert r["views"].get("graph launches", 0) == (2 if graphs else 0), r


FIRST_STEP_COMPILES = r"""
import gc, json, sys, warnings
sys.path.insert(0, sys.argv[1])
import cuda_host_overhead as bench
bench.stub_driver()   # 132 multiprocessors, as an H100/H200
warnings.simplefilter("ignore")
import numpy as np, fastbp
from numba.cuda.dispatcher import CUDADispatcher

def in_memory():   # CUDA kernel variants compiled or loaded in this process
    return sum(len(k.overloads) for k in gc.get_objects() if isinstance(k, CUDADispatcher))

batch, hinted = 2048, sys.argv[2] == "hinted"
net = fastbp.MLP([200, 64, 3], activation="tanh", seed=0, device="cuda")
opt = fastbp.SGD(net, lr=0.1)
fastbp.warmup(net, opt, batch_sizes=(batch,) if hinted else ())
before = in_memory()
rng = np.random.default_rng(0)
net.train_step(rng.standard_normal((batch, 200)), rng.integers(0, 3, batch), opt)
print(json.dumps({"at_first_step": in_memory() - before}))
"""


@needs_numba_cuda
def test_warmup_with_the_batch_size_leaves_nothing_to_compile_at_the_first_step(
        kernel_cache):
    """The products' geometry follows the batch size (a one-row batch splits the first
    layer's k; 2048 rows fill the GPU with 32x32 tiles unsplit), so a warmup told the
    batch size compiles that step's kernels, and one not told leaves some to the step."""
    def compiled_at_first_step(mode):
        return stubbed(FIRST_STEP_COMPILES, kernel_cache, mode)[0]["at_first_step"]
    assert compiled_at_first_step("hinted") == 0
    assert compiled_at_first_step("unhinted") > 0


SCHEDULED_STEPS = r"""
import json, sys, warnings
sys.path.insert(0, sys.argv[1])
import cuda_host_overhead as bench
bench.stub_driver()
warnings.simplefilter("ignore")
import numpy as np, fastbp
from fastbp.kernels.cuda import plan as kplan
record = kplan.TrainStepPlan._update_launches

def counted(self, *args):   # the update's launches recorded (when its inputs changed)
    bench.counts["update recorded"] += 1
    return record(self, *args)
kplan.TrainStepPlan._update_launches = counted
rng = np.random.default_rng(0)
X, y = rng.standard_normal((4, 5)), rng.integers(0, 3, 4)
out = {}
for name in ("sgd", "adam"):
    net = fastbp.MLP([5, 4, 3], activation="tanh", seed=0, device="cuda")
    opt = fastbp.make_optimizer(name, net, lr=0.01)
    fastbp.warmup(net, opt)
    for _ in range(6):   # each of the two staging slots' inputs captured as a graph
        net.train_step(X, y, opt)
    runs = {}
    for every in (1, 3):   # a new learning rate before every step, every third step
        bench.counts.clear()
        for i in range(12):
            if i % every == 0:
                opt.lr = opt.lr * 0.9
            net.train_step(X, y, opt)
        runs[every] = dict(bench.counts)
    out[name] = runs
    # warming up another optimizer records its update on the same plan (and sets the
    # plan's device scalars to its values): the next step of this one writes its own
    from fastbp import cuda_plan
    plan = cuda_plan.runner(net).plans[4]
    fastbp.warmup(net, fastbp.make_optimizer(name, net, lr=7.0), batch_sizes=(4,))
    net.train_step(X, y, opt)
    out[name + " scalars"] = [plan.scalars.written[0], opt.lr]
print(json.dumps(out))
"""


@needs_numba_cuda
def test_a_schedule_changes_no_graph(kernel_cache):
    """The update's hyperparameters are read on the device (plan.DeviceScalars): a
    learning rate changed before a step costs one small launch that writes it, and the
    step's graph stays valid (before, that step launched its update and record one by
    one and the graph was captured again at the next step)."""
    out = stubbed(SCHEDULED_STEPS, kernel_cache)[0]
    for name in ("sgd", "adam"):
        written, lr = out[name + " scalars"]
        assert written == lr, (name, written, lr)
        for every, counts in out[name].items():
            changes = 12 // int(every)
            assert counts.get("captures", 0) == 0, (name, every, counts)
            assert counts.get("graph launches", 0) == 12, (name, every, counts)
            assert counts["launches"] == 12 + changes, (name, every, counts)
            # and the update's launches are recorded again only for those steps
            assert counts.get("update recorded", 0) == changes, (name, every, counts)


INTERRUPTED_RECORDING = r"""
import json, sys, warnings
sys.path.insert(0, sys.argv[1])
import cuda_host_overhead as bench
bench.stub_driver()
warnings.simplefilter("ignore")
import numpy as np, fastbp
from fastbp import cuda_plan
from fastbp.kernels import codes
from fastbp.kernels.cuda import plan as kplan
net = fastbp.MLP([5, 4, 3], activation="tanh", seed=0, device="cuda")
opt = fastbp.SGD(net, lr=0.01)
rng = np.random.default_rng(0)
X, y = rng.standard_normal((4, 5)), rng.integers(0, 3, 4)
for _ in range(3):
    net.train_step(X, y, opt)
plan = cuda_plan.runner(net).plans[4]
names = lambda: [launch.kernel.py_func.__name__ for launch in plan.update]
out = {"before": names()}
prepare = kplan.PreparedLaunch.__init__
armed = [True]

def interrupted(self, kernel, *args):   # the first new launch fails (a compile, say)
    if armed[0] and kernel.py_func.__name__ != "_record_step":
        armed[0] = False
        raise KeyboardInterrupt
    prepare(self, kernel, *args)
kplan.PreparedLaunch.__init__ = interrupted
opt.hparams[codes.HP_MAX_GRAD_NORM] = 1e-3   # clipping on: other update launches
try:
    net.train_step(X, y, opt)
except KeyboardInterrupt:
    out["interrupted"] = True
net.train_step(X, y, opt)   # the same step, run again
out["after"] = names()
print(json.dumps(out))
"""


@needs_numba_cuda
def test_an_interrupted_recording_of_the_update_is_made_again(kernel_cache):
    """The update's launches are recorded again only when what they are made from
    changed (TrainStepPlan._bind_tail): a recording that failed half way must not count
    as made, or the next steps would launch the old update (here: without clipping)."""
    out = stubbed(INTERRUPTED_RECORDING, kernel_cache)[0]
    assert out["before"] == ["_sgd_kernel"] and out["interrupted"], out
    assert out["after"] == ["sum_squares", "_clip_factor_kernel",
                            "_sgd_weight_decay_kernel"], out


@needs_cuda
def test_a_plan_recording_in_one_thread_leaves_other_threads_launches_alone():
    """Networks may train in different threads at once: while one thread's plan records
    its launches (_launch.recording), another thread's update runs, and writes its
    learning rate to the device first (DeviceScalars), instead of being recorded."""
    import threading
    from numba import cuda
    from fastbp.kernels.cuda import _launch, optim
    params = cuda.to_device(np.ones(8))
    grads = cuda.to_device(np.full(8, 2.0))
    entered, finished = threading.Event(), threading.Event()
    recorded = []

    def record():
        with _launch.recording() as launches:
            entered.set()
            finished.wait(60)
            recorded.extend(launches)
    recorder = threading.Thread(target=record)
    recorder.start()
    try:
        assert entered.wait(60)
        assert optim.sgd_update(params, grads, 0.25) == 0
    finally:
        finished.set()
        recorder.join()
    np.testing.assert_array_equal(params.copy_to_host(), np.full(8, 0.5))
    assert recorded == []


@needs_cuda
def test_a_grown_workspace_leaves_no_launch_plan_on_the_old_buffers():
    """A larger batch grows the workspace: the smaller batch's launch plans (the
    runner's for train_step, train_epoch's) are dropped, not kept holding the old
    device buffers, and rebuilt when that batch comes back."""
    import weakref
    from fastbp.cuda_plan import runner
    from fastbp.kernels.cuda.plan import EpochState
    rng = np.random.default_rng(2)
    net = fastbp.MLP([3, 4, 2], activation="tanh", dtype="float64", seed=0, device="cuda")
    opt = fastbp.SGD(net, lr=0.1)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    float(net.train_step(X[:2], y[:2], opt))
    net.train_epoch(X[:2], y[:2], opt, batch_size=2)
    old = weakref.ref(net._workspace.acts)
    float(net.train_step(X, y, opt))
    net.train_epoch(X, y, opt, batch_size=6)
    assert list(runner(net).plans) == [6]
    assert [key[0] for key in EpochState.of(net.params).plans] == [6]
    gc.collect()
    assert old() is None
    float(net.train_step(X[:2], y[:2], opt))   # rebuilt on the current buffers
    assert sorted(runner(net).plans) == [2, 6]


@needs_cuda
def test_train_step_loss_is_lazy_and_reads_as_the_cpu_loss():
    from fastbp.cuda_plan import StepLoss
    rng = np.random.default_rng(5)
    cpu = fastbp.MLP([3, 2, 2], activation="tanh", dtype="float64", seed=1)
    gpu = fastbp.MLP([3, 2, 2], activation="tanh", dtype="float64", seed=1, device="cuda")
    o_cpu, o_gpu = fastbp.SGD(cpu, lr=0.3), fastbp.SGD(gpu, lr=0.3)
    pending = []
    for _ in range(3):
        X, y = rng.standard_normal((2, 3)), rng.integers(0, 2, 2)
        pending.append((cpu.train_step(X, y, o_cpu), gpu.train_step(X, y, o_gpu)))
    assert isinstance(pending[0][0], float)          # the CPU keeps its meaning
    assert isinstance(pending[0][1], StepLoss) and "not read" in repr(pending[0][1])
    for l_cpu, l_gpu in pending:
        assert abs(float(l_gpu) - l_cpu) <= 1e-12 * max(abs(l_cpu), 1.0)
        assert math.isfinite(l_gpu) and l_gpu.item() == float(l_gpu)
        assert l_gpu + 0.0 == float(l_gpu) and f"{l_gpu:.3f}" == f"{float(l_gpu):.3f}"
    np.testing.assert_allclose(fdevice.to_host(gpu.params), cpu.params, rtol=0, atol=1e-12)
    # a fit/train_epoch call reuses the ring: earlier losses then say so
    stale = gpu.train_step(X, y, o_gpu)
    gpu.train_epoch(X, y, o_gpu, batch_size=2)
    with pytest.raises(RuntimeError, match="no longer held"):
        float(stale)


@needs_cuda
def test_host_batches_are_staged_so_the_caller_may_reuse_its_arrays_at_once():
    """device.PinnedBatches: a train_step copies the host batch before returning (into
    one of two pinned slots, used in turn), so refilling the same arrays in place for
    the next steps, without reading any loss, trains on each step's own batch."""
    rng = np.random.default_rng(9)
    cpu = fastbp.MLP([3, 4, 2], activation="tanh", dtype="float64", seed=3)
    gpu = fastbp.MLP([3, 4, 2], activation="tanh", dtype="float64", seed=3, device="cuda")
    o_cpu, o_gpu = fastbp.SGD(cpu, lr=0.2), fastbp.SGD(gpu, lr=0.2)
    X, y = np.empty((5, 3)), np.empty(5, np.int64)
    want, got = [], []
    for _ in range(5):   # more steps than slots: each slot is refilled
        X[...], y[...] = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
        want.append(cpu.train_step(X, y, o_cpu))
        got.append(gpu.train_step(X, y, o_gpu))
    np.testing.assert_allclose([float(g) for g in got], want, rtol=1e-12)
    np.testing.assert_allclose(fdevice.to_host(gpu.params), cpu.params, rtol=0, atol=1e-12)


@needs_cuda
def test_a_divergent_step_is_reported_when_its_loss_is_read():
    net = fastbp.MLP([1, 1], loss="mse", dtype="float32", seed=0, device="cuda")
    net.layers[0].W = np.array([[3e38]], np.float32)
    loss = net.train_step([[1.0]], [0.0], fastbp.SGD(net, lr=1.0))
    with pytest.raises(fastbp.TrainingDiverged, match="optimizer step 1"):
        float(loss)


@needs_cuda
def test_device_resident_inputs_are_used_in_place_and_checked():
    from numba import cuda
    rng = np.random.default_rng(6)
    host = fastbp.MLP([3, 2, 2], activation="tanh", dtype="float64", seed=2, device="cuda")
    dev = fastbp.MLP([3, 2, 2], activation="tanh", dtype="float64", seed=2, device="cuda")
    o_host, o_dev = fastbp.SGD(host, lr=0.3), fastbp.SGD(dev, lr=0.3)
    X, y = rng.standard_normal((4, 3)), rng.integers(0, 2, 4)
    dX, dy = cuda.to_device(X), cuda.to_device(y.astype(np.int64))
    assert float(dev.train_step(dX, dy, o_dev)) == float(host.train_step(X, y, o_host))
    # train_epoch in order over device data, as over host data
    np.testing.assert_array_equal(dev.train_epoch(dX, dy, o_dev, batch_size=3),
                                  host.train_epoch(X, y, o_host, batch_size=3))
    np.testing.assert_array_equal(fdevice.to_host(dev.params), fdevice.to_host(host.params))
    np.testing.assert_array_equal(dX.copy_to_host(), X)   # the caller's data untouched
    # checked from the interface, before any launch
    with pytest.raises(TypeError, match=r"X: expected a device array of float64"):
        dev.train_step(cuda.to_device(X.astype(np.float32)), dy, o_dev)
    with pytest.raises(ValueError, match=r"X: expected a device array of shape \(batch, 3\)"):
        dev.train_step(cuda.to_device(X[:, :2].copy()), dy, o_dev)
    with pytest.raises(ValueError, match="X: expected a C-contiguous"):
        dev.train_step(cuda.to_device(np.asfortranarray(X)), dy, o_dev)
    with pytest.raises(ValueError, match=r"y: expected int64 class labels of shape \(4,\)"):
        dev.train_step(dX, dy[:3], o_dev)
    with pytest.raises(TypeError, match="y: expected int64 class labels"):
        dev.train_step(dX, cuda.to_device(y.astype(np.int32)), o_dev)
    with pytest.raises(TypeError, match="y: expected a device array like X"):
        dev.train_step(dX, y, o_dev)
    # values are checked on the device and reported when the loss is read
    bad_X = X.copy()
    bad_X[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"X, y: 1 entries .* NaN or infinite"):
        float(dev.train_step(cuda.to_device(bad_X), dy, o_dev))
    with pytest.raises(ValueError, match=r"labels outside \[0, classes\)"):
        float(dev.train_step(dX, cuda.to_device(np.array([0, 1, 2, 0])), o_dev))
    before = fdevice.to_host(dev.params)
    with pytest.raises(ValueError, match="restored"):
        dev.train_epoch(cuda.to_device(bad_X), dy, o_dev, batch_size=2)
    np.testing.assert_array_equal(fdevice.to_host(dev.params), before)
