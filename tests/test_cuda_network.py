"""A whole network on device="cuda" against the same network on the CPU: loss,
gradients, a few training steps, moving between devices, and the errors.

Runs in numba's CUDA simulator (root conftest.py) and unchanged on a real GPU; the
networks are tiny (the simulator costs milliseconds per thread).
"""
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice

usable, why = fdevice.cuda_status()
needs_cuda = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")

RTOL = {"float32": 2e-5, "float64": 1e-12}

# sizes, hidden activation, loss: S kept (gelu, softplus) and not (tanh, relu); all losses.
ARCHS = [
    ([5, 4, 3], "tanh", "softmax_cross_entropy"),
    ([3, 6, 5, 2], ["gelu", "relu"], "mse"),
    ([4, 3, 2], "softplus", "bce_with_logits"),
]


def batch_for(sizes, loss, rng, batch=5):
    X = rng.standard_normal((batch, sizes[0]))
    if loss == "softmax_cross_entropy":
        return X, rng.integers(0, sizes[-1], batch)
    return X, rng.random((batch, sizes[-1]))


def twins(sizes, act, loss, dtype, seed=3):
    cpu = fastbp.MLP(sizes, activation=act, loss=loss, dtype=dtype, seed=seed)
    gpu = fastbp.MLP(sizes, activation=act, loss=loss, dtype=dtype, seed=seed, device="cuda")
    return cpu, gpu


def assert_close(actual, expected, dtype):
    actual = fdevice.to_host(actual).astype(np.float64)
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL[dtype] * scale)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes,act,loss", ARCHS)
def test_loss_gradients_and_outputs_match_cpu(sizes, act, loss, dtype):
    rng = np.random.default_rng(len(sizes))
    X, y = batch_for(sizes, loss, rng)
    cpu, gpu = twins(sizes, act, loss, dtype)
    assert gpu.device == "cuda" and fdevice.is_device_array(gpu.params)
    assert_close(gpu.params, cpu.params, dtype)   # same initialisation
    loss_cpu, loss_gpu = cpu.backward(X, y), gpu.backward(X, y)
    assert isinstance(loss_gpu, float)
    assert abs(loss_gpu - loss_cpu) <= RTOL[dtype] * max(abs(loss_cpu), 1.0)
    assert_close(gpu.grads, cpu.grads, dtype)
    assert abs(gpu.compute_loss(X, y) - loss_cpu) <= RTOL[dtype] * max(abs(loss_cpu), 1.0)
    out = gpu.forward(X)
    assert isinstance(out, np.ndarray) and out.dtype == np.dtype(dtype)
    assert_close(out, cpu.forward(X), dtype)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
# [4, 5, 3]: a hidden layer wider than the input gives the two layers' dW products
# different grids from one kernel (caught a launch plan that kept the simulator's
# configured kernel object, which takes the grid of its last configuration)
@pytest.mark.parametrize("sizes", [[5, 4, 3], [4, 5, 3]])
def test_training_steps_match_cpu(dtype, sizes):
    act, loss = "tanh", "softmax_cross_entropy"
    rng = np.random.default_rng(0)
    cpu, gpu = twins(sizes, act, loss, dtype)
    opt_cpu, opt_gpu = fastbp.SGD(cpu, lr=0.5), fastbp.SGD(gpu, lr=0.5)
    for step in range(3):
        X, y = batch_for(sizes, loss, rng, batch=4 + step)   # batch sizes change
        l_cpu = cpu.train_step(X, y, opt_cpu)
        l_gpu = gpu.train_step(X, y, opt_gpu)
        assert abs(l_gpu - l_cpu) <= 10 * RTOL[dtype] * max(abs(l_cpu), 1.0)
    assert_close(gpu.params, cpu.params, dtype)
    # backward + step() (the optimizer's own launch) agrees as well
    X, y = batch_for(sizes, loss, rng)
    cpu.backward(X, y), gpu.backward(X, y)
    opt_cpu.step(), opt_gpu.step()
    assert_close(gpu.params, cpu.params, dtype)
    assert not np.allclose(fdevice.to_host(gpu.params), twins(sizes, act, loss, dtype)[0].params)


@needs_cuda
@pytest.mark.parametrize("name, settings", [
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("adamw", {"weight_decay": 0.1}),
    ("rmsprop", {"momentum": 0.5, "centered": True, "weight_decay": 0.01})])
def test_a_learning_rate_changed_every_step_reaches_the_cuda_updates(name, settings):
    """The CUDA updates read their hyperparameters from device memory (kernels/cuda/
    plan.py DeviceScalars), written when they change: a schedule's new rate before
    each step gives the CPU's parameters, through a planned train_step, a standalone
    update (backward, then opt.step()) and train_epoch's plans."""
    rng = np.random.default_rng(4)
    X, y = batch_for([4, 5, 3], "softmax_cross_entropy", rng, batch=6)
    for path in ("train_step", "step", "train_epoch"):
        nets = twins([4, 5, 3], "tanh", "softmax_cross_entropy", "float64")
        opts = [fastbp.make_optimizer(name, net, lr=0.05, **settings) for net in nets]
        for i in range(4):
            for net, opt in zip(nets, opts):
                opt.lr = 0.05 * 0.5 ** i
                if path == "train_step":
                    float(net.train_step(X, y, opt))
                elif path == "step":
                    net.backward(X, y)
                    opt.step()
                else:
                    net.train_epoch(X, y, opt, batch_size=3)
        assert_close(nets[1].params, nets[0].params, "float64")


@needs_cuda
def test_fit_and_predict_on_device():
    rng = np.random.default_rng(1)
    X, y = batch_for([4, 3, 2], "softmax_cross_entropy", rng, batch=6)
    cpu, gpu = twins([4, 3, 2], "relu", "softmax_cross_entropy", "float64")
    h_cpu = cpu.fit(X, y, epochs=1, batch_size=4, optimizer=fastbp.SGD(cpu, lr=0.1), seed=0)
    h_gpu = gpu.fit(X, y, epochs=1, batch_size=4, optimizer=fastbp.SGD(gpu, lr=0.1), seed=0)
    assert abs(h_gpu["loss"][0] - h_cpu["loss"][0]) < 1e-12
    assert np.array_equal(gpu.predict(X), cpu.predict(X))


@needs_cuda
def test_to_moves_without_changing_values_and_layers_are_device_views():
    rng = np.random.default_rng(2)
    X, y = batch_for([3, 4, 2], "mse", rng)
    net = fastbp.MLP([3, 4, 2], activation="tanh", loss="mse", dtype="float64", seed=0)
    net.backward(X, y)
    params, grads = net.params.copy(), net.grads.copy()
    assert net.to("cuda") is net and net.device == "cuda"
    W = net.layers[0].W
    assert fdevice.is_device_array(W) and W.shape == (4, 3)
    assert np.array_equal(fdevice.to_host(net.params), params)
    assert np.array_equal(fdevice.to_host(net.grads), grads)
    # writing a layer's W on the device writes the flat buffer
    net.layers[0].W = np.ones((4, 3))
    assert np.array_equal(fdevice.to_host(net.params)[:12], np.ones(12))
    with pytest.raises(ValueError, match="shape"):
        net.layers[0].W = np.ones((3, 4))
    net.layers[0].W = params[:12].reshape(4, 3)
    net.to("cpu")
    assert isinstance(net.params, np.ndarray) and np.array_equal(net.params, params)
    assert isinstance(net.layers[1].W, np.ndarray)


@needs_cuda
def test_optimizer_state_follows_network():
    net = fastbp.MLP([3, 2, 2], dtype="float64", seed=0)
    opt = fastbp.SGD(net, lr=0.1)
    net.to("cuda")
    X, y = np.ones((2, 3)), np.array([0, 1])
    net.train_step(X, y, opt)
    assert fdevice.is_device_array(opt.state)
    d = opt.state_dict()
    assert isinstance(d["state"], np.ndarray)
    net.to("cpu")
    net.train_step(X, y, opt)
    assert isinstance(opt.state, np.ndarray)


def test_unknown_device_rejected():
    with pytest.raises(ValueError, match="device"):
        fastbp.MLP([2, 2], device="tpu")
    with pytest.raises(ValueError, match="device"):   # one rule, as on the command line
        fastbp.MLP([2, 2], device="gpu")
    with pytest.raises(TypeError, match="device"):
        fastbp.MLP([2, 2], device=0)


def test_unavailable_cuda_says_why_and_what_to_install(monkeypatch):
    monkeypatch.setattr(fdevice, "simulator_enabled", lambda: False)
    monkeypatch.setattr(fdevice, "cuda_package", lambda: None)
    with pytest.raises(fdevice.CudaUnavailableError) as info:
        fastbp.MLP([2, 2], device="cuda")
    message = str(info.value)
    assert "numba-cuda is not installed" in message and fdevice.INSTALL_COMMAND in message
    assert message.count("pip install") == 1 and len(message) < 200 and "\n" not in message
    assert isinstance(info.value, RuntimeError)


def test_importing_fastbp_does_not_import_cuda():
    code = "import sys, fastbp; print(any(m.startswith('numba.cuda') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_compare_command_validates_every_kernel(tmp_path, capsys):
    from fastbp.cli import main
    out = tmp_path / "compare.json"
    assert main(["compare", "--batch", "5", "--inputs", "3", "--outputs", "6",
                 "--repeat", "1", "--json", str(out)]) == 0
    import json
    result = json.loads(out.read_text())
    kernels = {r["kernel"] for r in result["rows"]}
    assert {"linear_forward", "linear_backward", "softmax_cross_entropy",
            "sgd_update"} <= kernels
    assert all(r["max_rel_error"] < 1e-4 for r in result["rows"]), result["rows"]
    text = capsys.readouterr().out
    if usable and fdevice.simulator_enabled():
        assert {r["device"] for r in result["rows"]} == {"cpu", "cuda"}
        assert "not timed" in text
        assert all(r["median_s"] is None for r in result["rows"] if r["device"] == "cuda")
    elif not usable:
        assert "no GPU found" in text


@needs_cuda
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a[2])
def test_train_step_checks_host_batches_as_the_cpu_does(arch, rng):
    """Host batches on "cuda" are checked as on the CPU (a batch already in the
    kernels' form: its values only, in numpy here, validation.ready_values_ok; any
    other: the full checks, which convert or raise): the same errors, nothing the
    caller passed modified, and a batch in another dtype or integer type converted,
    not refused. (tests/test_cuda_plan.py checks that the CPU's compiled check is not
    loaded for it.)"""
    sizes, act, loss = arch
    cpu, gpu = twins(sizes, act, loss, "float32")
    X, y = batch_for(sizes, loss, rng)
    X = X.astype(np.float32)
    y = y.astype(np.float32) if y.dtype.kind == "f" else y
    # a ready batch and its float64 / int32 twin give the same step on both devices
    y_other = y.astype(np.float64) if y.dtype.kind == "f" else y.astype(np.int32)
    for Xs, ys in ((X, y), (X.astype(np.float64), y_other)):
        ref = cpu.train_step(Xs, ys, fastbp.SGD(cpu, lr=0.1))
        got = float(gpu.train_step(Xs, ys, fastbp.SGD(gpu, lr=0.1)))
        np.testing.assert_allclose(got, ref, rtol=RTOL["float32"])
    bad_X = X.copy()
    bad_X[1, 0] = np.nan
    bad_y = y.copy()
    if loss == "softmax_cross_entropy":
        bad_y[2] = sizes[-1]
    elif loss == "bce_with_logits":
        bad_y[2, 0] = 1.5
    else:
        bad_y[2, 0] = np.inf
    for Xs, ys, what in ((bad_X, y, "X"), (X, bad_y, "y")):
        kept = (Xs.copy(), ys.copy())
        with pytest.raises(ValueError) as on_cpu:
            cpu.train_step(Xs, ys, fastbp.SGD(cpu, lr=0.1))
        with pytest.raises(ValueError) as on_gpu:
            gpu.train_step(Xs, ys, fastbp.SGD(gpu, lr=0.1))
        assert str(on_gpu.value) == str(on_cpu.value)
        assert str(on_gpu.value).startswith(what)
        np.testing.assert_array_equal(Xs, kept[0])
        np.testing.assert_array_equal(ys, kept[1])
