"""pytest-benchmark suite of whole networks on the CPU: MLP.forward, MLP.backward and
the training step MLP.train_step (forward, loss, backward and SGD in one compiled call).

Run once each as plain tests by the default ``python -m pytest``; time them with

    python -m pytest tests/benchmarks -n0 --benchmark-enable --benchmark-only
"""
import numpy as np
import pytest

import fastbp

NETWORKS = {
    # name: (sizes, batch), tanh hidden layers, softmax cross-entropy
    "tiny": ([64, 64, 10], 32),
    "mnist": ([784, 128, 10], 64),
    "medium": ([784, 512, 512, 10], 128),
}


def network(name, dtype):
    sizes, batch = NETWORKS[name]
    rng = np.random.default_rng(1)
    net = fastbp.MLP(sizes, activation="tanh", dtype=dtype, seed=0)
    X = np.ascontiguousarray(rng.standard_normal((batch, sizes[0])), dtype=dtype)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return net, X, y


@pytest.mark.benchmark(group="network")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("pass_", ["forward", "backward", "train_step"])
def test_network(benchmark, pass_, name, dtype):
    net, X, y = network(name, dtype)
    opt = fastbp.SGD(net, lr=1e-3)
    fn = {"forward": lambda: net.forward(X),
          "backward": lambda: net.backward(X, y),
          "train_step": lambda: net.train_step(X, y, opt)}[pass_]
    fn()   # compile (or load numba's cache) and allocate the workspaces: never timed
    result = benchmark(fn)
    assert np.isfinite(result).all()
    assert np.isfinite(net.params).all()
