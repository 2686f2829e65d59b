"""The vectorisable exp, expm1, tanh and sigmoid (kernels/cpu/elementary.py) against
numpy over their whole range: within a few units in the last place wherever the result
is a normal number, and NaN, the infinities and signed zeros handled as numpy does."""
import numpy as np
import pytest
from numba import njit
from scipy.special import expit

from fastbp.kernels.cpu import elementary


def _vectorised(fn):
    @njit(error_model="numpy", fastmath={"nsz", "arcp", "contract"})
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])
    return apply


CASES = {
    "exp": (elementary.exp, np.exp),
    "expm1": (elementary.expm1, np.expm1),
    "tanh": (elementary.tanh, np.tanh),
    "sigmoid": (elementary.sigmoid, expit),
}
APPLY = {name: _vectorised(fn) for name, (fn, _) in CASES.items()}


def _inputs():
    rng = np.random.default_rng(0)
    return np.concatenate([
        np.linspace(-800.0, 800.0, 200_001),
        np.logspace(-300, 2.9, 3000), -np.logspace(-300, 2.9, 3000),
        rng.standard_normal(10_000) * 3.0,
        [0.0, -0.0, 1e-320, -1e-320, 0.5, -0.5, 709.78, -745.1],
    ])


@pytest.mark.parametrize("name", CASES)
def test_accurate_where_normal(name):
    x = _inputs()
    out = np.empty_like(x)
    APPLY[name](x, out)
    with np.errstate(all="ignore"):
        ref = CASES[name][1](x)
    normal = np.isfinite(ref) & (np.abs(ref) > np.finfo(np.float64).tiny)
    rel = np.abs(out[normal] - ref[normal]) / np.abs(ref[normal])
    assert rel.max() < 4 * np.finfo(np.float64).eps, x[normal][rel.argmax()]
    # where numpy's result is 0 or inf (overflow, underflow) ours agrees
    extreme = np.isfinite(x) & ~normal
    np.testing.assert_array_equal(np.isinf(out[extreme]), np.isinf(ref[extreme]))
    assert np.all(np.abs(out[extreme & ~np.isinf(ref)]) <= 1e-300)


@pytest.mark.parametrize("name", CASES)
def test_special_values(name):
    x = np.array([np.nan, np.inf, -np.inf])
    out = np.empty_like(x)
    APPLY[name](x, out)
    with np.errstate(all="ignore"):
        ref = CASES[name][1](x)
    np.testing.assert_array_equal(out, ref)


def test_float32_inputs_are_widened():
    x = np.linspace(-20, 20, 10_001).astype(np.float32)
    out = np.empty_like(x)
    APPLY["tanh"](x, out)
    np.testing.assert_allclose(out, np.tanh(x.astype(np.float64)), rtol=2e-7, atol=1e-38)
