"""The compiled scikit-learn epoch's passes (kernels/cpu/sklearn_loss.py) on the paths
test_estimators.py and scikit-learn's own tests leave out: the softmax loss and gradient
with sample weights, soft labels and a NaN row against numpy; a weighted ten-class fit
(the layers through their transposed weights, linear_forward_transposed, and alpha's
penalty folded into Adam's update) against scikit-learn's; and the same in float32.

Only compiled variants the suite already builds are used (float64 and float32 relu
networks trained with adam, the float64 loss pass of the lbfgs solver).
"""
import warnings

import numpy as np
import pytest
from scipy.special import xlogy

from fastbp.kernels import codes
from fastbp.kernels.cpu import output_loss_grad
from fastbp.kernels.cpu.sklearn_loss import softmax_workspaces

sklearn = pytest.importorskip("sklearn")
from sklearn import neural_network  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from fastbp.estimators import MLPClassifier  # noqa: E402


def _softmax_reference(Z, Y, sw):
    """scikit-learn's softmax and log loss (sklearn/neural_network/_base.py), in
    float64: (loss, gradient w.r.t. Z)."""
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    eps = np.finfo(Z.dtype).eps
    rows = -xlogy(Y, np.clip(P, eps, 1 - eps)).sum(axis=1)
    w = np.ones(len(Z)) if sw is None else sw
    return (w * rows).sum() / w.sum(), (P - Y) * w[:, None] / w.sum()


@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_loss_grad_matches_numpy(weighted):
    rng = np.random.default_rng(4)
    n, k = 13, 10   # a remainder after every vector width along the rows
    Z = rng.normal(0, 3, (n, k))
    Y = np.zeros((n, k))
    Y[np.arange(n), rng.integers(0, k, n)] = 1.0
    Y[0] = rng.dirichlet(np.ones(k))   # soft labels: several nonzero entries
    Z[1, 3] = 60.0   # a probability clipped to 1 - eps, the others to eps
    sw = rng.uniform(0.2, 2.0, n) if weighted else None
    dZ = np.empty_like(Z)
    loss = output_loss_grad(codes.SKLEARN_OUTPUT_CODES["softmax"], Z, Y,
                            np.zeros(0) if sw is None else sw, np.finfo(float).eps, dZ,
                            *softmax_workspaces(n, k, Z.dtype))
    ref_loss, ref_dZ = _softmax_reference(Z, Y, sw)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    np.testing.assert_allclose(dZ, ref_dZ, rtol=1e-12, atol=1e-17)
    Z[5, 2] = np.nan   # NaN propagates to the loss (fit stops on it)
    assert np.isnan(output_loss_grad(codes.SKLEARN_OUTPUT_CODES["softmax"], Z, Y,
                                     np.zeros(0), np.finfo(float).eps, dZ,
                                     *softmax_workspaces(n, k, Z.dtype)))
    assert np.isnan(dZ[5]).all() and np.isfinite(np.delete(dZ, 5, axis=0)).all()


def _ten_classes(dtype):
    rng = np.random.RandomState(1)
    y = np.arange(150) % 10
    X = rng.normal(size=(10, 6))[y] + rng.normal(0, 0.8, (150, 6))
    return X.astype(dtype), y, rng.uniform(0.2, 2.0, len(X))


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-7), (np.float32, 2e-4)])
def test_weighted_ten_class_fit_follows_sklearn(dtype, rtol):
    """Ten outputs, sample weights, alpha and two minibatch sizes (the last one
    smaller): the loss curve, epochs and weights of scikit-learn's fit, to rounding
    of the dtype (scikit-learn keeps float32 data in float32 too)."""
    X, y, sw = _ten_classes(dtype)
    params = dict(hidden_layer_sizes=(12, 7), max_iter=12, learning_rate_init=0.01,
                  alpha=0.05, batch_size=64, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**params).fit(X, y, sample_weight=sw)
        theirs = neural_network.MLPClassifier(**params).fit(X, y, sample_weight=sw)
    assert ours.net_.dtype == dtype and len(ours.classes_) == 10
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol * 10, atol=rtol / 10)


def test_blocked_products_follow_sklearn():
    """digits' shapes (minibatches of 200 rows, 64 inputs, 100 hidden units, 10
    classes): the first layer's products have 1.28 million multiply-adds, so they run
    in blocks for OpenBLAS's small-matrix kernels (blas.gemm, where OpenBLAS runs its
    SkylakeX kernels); the fit still follows scikit-learn's to rounding."""
    rng = np.random.RandomState(2)
    y = np.arange(500) % 10
    X = rng.normal(size=(10, 64))[y] + rng.normal(0, 2.0, (500, 64))
    params = dict(hidden_layer_sizes=(100,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**params).fit(X, y)
        theirs = neural_network.MLPClassifier(**params).fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
