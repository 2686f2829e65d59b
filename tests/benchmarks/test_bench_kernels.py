"""pytest-benchmark suite of the CPU kernels: the fused linear layer, every activation's
passes, every loss and every optimizer update (the same kernels as the asv suites in
benchmarks/).

The default ``python -m pytest`` runs these once each as plain tests
(pyproject's addopts has --benchmark-disable), so they never rot; to time them:

    python -m pytest tests/benchmarks -n0 --benchmark-enable --benchmark-only

Each test calls its kernel once before handing it to the ``benchmark`` fixture, so
compilation (or loading numba's cache) is never timed. Benchmarks measure, tests
assert: the only checks here are that outputs are finite.
"""
import inspect

import numpy as np
import pytest

import fastbp
import fastbp.optim
from fastbp.kernels import codes
from fastbp.kernels import cpu

DTYPES = ["float32", "float64"]
SLOPE = codes.DEFAULT_LEAKY_RELU_SLOPE
TANH = codes.ACTIVATION_CODES["tanh"]


def normal(shape, dtype, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)


def run(benchmark, fn):
    """Warm ``fn`` up (compile, touch buffers), then time it with ``benchmark``."""
    fn()
    return benchmark(fn)


@pytest.mark.benchmark(group="linear")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,n_in,n_out", [(64, 784, 128), (128, 512, 512)])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_linear(benchmark, direction, batch, n_in, n_out, dtype):
    X = normal((batch, n_in), dtype, 1)
    W = normal((n_out, n_in), dtype, 2, scale=n_in ** -0.5)
    b = normal((n_out,), dtype, 3)
    S, A = np.empty((batch, n_out), dtype), np.empty((batch, n_out), dtype)
    cpu.linear_forward(X, W, b, TANH, SLOPE, S, A)
    if direction == "forward":
        run(benchmark, lambda: cpu.linear_forward(X, W, b, TANH, SLOPE, S, A))
        assert np.isfinite(A).all()
    else:
        dA, dS = normal((batch, n_out), dtype, 4), np.empty((batch, n_out), dtype)
        dX, dW, db = (np.empty((batch, n_in), dtype), np.empty((n_out, n_in), dtype),
                      np.empty(n_out, dtype))
        run(benchmark, lambda: cpu.linear_backward(dA, A, S, X, W, TANH, SLOPE, dS, dX,
                                                   dW, db, True))
        assert np.isfinite(dW).all() and np.isfinite(dX).all()


@pytest.mark.benchmark(group="activation")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", codes.ACTIVATIONS)
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_activation(benchmark, direction, activation, dtype):
    code = codes.ACTIVATION_CODES[activation]
    S = normal((256, 512), dtype, 1, scale=2.0)
    A = np.empty_like(S)
    cpu.activation_forward(S, A, code, SLOPE)
    if direction == "forward":
        run(benchmark, lambda: cpu.activation_forward(S, A, code, SLOPE))
        assert np.isfinite(A).all()
    else:
        dA, dS = normal(S.shape, dtype, 2), np.empty_like(S)
        run(benchmark, lambda: cpu.activation_backward(dA, A, S, dS, code, SLOPE))
        assert np.isfinite(dS).all()


@pytest.mark.benchmark(group="loss")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", codes.LOSSES)
def test_loss(benchmark, loss, dtype):
    code = codes.LOSS_CODES[loss]
    batch, n = 1024, 10
    rng = np.random.default_rng(3)
    Z, dZ = normal((batch, n), dtype, 1, scale=3.0), np.empty((batch, n), dtype)
    if code == codes.SOFTMAX_CROSS_ENTROPY:
        labels, targets = rng.integers(0, n, batch).astype(np.int64), np.zeros((0, n), dtype)
    else:
        labels = np.zeros(0, np.int64)
        targets = np.ascontiguousarray(rng.uniform(0.0, 1.0, (batch, n)), dtype=dtype)
    value = run(benchmark, lambda: cpu.loss_forward_backward(code, Z, labels, targets, dZ))
    assert np.isfinite(value) and np.isfinite(dZ).all()


def optimizer_class(name):
    """The fastbp.Optimizer subclass for kernels.codes.OPTIMIZERS' ``name``, or None."""
    code = codes.OPTIMIZER_CODES[name]
    for module in (fastbp, fastbp.optim):
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, fastbp.optim.Optimizer)
                    and getattr(obj, "code", None) == code):
                return obj
    return None


@pytest.mark.benchmark(group="optimizer")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", codes.OPTIMIZERS)
def test_optimizer_update(benchmark, optimizer, dtype):
    cls = optimizer_class(optimizer)
    if cls is None:
        pytest.skip(f"no fastbp.Optimizer subclass has the code of {optimizer!r}")
    net = fastbp.MLP([1024, 256], dtype=dtype, seed=0)   # ~262 k parameters
    net.grads[...] = normal(net.grads.shape, dtype, 1, scale=1e-3)
    args = cls(net).compiled_args_for(net)   # default hyperparameters
    run(benchmark, lambda: cpu.optimizer_update(*args))
    assert np.isfinite(net.params).all()
