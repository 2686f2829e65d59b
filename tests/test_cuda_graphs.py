"""Steps replayed as CUDA graphs (kernels/cuda/plan.py) train exactly as launched ones.

A plan captures a step as a graph the second time it sees the same inputs (a host
batch staged into the same buffers, a device array passed again, an epoch's minibatch
in the next epoch), so these tests repeat inputs on purpose and
compare with the CPU step by step. In numba's CUDA simulator nothing is captured (the
"configured" launch path) and the same steps run launch by launch; on a real GPU
(FASTBP_TEST_REAL_GPU=1) the graphs must have been used, and the results must not
change. The stubbed-driver counts of graph launches are in test_cuda_plan.py.
"""
import numpy as np
import pytest

import fastbp
from fastbp import cuda_plan
from fastbp import device as fdevice

usable, why = fdevice.cuda_status()
pytestmark = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")

RTOL = {"float32": 2e-5, "float64": 1e-12}


def _assert_close(gpu, cpu, dtype, what):
    actual = fdevice.to_host(gpu.params).astype(np.float64)
    expected = np.asarray(cpu.params, np.float64)
    scale = max(float(np.abs(expected).max()), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=RTOL[dtype] * scale,
                               err_msg=what)


def _graphs_expected():
    from fastbp.kernels.cuda import plan
    return plan.launch_path() == "graph"


@pytest.mark.parametrize("optimizer, dtype", [("sgd", "float64"), ("adam", "float32")])
def test_repeated_inputs_train_as_on_the_cpu(optimizer, dtype):
    """Steps on one host batch, then on one device array, then two epochs, replayed as
    graphs (Adam's bias corrections read the step number on the device)."""
    from numba import cuda
    sizes = [6, 5, 3]
    rng = np.random.default_rng(7)
    cpu = fastbp.MLP(sizes, activation="tanh", dtype=dtype, seed=2)
    gpu = fastbp.MLP(sizes, activation="tanh", dtype=dtype, seed=2, device="cuda")
    kwargs = dict(lr=0.05, momentum=0.9) if optimizer == "sgd" else dict(lr=0.01)
    opt_cpu = fastbp.make_optimizer(optimizer, cpu, **kwargs)
    opt_gpu = fastbp.make_optimizer(optimizer, gpu, **kwargs)
    X = rng.standard_normal((4, 6)).astype(dtype)
    y = rng.integers(0, 3, 4)
    for _ in range(4):   # the same host batch: staged into the same device buffers
        l_cpu, l_gpu = cpu.train_step(X, y, opt_cpu), gpu.train_step(X, y, opt_gpu)
        assert abs(float(l_gpu) - l_cpu) <= 10 * RTOL[dtype] * max(abs(l_cpu), 1.0)
    _assert_close(gpu, cpu, dtype, "after steps on a host batch")
    dX, dy = cuda.to_device(X), cuda.to_device(y)
    for _ in range(3):   # the same device arrays, used in place
        cpu.train_step(X, y, opt_cpu), gpu.train_step(dX, dy, opt_gpu)
    _assert_close(gpu, cpu, dtype, "after steps on device arrays")
    # one graph per staging slot of the host batches, one for the device arrays
    from fastbp.device import PinnedBatches
    plans = cuda_plan.runner(gpu).plans
    assert len(plans[4].graphs) == (PinnedBatches.SLOTS + 1 if _graphs_expected() else 0)
    Xe = rng.standard_normal((12, 6)).astype(dtype)
    ye = rng.integers(0, 3, 12)
    for epoch in range(2):   # the second epoch replays each minibatch's graph
        h_cpu = cpu.train_epoch(Xe, ye, opt_cpu, batch_size=4)
        h_gpu = gpu.train_epoch(Xe, ye, opt_gpu, batch_size=4)
        np.testing.assert_allclose(h_gpu, h_cpu, rtol=10 * RTOL[dtype])
    _assert_close(gpu, cpu, dtype, "after two epochs")


def test_graphs_can_be_turned_off():
    from fastbp.kernels.cuda import launch_config, plan
    with launch_config(graphs=False):
        assert plan.launch_path() in ("pre-packed", "configured")
        net = fastbp.MLP([4, 3, 2], seed=0, device="cuda")
        opt = fastbp.SGD(net, lr=0.1)
        X, y = np.ones((2, 4)) * 0.5, np.array([0, 1])
        for _ in range(3):
            net.train_step(X, y, opt)
        assert not cuda_plan.runner(net).plans[2].graphs


def test_graphs_are_keyed_by_where_the_inputs_are():
    """A plan finds its graph by the inputs' device address and shape (plan._where), for
    numba device arrays and for any array that only exposes __cuda_array_interface__
    (CuPy arrays and PyTorch tensors are used as given), so a new view of the same rows
    finds the same graph. The simulator's arrays have neither (it captures no graphs)."""
    from fastbp.kernels.cuda import plan

    class Foreign:   # exposes the interface only, as CuPy and PyTorch arrays do
        __cuda_array_interface__ = {"data": (0x7F0000001000, False), "shape": (4, 3),
                                    "typestr": "<f8", "strides": None, "version": 3}

    assert plan._where(Foreign()) == (0x7F0000001000, (4, 3))
    if fdevice.simulator_enabled():
        return
    from numba import cuda
    a = cuda.to_device(np.arange(12.0).reshape(4, 3))
    assert plan._where(a[0:2]) == plan._where(a[0:2]) == (plan._where(a)[0], (2, 3))
    assert plan._where(a[2:4])[0] == plan._where(a)[0] + 2 * 3 * 8
