"""fastbp's scikit-learn estimators with device="cuda" against the same estimators on
the CPU: fit, partial_fit and predict agree to rounding, the network returns to the
host between calls, and a machine without a usable GPU gets a clear error.

Runs in numba's CUDA simulator (root conftest.py) and unchanged on a real GPU; the
networks and data are tiny (the simulator costs milliseconds per thread).
"""
import numpy as np
import pytest

pytest.importorskip("sklearn")

from fastbp import MLPClassifier, MLPRegressor  # noqa: E402
from fastbp import device as fdevice  # noqa: E402

usable, why = fdevice.cuda_status()
needs_cuda = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")


def _data(rng):
    X = rng.uniform(-1, 1, size=(24, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.3)
    return X, y


def _assert_same_fit(cpu, gpu, X):
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-10)
    for ours, theirs in zip(gpu.coefs_ + gpu.intercepts_, cpu.coefs_ + cpu.intercepts_):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    # between calls the network is back on the host, and coefs_ view its parameters
    assert gpu.net_.device == "cpu"
    assert all(np.shares_memory(c, gpu.net_.params) for c in gpu.coefs_)
    if hasattr(cpu, "predict_proba"):
        np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X),
                                   rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-9, atol=1e-12)


@pytest.fixture
def cuda_calls(monkeypatch):
    """Counts of calls into the CUDA kernels' network_forward and optimizer_update."""
    cuda_kernels = fdevice.kernels("cuda")
    counts = {}
    for name in ("network_forward", "optimizer_update"):
        def counted(*args, _name=name, _f=getattr(cuda_kernels, name), **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _f(*args, **kwargs)
        monkeypatch.setattr(cuda_kernels, name, counted)
    return counts


@needs_cuda
def test_classifier_fit_partial_fit_predict_match_cpu(cuda_calls):
    X, y = _data(np.random.RandomState(0))
    params = dict(hidden_layer_sizes=(4,), max_iter=2, batch_size=12, random_state=0)
    with pytest.warns(Warning):   # ConvergenceWarning: two epochs only
        cpu = MLPClassifier(**params).fit(X, y)
    assert not cuda_calls
    with pytest.warns(Warning):
        gpu = MLPClassifier(**params, device="cuda").fit(X, y)
    # two epochs of two minibatches, each a forward and an update on the device
    assert cuda_calls == {"network_forward": 4, "optimizer_update": 4}
    _assert_same_fit(cpu, gpu, X)
    # partial_fit continues from there with the solver's state, on each device
    cpu.partial_fit(X, y)
    gpu.partial_fit(X, y)
    _assert_same_fit(cpu, gpu, X)
    assert cuda_calls["optimizer_update"] == 6


@needs_cuda
@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_regressor_with_penalty_and_weights_matches_cpu(solver):
    rng = np.random.RandomState(1)
    X, _ = _data(rng)
    y = X[:, 0] - 2 * X[:, 1] * X[:, 2]
    sample_weight = rng.uniform(0.5, 2.0, size=len(X))
    params = dict(hidden_layer_sizes=(3,), activation="tanh", solver=solver, alpha=0.1,
                  max_iter=2, batch_size=12, random_state=0, learning_rate_init=0.05)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # ConvergenceWarning: two iterations only
        cpu = MLPRegressor(**params).fit(X, y, sample_weight=sample_weight)
        gpu = MLPRegressor(**params, device="cuda").fit(X, y, sample_weight=sample_weight)
    if solver == "lbfgs":
        assert gpu.n_iter_ == cpu.n_iter_
        np.testing.assert_allclose(gpu.loss_, cpu.loss_, rtol=1e-10)
        np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-9, atol=1e-12)
    else:
        _assert_same_fit(cpu, gpu, X)


def test_device_without_cuda_says_why(monkeypatch):
    monkeypatch.setattr(fdevice, "simulator_enabled", lambda: False)
    monkeypatch.setattr(fdevice, "cuda_package", lambda: None)
    X, y = _data(np.random.RandomState(0))
    with pytest.raises(fdevice.CudaUnavailableError, match='device="cuda" is not available'):
        MLPClassifier(hidden_layer_sizes=(2,), max_iter=1, device="cuda").fit(X, y)


def test_device_is_a_checked_parameter():
    X, y = _data(np.random.RandomState(0))
    with pytest.raises(ValueError, match="'device' parameter of MLPClassifier must be"):
        MLPClassifier(device="gpu").fit(X, y)
    assert MLPRegressor().get_params()["device"] == "cpu"
