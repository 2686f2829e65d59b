"""pytest-benchmark suite of the CPU kernels: every kernel of fastbp.kernels.registry
(the fused linear layer and its epilogues, every activation's passes, every loss, SGD)
and every optimizer update (the same cases as the asv suites in benchmarks/).

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
from fastbp.concurrency import start_pool
from fastbp.kernels import codes, registry
from fastbp.kernels import cpu

DTYPES = ["float32", "float64"]
TANH = codes.ACTIVATION_CODES["tanh"]
start_pool()   # kernels called directly: concurrency.start_pool says why


def normal(shape, dtype, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(rng.standard_normal(shape) * scale, dtype=dtype)


def run(benchmark, fn):
    """Warm ``fn`` up (compile, touch buffers), then time it with ``benchmark``."""
    fn()
    return benchmark(fn)


CASES = registry.bench_cases()


@pytest.mark.benchmark(group="kernel")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, activation, sizes", CASES,
                         ids=[" ".join(filter(None, (k.name, a, str(s)))) for k, a, s in CASES])
def test_kernel(benchmark, kernel, activation, sizes, dtype):
    """Each kernel of fastbp.kernels.registry at the sizes and activations asv times."""
    code = codes.ACTIVATION_CODES[activation] if activation else TANH
    problem = kernel.problem(np.random.default_rng(1), sizes, dtype, code, reference=False)
    arrays = registry.device_arrays(problem, "cpu", dtype)
    run(benchmark, kernel.bound("cpu", arrays, code))
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


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
