"""Gradient clipping on device="cuda" uses the norm of the step's own gradient.

The launch plan once computed the clipping factor before the step's backward, from the
gradient buffer's previous contents (zeros at the first step, then the previous step's
gradient): clipped training on "cuda" silently differed from the CPU from the second
step on. Runs in numba's CUDA simulator (or on a GPU) on a tiny network, with a
max_grad_norm small enough that every step clips.
"""
import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice

usable, why = fdevice.cuda_status()
pytestmark = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")

OPTIMIZERS = {
    "sgd": lambda net: fastbp.SGD(net, lr=0.5, max_grad_norm=0.05),
    "sgd_momentum": lambda net: fastbp.SGD(net, lr=0.3, momentum=0.9, max_grad_norm=0.05),
    "adam": lambda net: fastbp.Adam(net, lr=0.05, max_grad_norm=0.05),
    "rmsprop": lambda net: fastbp.RMSprop(net, lr=0.01, max_grad_norm=0.05),
}


def _nets():
    return [fastbp.MLP([3, 4, 2], activation="tanh", dtype="float64", seed=1, device=d)
            for d in ("cpu", "cuda")]


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, 3)), rng.integers(0, 2, 8)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_clipped_steps_on_cuda_equal_the_cpu(name):
    X, y = _data()
    cpu, gpu = _nets()
    o_cpu, o_gpu = OPTIMIZERS[name](cpu), OPTIMIZERS[name](gpu)
    # every step clips: the gradient's norm is well above max_grad_norm
    cpu.backward(X[:4], y[:4])
    assert np.linalg.norm(cpu.grads) > 5 * 0.05
    for _ in range(3):   # train_step, one batch at a time
        np.testing.assert_allclose(float(gpu.train_step(X[:4], y[:4], o_gpu)),
                                   cpu.train_step(X[:4], y[:4], o_cpu), rtol=1e-12)
    np.testing.assert_allclose(gpu.train_epoch(X, y, o_gpu, batch_size=4),
                               cpu.train_epoch(X, y, o_cpu, batch_size=4), rtol=1e-12)
    np.testing.assert_allclose(fdevice.to_host(gpu.params), cpu.params, rtol=1e-11,
                               atol=1e-14)
