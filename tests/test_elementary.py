"""The vectorisable exp, expm1, tanh (both forms) and sigmoid (kernels/cpu/elementary.py)
against numpy over their whole range: within a few units in the last place wherever the result
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
    "tanh_float32": (elementary.tanh_float32, np.tanh),   # any input, not only float32
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


def test_float32_tanh_rounds_as_the_general_tanh():
    """tanh_float32 (the float32 tanh activation's) against tanh, both rounded to
    float32, bit for bit: every 61st float32 bit pattern and the neighbourhoods of
    0, 1 (k changes sign), ln 2 / 4 (the reduction's k steps to -1), 9 (tanh reaches
    1 in float32) and 20 (the cap at |2x| = 40). benchmarks/tanh_float32.py checks all
    2**32."""
    bits = np.arange(0, 1 << 32, 61, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.0, 0.1732868, 0.5, 1.0, 9.0, 9.010913, 20.0, np.inf], np.float32)
    near = edges.view(np.uint32)[:, None] + np.arange(-5000, 5000, dtype=np.int64)
    near = np.clip(near, 0, 0x7F800000).astype(np.uint32).ravel()
    x = np.concatenate([bits, near, near | np.uint32(0x80000000)]).view(np.float32)
    ours, general = np.empty_like(x), np.empty_like(x)
    _vectorised(elementary.tanh_float32)(x, ours)
    APPLY["tanh"](x, general)
    differ = (ours.view(np.uint32) != general.view(np.uint32)) & ~(
        np.isnan(ours) & np.isnan(general))
    assert not differ.any(), x[differ][:10]


def test_tanh_as_picks_by_input_type():
    """tanh_as: tanh_float32 for float32 inputs, tanh for float64, chosen when compiled
    (the float64 result of tanh_float32 differs from tanh's in its last bits, so the
    float64 outputs tell the two apart)."""
    @njit(error_model="numpy", fastmath={"nsz", "arcp", "contract"})
    def both(x32, x64, out32, out64):
        for i in range(x32.shape[0]):
            out32[i] = elementary.tanh_as(x32[i])
            out64[i] = elementary.tanh_as(x64[i])

    x64 = np.random.default_rng(1).standard_normal(100_000) * 3.0
    x32 = x64.astype(np.float32)
    out32, out64 = np.empty(x32.size), np.empty(x64.size)
    both(x32, x64, out32, out64)
    ref32, ref64 = np.empty_like(out32), np.empty_like(out64)
    _vectorised(elementary.tanh_float32)(x32, ref32)
    APPLY["tanh"](x64, ref64)
    np.testing.assert_array_equal(out32, ref32)
    np.testing.assert_array_equal(out64, ref64)
    general32 = np.empty_like(out32)
    APPLY["tanh"](x32, general32)
    assert not np.array_equal(out32, general32)   # the two do differ in float64
