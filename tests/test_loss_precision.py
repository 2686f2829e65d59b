"""Loss values for huge logits: no cancellation between large terms.

The cross-entropy row loss used to be max + log(sum exp(z - max)) - z[y]: with logits of
1e12 the max swallowed log(sumexp) (0.693115234375 instead of ln 2 = 0.6931471805599453)
and from 1e16 on the value was 0. Binary cross-entropy's max(z, 0) - z*t cancels the
same way when t is near 1. Each value is checked against a float64 computation done the
stable way with exact arithmetic where it matters (math.fsum, fractions), for equal and
unequal large logits, in both dtypes, on the CPU kernels, the API, the float64
reference and the CUDA kernels (simulator).
"""
import math
from fractions import Fraction

import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice
from fastbp.kernels import codes, reference
from fastbp.kernels import cpu

LN2 = math.log(2.0)
BIG = [1.0, 1e6, 1e12, 1e14, 1e15, 1e16, 1e20, 1e30, 3e38]


def _stable_cross_entropy(Z, labels):
    """Mean over rows of (max - z_y) + log(sum exp(z - max)), in float64, from the
    logits as stored (exact differences via Fraction)."""
    total = []
    for z, y in zip(np.asarray(Z), labels):
        m = max(Fraction(float(v)) for v in z)
        sumexp = math.fsum(math.exp(float(Fraction(float(v)) - m)) for v in z)
        total.append(float(m - Fraction(float(z[y]))) + math.log(sumexp))
    return math.fsum(total) / len(total)


def _stable_bce(Z, T):
    """Mean of (1 - t) max(z, 0) - t min(z, 0) + log1p(exp(-|z|)) with exact products."""
    terms = []
    for z, t in zip(np.asarray(Z, np.float64).ravel(), np.asarray(T, np.float64).ravel()):
        fz, ft = Fraction(float(z)), Fraction(float(t))
        terms.append(float((1 - ft) * max(fz, 0) - ft * min(fz, 0))
                     + math.log1p(math.exp(-abs(float(z)))))
    return math.fsum(terms) / len(terms)


def _cases(dtype):
    """(Z, labels): equal large logits, unequal ones, negative ones, mixed rows."""
    out = []
    limit = float(np.finfo(dtype).max)
    for L in BIG:
        if L > limit:
            continue
        out.append(np.array([[L, L]], dtype))
        out.append(np.array([[L, L, -L]], dtype))
        out.append(np.array([[-L, -L]], dtype))
        out.append(np.array([[L, np.nextafter(dtype(L), dtype(0))]], dtype))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_value_through_the_api_is_ln2_for_every_L(dtype):
    """The report's case: W = 0, b = [L, L], one row of ones, label 1."""
    for L in BIG:
        if L > float(np.finfo(dtype).max):
            continue
        net = fastbp.MLP([2, 2], loss="softmax_cross_entropy", dtype=dtype.__name__)
        net.layers[0].W = np.zeros((2, 2))
        net.layers[0].b = np.array([L, L])
        X, y = np.ones((1, 2)), np.array([1])
        assert net.compute_loss(X, y) == pytest.approx(LN2, rel=1e-7), L
        assert net.backward(X, y) == pytest.approx(LN2, rel=1e-7), L
        np.testing.assert_allclose(net.grads, [0.5, 0.5, -0.5, -0.5, 0.5, -0.5], atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_kernel_and_reference_against_stable_float64(dtype):
    for Z in _cases(dtype):
        for label in range(Z.shape[1]):
            labels = np.full(Z.shape[0], label, np.int64)
            expected = _stable_cross_entropy(Z, labels)
            dZ = np.empty_like(Z)
            got = cpu.softmax_cross_entropy(Z, labels, dZ)
            ref, _ = reference.softmax_cross_entropy(Z, labels)
            tol = 1e-6 if dtype == np.float32 else 1e-14
            assert got == pytest.approx(expected, rel=tol, abs=tol), (Z, label)
            assert ref == pytest.approx(expected, rel=1e-14, abs=1e-14), (Z, label)


def _cross_entropy_in_order(Z, labels):
    """The kernel's cross-entropy, one operation at a time in its documented order
    (kernels/cpu/losses.py): z - max in Z's dtype, each exponential in float64
    (elementary.exp), their sum left to right in float64, dZ = e rounded to the dtype,
    times scale / sum; the row losses (max - z_y) + log(sum) summed in row order."""
    from fastbp.kernels.cpu import elementary
    dtype = Z.dtype.type
    scale = 1.0 / Z.shape[0]
    dZ = np.empty_like(Z)
    total = 0.0
    for i, y in enumerate(labels):
        m = Z[i, 0]
        for v in Z[i, 1:]:
            m = max(m, v)
        e = [elementary.exp(float(v - m)) for v in Z[i]]   # v - m: dtype arithmetic
        sumexp = 0.0
        for v in e:
            sumexp += v
        inv = scale / sumexp
        for j, v in enumerate(e):
            dZ[i, j] = dtype(float(dtype(v)) * inv)
        dZ[i, y] = dtype(float(dZ[i, y]) - scale)
        total += (float(m) - float(Z[i, y])) + math.log(sumexp)
    return total * scale, dZ


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_kernel_keeps_its_evaluation_order(dtype):
    """Bit for bit the order above: how the kernel's loops are arranged (the
    exponentials in a float64 row on the stack, summed after) must not change a
    result."""
    rng = np.random.default_rng(11)
    for _ in range(40):
        rows, classes = (int(v) for v in rng.integers(1, 40, 2))
        scale = 10 ** rng.uniform(-2, 2)
        Z = (rng.standard_normal((rows, classes + 1)) * scale).astype(dtype)
        labels = rng.integers(0, classes + 1, rows)
        dZ = np.empty_like(Z)
        loss = cpu.softmax_cross_entropy(Z, labels, dZ)
        want_loss, want_dZ = _cross_entropy_in_order(Z, labels)
        assert np.float64(loss).tobytes() == np.float64(want_loss).tobytes()
        assert dZ.tobytes() == want_dZ.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_keeps_its_order_either_side_of_the_stack_row(dtype):
    """As above for rows as wide as the float64 row their exponentials go to on the
    stack (losses._STACK_ROW classes), and wider, which go through it in chunks; and a
    batch large enough (40 x 1000) to be cut into row blocks for the thread pool,
    each block's row on its own thread's stack (its loss is the blocks' sums added,
    so its bits are not the row-order sum's: dZ is compared bit for bit, the loss to
    float64 rounding)."""
    from fastbp.kernels.cpu import losses
    rng = np.random.default_rng(12)
    for rows, classes in ((3, losses._STACK_ROW - 1), (3, losses._STACK_ROW),
                          (3, losses._STACK_ROW + 1), (3, losses._STACK_ROW + 300),
                          (40, 1000)):
        Z = (rng.standard_normal((rows, classes)) * 4.0).astype(dtype)
        labels = rng.integers(0, classes, rows)
        dZ = np.empty_like(Z)
        loss = cpu.softmax_cross_entropy(Z, labels, dZ)
        want_loss, want_dZ = _cross_entropy_in_order(Z, labels)
        assert dZ.tobytes() == want_dZ.tobytes(), Z.shape
        if rows == 3:
            assert np.float64(loss).tobytes() == np.float64(want_loss).tobytes(), Z.shape
        else:
            assert loss == pytest.approx(want_loss, rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_has_no_cancellation_near_t_1(dtype):
    # z large, t just below 1: the loss is z (1 - t), about 11.9 here in float32
    z = dtype(1e8)
    t = np.nextafter(dtype(1), dtype(0))
    cases = [(np.array([[z]], dtype), np.array([[t]], dtype)),
             (np.array([[-z, z, 3.0]], dtype), np.array([[1.0 - t, t, 0.25]], dtype)),
             (np.array([[1e30, -1e30]], dtype), np.array([[1.0, 0.0]], dtype))]
    for Z, T in cases:
        expected = _stable_bce(Z, T)
        got = cpu.bce_with_logits(Z, T, np.empty_like(Z))
        ref, _ = reference.bce_with_logits(Z, T)
        tol = 1e-6 if dtype == np.float32 else 1e-14
        assert got == pytest.approx(expected, rel=tol, abs=tol), (Z, T)
        assert ref == pytest.approx(expected, rel=1e-14, abs=1e-14), (Z, T)


needs_cuda = pytest.mark.skipif(not fdevice.cuda_status()[0],
                                reason=f"CUDA not usable: {fdevice.cuda_status()[1]}")


@needs_cuda
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_losses_against_stable_float64(dtype):
    from numba import cuda
    from fastbp.kernels import cuda as K
    Z = np.array([[1e16, 1e16], [1e14, -1e14]], dtype)
    labels = np.array([1, 1], np.int64)
    dZ = cuda.device_array_like(Z)
    got = K.softmax_cross_entropy(cuda.to_device(Z), cuda.to_device(labels), dZ)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert got == pytest.approx(_stable_cross_entropy(Z, labels), rel=tol)
    Zb = np.array([[1e8, -1e8]], dtype)
    t = np.nextafter(dtype(1), dtype(0))
    Tb = np.array([[t, 1.0 - t]], dtype)
    got = K.bce_with_logits(cuda.to_device(Zb), cuda.to_device(Tb),
                            cuda.device_array_like(Zb))
    assert got == pytest.approx(_stable_bce(Zb, Tb), rel=tol)


def test_loss_codes_cover_every_loss():
    """The review covered every loss fastbp has: a new one must be added here."""
    assert set(codes.LOSSES) == {"softmax_cross_entropy", "mse", "bce_with_logits"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_narrow_rows_give_the_row_at_a_time_bits(dtype):
    """Cross-entropy of rows of at most 32 classes runs 8 rows side by side
    (kernels/cpu/losses.py, _softmax_cross_entropy_narrow): its losses and gradients
    are those of the row-at-a-time form to the bit, for partial groups, one class,
    huge and tiny logits, infinities and NaN."""
    from fastbp.kernels.cpu import losses
    from fastbp.kernels.cpu._jit import serial   # the kernels' own flags: inlined
    # functions take their caller's, and "contract" changes roundings

    @serial
    def both(Z, labels, dZ_narrow, dZ_wide, scale):
        n = Z.shape[0]
        return (losses._softmax_cross_entropy_narrow(Z, labels, dZ_narrow, scale, 0, n),
                losses._softmax_cross_entropy_wide(Z, labels, dZ_wide, scale, 0, n))

    rng = np.random.default_rng(11)
    for batch, classes in ((32, 10), (7, 1), (29, 3), (17, 32), (1, 5), (64, 10)):
        for spread in (1e-3, 1.0, 30.0, 1e4, 1e30):
            Z = (rng.standard_normal((batch, classes)) * spread).astype(dtype)
            if spread == 30.0:
                Z[rng.integers(batch), rng.integers(classes)] = np.inf
                Z[rng.integers(batch), rng.integers(classes)] = -np.inf
                Z[rng.integers(batch), rng.integers(classes)] = np.nan
            labels = rng.integers(0, classes, batch).astype(np.int64)
            narrow, wide = np.empty_like(Z), np.empty_like(Z)
            loss_narrow, loss_wide = both(Z, labels, narrow, wide, 1.0 / batch)
            assert narrow.tobytes() == wide.tobytes(), (batch, classes, spread)
            assert np.float64(loss_narrow).tobytes() == np.float64(loss_wide).tobytes()
