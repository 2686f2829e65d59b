"""The vectorisable exp, expm1, tanh (both forms) and sigmoid (kernels/cpu/elementary.py)
against numpy over their whole range: within a few units in the last place wherever the
result is a normal number, and NaN and the infinities handled as numpy does (for tanh,
the sign of zero too: test_tanh_keeps_the_sign_of_zero). The float32 comparison below
cannot catch a shortened polynomial (tanh_for_float32's degree 10 fit, 2.8e-15
relative, still rounds the same everywhere); the accuracy test here does."""
import subprocess
import sys

import numpy as np
import pytest
from numba import njit
from scipy.special import expit

from fastbp.kernels.cpu import activations, elementary
from fastbp.kernels.cpu._jit import scalar as elementary_function


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
    "tanh_for_float32": (elementary.tanh_for_float32, np.tanh),   # on any input
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


def _same_bits(a, b):
    """Where the float32 arrays a and b hold the same bits, NaN matching any NaN."""
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


def test_float32_tanh_rounds_as_the_general_tanh():
    """tanh_for_float32 (the tanh activation's on float32) against tanh, both rounded to
    float32, bit for bit: every 1009th float32 bit pattern, and 5000 patterns either
    side of 0, of 0.25 (where tanh's expm1 leaves its series for exp), of the first
    steps of the reduction's k ((2j + 1) ln2 / 4), of 9.010913 (tanh reaches 1 in
    float32), of 20 (the cap at |2x| = 40) and of inf, both signs.
    benchmarks/tanh_float32.py checks all 2**32."""
    edges = [0.0, 0.25, 9.010913, 20.0, np.inf] + [(2 * j + 1) * np.log(2) / 4
                                                     for j in range(4)]
    near = np.array(edges, np.float32).view(np.uint32).astype(np.int64)[:, None] \
        + np.arange(-5000, 5000)
    near = np.clip(near, 0, 0x7F800000).astype(np.uint32).ravel()
    every = np.arange(0, 1 << 32, 1009, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([every, near, near | np.uint32(0x80000000)]).view(np.float32)
    ours, general = np.empty_like(x), np.empty_like(x)
    APPLY["tanh_for_float32"](x, ours)
    APPLY["tanh"](x, general)
    same = _same_bits(ours, general)
    assert same.all(), x[~same][:10]


@elementary_function
def _tanh_through_expm1(x):
    """tanh's formula through the general expm1, the form tanh had before its exp
    side was shortened (kernels/cpu/elementary.py, ``tanh``)."""
    x = float(x)
    return elementary._tanh_from(x, elementary.expm1(-2.0 * abs(x)))


def test_tanh_gives_the_bits_of_its_expm1_form():
    """tanh caps -2|x| at -40 and scales by 2**k once; that must change no result:
    bit for bit against the formula through expm1 on the accuracy inputs, their
    neighbours either side, 10000 floats either side of |x| = 0.25 (the series/exp
    switch) and of 20 (the cap), both signs, every 1009th float32 bit pattern and the
    special values."""
    edges = np.array([0.25, 20.0])
    near = np.concatenate([e + np.arange(-10000, 10000) * np.spacing(e) for e in edges])
    x = np.concatenate([_inputs(), near, -near, [np.nan, np.inf, -np.inf]])
    x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    x32 = np.arange(0, 1 << 32, 1009, dtype=np.uint64).astype(np.uint32).view(np.float32)
    with np.errstate(invalid="ignore"):   # signalling NaN patterns among them
        x32 = x32.astype(np.float64)
    for inputs in (x, x32):
        ours, reference = np.empty_like(inputs), np.empty_like(inputs)
        APPLY["tanh"](inputs, ours)
        _vectorised(_tanh_through_expm1)(inputs, reference)
        same = (ours.view(np.int64) == reference.view(np.int64)) | (
            np.isnan(ours) & np.isnan(reference))
        assert same.all(), inputs[~same][:10]


def test_tanh_keeps_the_sign_of_zero():
    x = np.array([0.0, -0.0])
    for name in ("tanh", "tanh_for_float32"):
        out = np.empty_like(x)
        APPLY[name](x, out)
        np.testing.assert_array_equal(np.signbit(out), [False, True], err_msg=name)


def test_the_tanh_activation_picks_by_input_type():
    """tanh_as, and through it the tanh activation: tanh_for_float32 for float32
    inputs, tanh for float64, chosen when compiled (their float64 results differ in
    the last bits, so float64 outputs tell the two apart)."""
    @njit(error_model="numpy", fastmath={"nsz", "arcp", "contract"})
    def both(x32, x64, out):
        for i in range(x32.shape[0]):
            out[0, i] = elementary.tanh_as(x32[i])
            out[1, i] = elementary.tanh_as(x64[i])
            out[2, i] = activations._tanh(x32[i], 0.0)
            out[3, i] = activations._tanh(x64[i], 0.0)

    x64 = np.random.default_rng(1).standard_normal(100_000) * 3.0
    x32 = x64.astype(np.float32)
    out = np.empty((4, x64.size))
    both(x32, x64, out)
    for_float32, general = np.empty_like(x64), np.empty_like(x64)
    APPLY["tanh_for_float32"](x32, for_float32)
    APPLY["tanh"](x64, general)
    for row, ref in ((0, for_float32), (1, general), (2, for_float32), (3, general)):
        np.testing.assert_array_equal(out[row], ref, err_msg=f"row {row}")
    general32 = np.empty_like(x64)
    APPLY["tanh"](x32, general32)
    assert not np.array_equal(for_float32, general32)   # the two do differ in float64


def test_compiling_the_tanh_forms_prints_no_numba_ir_warning():
    """numba issue #9489 makes inlining the tanh forms through ``tanh_as`` warn
    NumbaIRAssumptionWarning ("variable ... is not in scope", some 35 lines each) on
    Python 3.11; elementary.py silences those variables' warnings, which a tanh
    network's first compile printed. In a fresh process, where pytest's own warning
    filters do not stand in front of the module's."""
    code = (   # the loop of test_the_tanh_activation_picks_by_input_type: it warned
        "import warnings\n"
        "import numpy as np\n"
        "from numba import njit\n"
        "from fastbp.kernels.cpu import activations, elementary\n"
        "@njit(error_model='numpy', fastmath={'nsz', 'arcp', 'contract'})\n"
        "def both(x32, x64, out):\n"
        "    for i in range(x32.shape[0]):\n"
        "        out[0, i] = elementary.tanh_as(x32[i])\n"
        "        out[1, i] = elementary.tanh_as(x64[i])\n"
        "        out[2, i] = activations._tanh(x32[i], 0.0)\n"
        "        out[3, i] = activations._tanh(x64[i], 0.0)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    both(np.ones(3, np.float32), np.ones(3), np.empty((4, 3)))\n"
        "print([w.category.__name__ for w in caught])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert "NumbaIRAssumptionWarning" not in out.stdout + out.stderr, out.stderr[-2000:]
