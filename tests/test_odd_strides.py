"""Arrays with a size-1 axis whose stride is not the canonical one.

numpy flags ``x[None, :]`` (row stride 0), ``np.atleast_2d(x)``, ``X[3:2:-1]`` (negative
row stride) and a one-row Fortran array (row stride = item size) C-contiguous, so they
used to reach the kernels uncopied; the kernels took BLAS's leading dimension from the
row stride, OpenBLAS refused the product (printing "parameter number 10 had an illegal
value") and fastbp returned whatever the workspace held from the previous call. Each
case must give exactly what a fresh C-ordered copy gives, through every entry point,
and the kernels' own gemm must accept such operands.
"""
import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice
from fastbp.kernels import reference
from fastbp.kernels.cpu.blas import gemm

SIZES = [6, 5, 4]


def _odd_rows(x, table):
    """One-row views of the 1-D row ``x`` (and of row 3 of ``table``) with odd strides."""
    return {
        "x[None, :]": x[None, :],
        "atleast_2d": np.atleast_2d(x),
        "X[3:2:-1]": table[3:2:-1],
        "fortran row": np.asfortranarray(x[None, :]),
        "broadcast row": np.broadcast_to(x, (1, x.size)),
    }


def _cases():
    rng = np.random.default_rng(7)
    table = rng.standard_normal((5, SIZES[0]))
    x = table[3].copy()
    return _odd_rows(x, table)


CASES = _cases()


def _strides_are_odd(a):
    return a.strides != np.array(a, order="C").strides


def test_the_cases_are_what_they_claim():
    for name, a in CASES.items():
        assert a.shape == (1, SIZES[0]) and a.flags.c_contiguous, name
        assert _strides_are_odd(a), name


def _reference_logits(net, X):
    weights = [np.asarray(l.W, np.float64) for l in net.layers]
    biases = [np.asarray(l.b, np.float64) for l in net.layers]
    codes = [fastbp.kernels.codes.ACTIVATION_CODES[a] for a in net.activations]
    return reference.network_forward(weights, biases, codes, X)[-1][1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_and_predict(case, dtype):
    net = fastbp.MLP(SIZES, activation="tanh", dtype=dtype, seed=0)
    X = CASES[case]
    before = X.copy()
    # Fill the workspace with another row's outputs first: a skipped product would
    # hand those back.
    net.forward(np.full((1, SIZES[0]), 3.0))
    out = net.forward(X)
    expected = _reference_logits(net, np.array(X))
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == "float32" else 1e-12)
    assert net.predict(X)[0] == expected.argmax()
    np.testing.assert_array_equal(X, before)


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_step_backward_and_loss(case):
    X = CASES[case]
    y = np.array([2])
    a = fastbp.MLP(SIZES, activation="tanh", dtype="float64", seed=1)
    b = fastbp.MLP(SIZES, activation="tanh", dtype="float64", seed=1)
    a.forward(np.full((1, SIZES[0]), -2.0))
    assert a.compute_loss(X, y) == b.compute_loss(np.array(X), y)
    assert a.backward(X, y) == b.backward(np.array(X), y)
    np.testing.assert_array_equal(a.grads, b.grads)
    oa, ob = fastbp.SGD(a, lr=0.1), fastbp.SGD(b, lr=0.1)
    assert a.train_step(X, y, oa) == b.train_step(np.array(X), y, ob)
    np.testing.assert_array_equal(a.params, b.params)


def test_online_sgd_with_row_views_learns_like_copies():
    """The report's online SGD: one row at a time as X[i][None, :]."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, SIZES[0]))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    a = fastbp.MLP(SIZES, activation="tanh", dtype="float32", seed=2)
    b = fastbp.MLP(SIZES, activation="tanh", dtype="float32", seed=2)
    oa, ob = fastbp.SGD(a, lr=0.05), fastbp.SGD(b, lr=0.05)
    for i in range(len(X)):
        a.train_step(X[i][None, :], y[i:i + 1], oa)
        b.train_step(np.array(X[i:i + 1]), y[i:i + 1], ob)
    np.testing.assert_array_equal(a.params, b.params)


@pytest.mark.parametrize("case", ["x[None, :]", "X[3:2:-1]", "fortran row"])
def test_fit_and_train_epoch(case):
    X = CASES[case]
    y = np.array([1])
    a = fastbp.MLP(SIZES, activation="relu", dtype="float64", seed=4)
    b = fastbp.MLP(SIZES, activation="relu", dtype="float64", seed=4)
    a.fit(X, y, epochs=3, batch_size=1, optimizer=fastbp.SGD(a, lr=0.1), verbose=False)
    b.fit(np.array(X), y, epochs=3, batch_size=1, optimizer=fastbp.SGD(b, lr=0.1),
          verbose=False)
    np.testing.assert_array_equal(a.params, b.params)
    la = a.train_epoch(X, y, fastbp.SGD(a, lr=0.1), batch_size=1)
    lb = b.train_epoch(np.array(X), y, fastbp.SGD(b, lr=0.1), batch_size=1)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(a.params, b.params)


def test_estimators_predict_proba():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, SIZES[0]))
    y = (X[:, 0] > 0).astype(np.int64)
    clf = fastbp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    clf.fit(X, y)
    reg = fastbp.MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    reg.fit(X, X[:, 1])
    for name, row in _odd_rows(X[3].copy(), X).items():
        clf.predict_proba(X[:2])   # another batch first, as the report did
        np.testing.assert_array_equal(clf.predict_proba(row),
                                      clf.predict_proba(np.array(row)), err_msg=name)
        reg.predict(X[:2])
        np.testing.assert_array_equal(reg.predict(row), reg.predict(np.array(row)),
                                      err_msg=name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_gemm_takes_one_row_operands_with_any_stride(dtype):
    """The kernels' own gemm never derives a leading dimension from a size-1 axis."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal(7).astype(dtype)
    W = rng.standard_normal((3, 7)).astype(dtype)
    for name, row in _odd_rows(x, np.tile(x, (5, 1))).items():
        C = np.full((1, 3), 123.0, dtype)
        gemm(False, True, 1.0, np.ascontiguousarray(row), W, 0.0, C)
        np.testing.assert_allclose(C[0], W.astype(np.float64) @ x.astype(np.float64),
                                   rtol=1e-5, err_msg=name)
        out = np.full((1, 3), 7.0, dtype)
        gemm(False, True, 1.0, np.array(row), W, 0.0, out[::-1])
        np.testing.assert_allclose(out, C, rtol=1e-6, err_msg=name)


needs_cuda = pytest.mark.skipif(not fdevice.cuda_status()[0],
                                reason=f"CUDA not usable: {fdevice.cuda_status()[1]}")


@needs_cuda
@pytest.mark.parametrize("case", ["x[None, :]", "X[3:2:-1]"])
def test_cuda_forward_and_train_step(case):
    X = CASES[case]
    y = np.array([0])
    cpu_net = fastbp.MLP(SIZES, activation="tanh", dtype="float64", seed=8)
    gpu_net = fastbp.MLP(SIZES, activation="tanh", dtype="float64", seed=8, device="cuda")
    np.testing.assert_allclose(gpu_net.forward(X), cpu_net.forward(np.array(X)),
                               rtol=1e-12)
    la = gpu_net.train_step(X, y, fastbp.SGD(gpu_net, lr=0.1))
    lb = cpu_net.train_step(np.array(X), y, fastbp.SGD(cpu_net, lr=0.1))
    assert abs(la - lb) <= 1e-12 * max(1.0, abs(lb))
    np.testing.assert_allclose(fdevice.to_host(gpu_net.params), cpu_net.params,
                               rtol=0, atol=1e-12)
