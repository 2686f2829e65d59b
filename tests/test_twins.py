"""kernels/cpu and kernels/cuda are twins: the same names, signatures and meaning.

What both packages export, and every public function both twin modules define, must
have the same signature; the exceptions are listed below with the reason for each.
Then the meanings that once differed, each checked on both devices on tiny inputs
(numba's CUDA simulator, root conftest.py): an unknown optimizer code raises on both;
``gemm`` takes alpha and beta on both; an empty dX skips the input gradient on both;
the CUDA ``network_train_epoch`` and ``network_jacobian`` give the CPU's results; and
``init_params`` on "cuda" draws the CPU's values in place. Last, the bad-input check
that device-resident training data live on the network's GPU.
"""
import importlib
import importlib.util
import inspect
import os
import pkgutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice
from fastbp import device_inputs
from fastbp.concurrency import start_pool
from fastbp.plan import plan_for
from fastbp.kernels import cpu as K_cpu

usable, why = fdevice.cuda_status()
needs_cuda = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")

# Names one package exports and the other does not, and why.
CPU_ONLY_EXPORTS = {
    # one compiled copy of the passes per activation set; a CUDA kernel is compiled per
    # activation code at its first launch, so every network's passes are specialised
    "network_passes": "activation-set specialisation of the CPU's compiled passes",
    "training_passes": "optimizer specialisation of the CPU's compiled training passes",
    # scikit-learn's output losses run on the host for either device
    "output_loss_grad": "sklearn_loss, host-only", "l2_penalty": "sklearn_loss, host-only",
    "adam_eps_at": "sklearn_loss, host-only", "sklearn_passes": "sklearn_loss, host-only",
}
CUDA_ONLY_EXPORTS = {
    # launch geometry (thread-block tile, product tile shape); the CPU has threads
    # (fastbp.threads) and BLAS instead
    "config": "launch geometry", "launch_config": "launch geometry",
}
# Modules with no twin, and why.
CPU_ONLY_MODULES = {
    "backward_update": "the CPU step's fusion of backward and update",
    "checks": "the API's checks of a host batch's values",
    "sklearn_loss": "scikit-learn's losses, run on the host for either device",
    "blocks": "how a loop splits across CPU threads (a launch grid on the GPU)",
    "elementary": "exp/tanh written for LLVM's vectoriser (the GPU has libdevice)",
    "_optimise_once": "how numba's CPU codegen links callees (numba-cuda links through "
                      "NVVM)",
    "_numba_wrap": "how _optimise_once and _inline_once wrap a step of numba's CPU "
                   "compiler",
    "_inline_once": "numba's inliner for the CPU kernels' helpers (numba-cuda has an "
                    "InlineWorker of its own, and its compile spent no time there)",
    "borrow": "arrays without numba's CPU reference counts (numba-cuda's kernels run "
              "without its runtime's counting)",
    "mkl": "loading Intel MKL for the CPU's larger products (the GPU's are fastbp's own "
           "kernels)",
    "private_scope": "loading MKL's layers in a symbol scope of their own (for mkl)",
}
CUDA_ONLY_MODULES = {
    "plan": "launch plans (on the CPU a step is already one compiled call)",
    "rows": "row gathers of data on the GPU (numpy's take on the host)",
    "reduce": "block reductions and their scratch (a CPU sum stays in registers)",
    "_launch": "launch geometry and the launch recorder",
    "fused": "a narrow network's step as one kernel (on the CPU a step is one compiled "
             "call already)",
}


@pytest.fixture(autouse=True)
def _pool_started():
    """The CPU kernels are called directly below: numba's thread pool must be launched
    first (fastbp.concurrency.start_pool says why), as the API's entry points do."""
    start_pool()


def _signature(f):
    return inspect.signature(getattr(f, "py_func", f))   # numba dispatchers: the Python


def _public_functions(module):
    return {name: v for name, v in vars(module).items()
            if not name.startswith("_") and callable(v) and not isinstance(v, type)
            and getattr(getattr(v, "py_func", v), "__module__", None) == module.__name__}


@needs_cuda
def test_the_packages_export_the_same_names_with_the_same_signatures():
    from fastbp.kernels import cuda as K_gpu
    cpu, gpu = set(K_cpu.__all__), set(K_gpu.__all__)
    assert cpu - gpu == set(CPU_ONLY_EXPORTS), "CPU-only exports changed"
    assert gpu - cpu == set(CUDA_ONLY_EXPORTS), "CUDA-only exports changed"
    for name in sorted(cpu & gpu):
        a, b = getattr(K_cpu, name), getattr(K_gpu, name)
        assert _signature(a) == _signature(b), (name, _signature(a), _signature(b))
        # from the module of the same name on both sides ("file for file")
        module = getattr(a, "py_func", a).__module__.rsplit(".", 1)[1]
        assert getattr(b, "__module__").rsplit(".", 1)[1] == module, name


@needs_cuda
def test_the_modules_pair_up_and_what_both_define_agrees():
    import fastbp.kernels.cuda as K_gpu
    cpu = {m.name for m in pkgutil.iter_modules(K_cpu.__path__)}
    gpu = {m.name for m in pkgutil.iter_modules(K_gpu.__path__)}
    assert cpu - gpu == set(CPU_ONLY_MODULES)
    assert gpu - cpu == set(CUDA_ONLY_MODULES)
    shared = 0
    for name in sorted(cpu & gpu):
        a = _public_functions(importlib.import_module(f"fastbp.kernels.cpu.{name}"))
        b = _public_functions(importlib.import_module(f"fastbp.kernels.cuda.{name}"))
        for fn in sorted(set(a) & set(b)):
            assert _signature(a[fn]) == _signature(b[fn]), (name, fn)
            shared += 1
    assert shared >= 20   # the check compares something


def _tiny(device, dtype="float64", **kw):
    return fastbp.MLP([3, 4, 2], activation="tanh", dtype=dtype, seed=5, device=device,
                      **kw)


def _kernel_step_args(net, X, y, opt_code):
    """network_train_step's arguments for ``net``, with ``opt_code`` as given."""
    plan = plan_for(net, X.shape[0])
    labels, targets = np.asarray(y, np.int64), np.zeros((0, 2), net.dtype)
    if net.device == "cuda":
        X, labels, targets = (fdevice.to_device(a) for a in (X, labels, targets))
    opt = fastbp.SGD(net, lr=0.1)
    _, _, _, state, hparams, step = opt.compiled_args_for(net)
    return plan.train_step_args(X, labels, targets, (opt_code, state, hparams, step))


@needs_cuda
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_an_unknown_optimizer_code_raises_before_anything_changes(device):
    net = _tiny(device)
    X, y = np.random.default_rng(0).standard_normal((2, 3)), [0, 1]
    before = fdevice.to_host(net.params).copy()
    kernels = fdevice.kernels(device)
    passes = net._kernels
    with pytest.raises(ValueError, match=r"opt_code: expected one of 0 \(sgd\).*got 7"):
        passes.network_train_step(*_kernel_step_args(net, X, y, 7))
    p, g = net.params, net.grads
    state = fdevice.empty((0, net.n_params), net.dtype, device)
    hparams = np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"got -1$"):
        kernels.optimizer_update(-1, p, g, state, hparams, 1)
    np.testing.assert_array_equal(fdevice.to_host(net.params), before)


@needs_cuda
def test_gemm_takes_alpha_and_beta_on_both_devices():
    from fastbp.kernels.cpu import blas as cpu_blas
    from fastbp.kernels.cuda import blas as gpu_blas
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((4, 3)), rng.standard_normal((5, 4))   # op(A)=A.T, op(B)=B.T
    C0 = rng.standard_normal((3, 5))
    want = 0.5 * (A.T @ B.T) + 2.0 * C0
    C_cpu = C0.copy()
    cpu_blas.gemm(True, True, 0.5, A, B, 2.0, C_cpu)
    C_gpu = fdevice.to_device(C0)
    gpu_blas.gemm(True, True, 0.5, fdevice.to_device(A), fdevice.to_device(B), 2.0, C_gpu)
    np.testing.assert_allclose(C_cpu, want, rtol=1e-12)
    np.testing.assert_allclose(C_gpu.copy_to_host(), want, rtol=1e-12)
    # beta = 0: C is not read (BLAS's rule), so NaN in it does not propagate
    C_nan = fdevice.to_device(np.full((3, 5), np.nan))
    gpu_blas.gemm(True, True, 0.5, fdevice.to_device(A), fdevice.to_device(B), 0.0, C_nan)
    np.testing.assert_allclose(C_nan.copy_to_host(), 0.5 * (A.T @ B.T), rtol=1e-12)


@needs_cuda
def test_an_empty_dX_skips_the_input_gradient_on_both_and_None_is_refused():
    X, y = np.random.default_rng(2).standard_normal((2, 3)), np.array([1, 0])
    grads = {}
    for device in ("cpu", "cuda"):
        net = _tiny(device)
        plan = plan_for(net, 2)
        args = [X, y, np.zeros((0, 2))]
        if device == "cuda":
            args = [fdevice.to_device(a) for a in args]
        # the loss pass leaves the output gradient where backprop reads it
        net._kernels.network_loss(*plan.loss_args(*args))
        net._kernels.backprop(*plan.backprop_args(args[0], np.empty((0, 0))))
        grads[device] = fdevice.to_host(net.grads).copy()
        if device == "cuda":
            with pytest.raises(TypeError, match="dX: expected an array"):
                net._kernels.backprop(*plan.backprop_args(args[0], None))
    assert np.abs(grads["cpu"]).min() > 0   # every gradient was written
    np.testing.assert_allclose(grads["cuda"], grads["cpu"], rtol=1e-12, atol=1e-15)


@needs_cuda
@pytest.mark.filterwarnings("ignore:overflow encountered",   # the simulator's numpy
                            "ignore:invalid value encountered")
def test_cuda_train_epoch_twin_reports_a_divergent_step_as_the_cpu():
    """The CUDA twin launches every step, but returns the CPU's (steps run, count)."""
    results = {}
    for device in ("cpu", "cuda"):
        net = fastbp.MLP([1, 1], loss="mse", dtype="float64", seed=0, device=device)
        net.layers[0].W = np.array([[1e308]])   # the first loss overflows, then W and b
        X = np.ones((3, 1))
        targets = np.zeros((3, 1))
        labels = np.zeros(0, np.int64)
        if device == "cuda":
            X, targets, labels = (fdevice.to_device(a) for a in (X, targets, labels))
        plan = plan_for(net, 1)
        opt = fastbp.SGD(net, lr=1.0)
        code, _, _, state, hparams, first = opt.compiled_args_for(net)
        losses = np.full(3, -1.0)
        ran, nonfinite = net._kernels.network_train_epoch(*plan.train_epoch_args(
            X, labels, targets, 1, (code, state, hparams, first), losses))
        results[device] = (ran, nonfinite, losses[:ran].copy())
    (ran_c, bad_c, loss_c), (ran_g, bad_g, loss_g) = results["cpu"], results["cuda"]
    assert (ran_g, bad_g) == (ran_c, bad_c) == (1, 2)
    assert loss_g[0] == loss_c[0] == np.inf


@needs_cuda
@pytest.mark.parametrize("checkpoint", [None, 2])
def test_cuda_jacobian_matches_the_cpu(checkpoint):
    sizes = [3, 4, 4, 2] if checkpoint else [3, 4, 2]
    X = np.random.default_rng(3).standard_normal((2, 3))
    J = {d: fastbp.jacobian(fastbp.MLP(sizes, activation="tanh", dtype="float64",
                                       seed=5, device=d, checkpoint=checkpoint), X)
         for d in ("cpu", "cuda")}
    assert isinstance(J["cuda"], np.ndarray) and J["cuda"].shape == (2, 2, 3)
    np.testing.assert_allclose(J["cuda"], J["cpu"], rtol=1e-12, atol=1e-14)


@needs_cuda
def test_init_params_on_cuda_draws_the_cpu_values_in_place():
    cpu, gpu = _tiny("cpu"), _tiny("cuda")
    params, grads = gpu.params, gpu.grads
    cpu.init_params(11)
    gpu.init_params(11)
    assert gpu.params is params and gpu.grads is grads and gpu.device == "cuda"
    np.testing.assert_array_equal(fdevice.to_host(gpu.params), cpu.params)
    assert not fdevice.to_host(gpu.grads).any()


@needs_cuda
def test_the_reduction_scratch_is_per_thread():
    from fastbp.kernels.cuda.reduce import scratch
    mine = scratch("partials")
    assert scratch("partials") is mine and scratch("counter") is not mine
    other = []
    t = threading.Thread(target=lambda: other.append(scratch("partials")))
    t.start()
    t.join()
    assert other[0] is not mine


class _OnAnotherGPU:
    """A device array as CuPy or PyTorch present one: only __cuda_array_interface__,
    its pointer on the GPU that ``pointer_device`` (stubbed below) says."""

    def __init__(self, shape, typestr, pointer):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr,
                                         "data": (pointer, False), "strides": None,
                                         "version": 3}


@needs_cuda
def test_device_data_on_another_gpu_are_refused_before_any_launch(monkeypatch):
    net = _tiny("cuda")
    X = _OnAnotherGPU((2, 3), "<f8", 0x7F0000001000)
    y = _OnAnotherGPU((2,), "<i8", 0x7F0000002000)
    on_gpu1 = {0x7F0000001000}
    # the driver's answer (CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL), which the simulator
    # cannot give: X on GPU 1, y on GPU 0 like the network
    monkeypatch.setattr(device_inputs, "pointer_device", lambda p: 1 if p in on_gpu1 else 0)
    before = fdevice.to_host(net.params).copy()
    opt = fastbp.SGD(net, lr=0.1)
    with pytest.raises(ValueError, match=r"X: expected a device array on GPU 0 .*GPU 1"):
        net.train_step(X, y, opt)
    with pytest.raises(ValueError, match=r"X: expected a device array on GPU 0"):
        net.train_epoch(X, y, opt, batch_size=1)
    on_gpu1.clear()
    on_gpu1.add(0x7F0000002000)
    with pytest.raises(ValueError, match=r"y: expected a device array on GPU 0 .*GPU 1"):
        net.train_step(X, y, opt)
    np.testing.assert_array_equal(fdevice.to_host(net.params), before)
    assert opt.steps == 0
    # a pointer the driver does not know: a ValueError naming the argument too
    def unknown(p):
        raise ValueError(f"expected device memory, but the CUDA driver knows none at {p:#x}")
    monkeypatch.setattr(device_inputs, "pointer_device", unknown)
    with pytest.raises(ValueError, match=r"X: expected device memory, .* at 0x7f0000001000"):
        net.train_step(X, y, opt)
    # both on the network's GPU: the check passes them on, used in place
    monkeypatch.setattr(device_inputs, "pointer_device", lambda p: 0)
    from fastbp.cuda_plan import runner
    X_out, labels, _ = device_inputs.checked(net, X, y, runner(net))
    assert X_out is X and labels is y


def test_pointer_device_cannot_be_asked_in_the_simulator():
    if not fdevice.simulator_enabled():
        pytest.skip("the simulator's stand-in driver only")
    assert device_inputs.pointer_device(0x7F0000001000) is None
    assert device_inputs.device_of(np.zeros(2)) is None   # no interface, no context


POINTER_DEVICE_SCRIPT = r"""
import types
from numba.cuda.cudadrv import driver
from fastbp import device_inputs
asked = []
def answer(attribute, pointer):
    asked.append((attribute, int(pointer)))
    if int(pointer) == 0xBAD:
        raise driver.CudaAPIError(1, "CUDA_ERROR_INVALID_VALUE")
    return 1
driver.driver = types.SimpleNamespace(cuPointerGetAttribute=answer)   # no GPU here
assert device_inputs.pointer_device(0x7F0000001000) == 1
assert asked == [(driver.binding.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                  0x7F0000001000)], asked
try:
    device_inputs.pointer_device(0xBAD)
except ValueError as exc:
    assert "knows none at 0xbad" in str(exc), exc
else:
    raise AssertionError("no ValueError")
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="numba-cuda is not installed: its driver binding is what this "
                           "checks")
def test_pointer_device_asks_numba_cudas_driver_binding():
    """With numba-cuda itself (not the simulator), in a subprocess: the driver is asked
    for CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL (its answer stubbed: no GPU here), and an
    address it does not know is a ValueError."""
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", POINTER_DEVICE_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
