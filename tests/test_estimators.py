"""fastbp.MLPClassifier / MLPRegressor: scikit-learn's estimator checks, agreement with
scikit-learn's own MLP, and fastbp's additions.

scikit-learn's test_mlp.py runs against these classes in test_sklearn_mlp_suite.py; this
module checks what that file does not: that a fit follows scikit-learn's algorithms to
rounding (same random_state, same loss curve and predictions, float64), pickling,
fastbp's extra parameters, and the import without scikit-learn.

The instances given to ``check_estimator`` are small (16 hidden units, up to 100 epochs)
to keep the run short; every check passes with them, so the expected failures
(``fastbp.estimators.EXPECTED_FAILED_CHECKS``) are empty. Checks that skip themselves:
check_array_api_input (SCIPY_ARRAY_API is not set) and the pandas checks when pandas is
not installed.
"""
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastbp

sklearn = pytest.importorskip("sklearn")
from sklearn import neural_network  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastbp.estimators import (EXPECTED_FAILED_CHECKS, MLPClassifier,  # noqa: E402
                               MLPRegressor)

CHECKED = [
    MLPClassifier(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01,
                  random_state=0),
    MLPRegressor(hidden_layer_sizes=(16,), max_iter=100, learning_rate_init=0.01,
                 random_state=0),
]


@parametrize_with_checks(
    CHECKED, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS[type(est).__name__])
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def _blobs(n=150, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[0, 0], [4, 4], [-4, 4]], float)
    y = np.arange(n) % 3
    return centers[y] + rng.standard_normal((n, 2)), y


def test_string_labels_and_probabilities():
    X, y = _blobs()
    names = np.array(["cat", "dog", "emu"])[y]
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=60, learning_rate_init=0.02,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    proba = clf.predict_proba(X)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(clf.classes_[proba.argmax(1)], clf.predict(X))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-10)
    assert clf.score(X, names) > 0.95
    assert clf.n_features_in_ == 2 and clf.n_iter_ >= 1 and len(clf.loss_curve_) == clf.n_iter_
    assert isinstance(clf.net_, fastbp.MLP)


def test_partial_fit_continues_training():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.02, batch_size=16,
                        random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:50], y[:50], classes=[0, 1, 2])
    for _ in range(30):
        clf.partial_fit(X, y)
    # scikit-learn's meaning: n_iter_ counts the epochs of the last call, t_ the samples
    assert clf.n_iter_ == 1 and clf.t_ == 50 + 30 * 150 and len(clf.loss_curve_) == 31
    assert clf.score(X, y) > 0.95
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X[:3], np.array([0, 1, 7]))


def _fit_both(make_params, X, y, **fit_kwargs):
    """(fastbp, scikit-learn) estimators fitted with the same parameters and data."""
    make_params = dict(make_params)
    ours = MLPClassifier if make_params.pop("classifier") else MLPRegressor
    theirs = getattr(neural_network, ours.__name__)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = ours(**make_params).fit(X, y, **fit_kwargs)
        b = theirs(**make_params).fit(X, y, **fit_kwargs)
    return a, b


AGREEMENT = {
    "adam": dict(classifier=True, solver="adam", max_iter=15, learning_rate_init=0.01),
    "sgd_invscaling_nesterov": dict(classifier=True, solver="sgd", max_iter=15,
                                    learning_rate="invscaling", power_t=0.25,
                                    learning_rate_init=0.5, batch_size=20),
    "sgd_adaptive": dict(classifier=True, solver="sgd", max_iter=40, tol=0.05,
                         learning_rate="adaptive", nesterovs_momentum=False,
                         n_iter_no_change=2, learning_rate_init=0.2),
    "lbfgs_tanh": dict(classifier=True, solver="lbfgs", max_iter=30, activation="tanh"),
    "early_stopping_logistic": dict(classifier=True, solver="adam", max_iter=20,
                                    early_stopping=True, activation="logistic",
                                    learning_rate_init=0.01),
    "regressor_sample_weight": dict(classifier=False, solver="adam", max_iter=15,
                                    learning_rate_init=0.01, alpha=0.1),
    "regressor_poisson_lbfgs": dict(classifier=False, solver="lbfgs", max_iter=30,
                                    loss="poisson"),
}


@pytest.mark.parametrize("case", sorted(AGREEMENT))
def test_follows_sklearn_to_rounding(case):
    """Same parameters and random_state as scikit-learn's MLP: same initial weights,
    shuffles and split, so in float64 the loss curve, weights and predictions agree to
    rounding error. This pins the losses (half squared error, log loss, Poisson), alpha's
    scaling, sample weights, the learning-rate schedules, momentum and Adam."""
    params = dict(AGREEMENT[case], hidden_layer_sizes=(12, 7), random_state=3)
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, size=(120, 5))
    fit_kwargs = {}
    if params["classifier"]:
        y = (X[:, 0] + X[:, 1] ** 2 > 0.3).astype(int) + (X[:, 2] > 0.5)
    elif params.get("loss") == "poisson":
        y = rng.poisson(np.exp(X[:, 0]))
    else:
        y = np.c_[X[:, 0] - 2 * X[:, 1] * X[:, 2], np.sin(3 * X[:, 3])]
        fit_kwargs["sample_weight"] = rng.uniform(0.2, 2.0, size=len(X))
    a, b = _fit_both(params, X, y, **fit_kwargs)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.loss_, b.loss_, rtol=1e-7)
    if hasattr(b, "loss_curve_"):
        np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-7)
    if getattr(b, "validation_scores_", None) is not None:
        np.testing.assert_allclose(a.validation_scores_, b.validation_scores_, rtol=1e-7)
    for ours, theirs in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)
    if params["classifier"]:
        np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-8)
    else:
        np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-7, atol=1e-9)


def test_coefs_are_views_and_assignable():
    X, y = _blobs(60)
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(2, 5), (5, 3)]
    assert np.shares_memory(clf.coefs_[0], clf.net_.params)
    before = clf.predict_proba(X)
    # a new array assigned to coefs_ becomes the network's weights
    clf.coefs_[1] = np.zeros((5, 3))
    clf.intercepts_[1] = np.array([0.0, 5.0, 0.0])
    assert (clf.predict(X) == 1).all() and not np.allclose(clf.predict_proba(X), before)
    assert np.shares_memory(clf.coefs_[1], clf.net_.params)


def test_fastbp_extras():
    X, y = _blobs(90)
    for solver in ("adamw", "rmsprop"):
        clf = MLPClassifier(hidden_layer_sizes=(8,), activation="gelu", solver=solver,
                            max_iter=60, learning_rate_init=0.01, random_state=1,
                            weight_decay=0.01 if solver == "adamw" else 0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            assert clf.fit(X, y).score(X, y) > 0.9
        clf.partial_fit(X, y)   # continues with the same optimizer
    with pytest.raises(ValueError, match="weight_decay"):
        MLPClassifier(weight_decay=0.1, solver="adam").fit(X, y)
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, dtype="float32",
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert clf.net_.dtype == np.float32 and clf.coefs_[0].dtype == np.float32
    assert clf.predict_proba(X.astype(np.float32)).dtype == np.float32
    assert clf.predict_proba(X).dtype == np.float64   # result_type(X, weights)


def test_pickle_and_clone_keep_predictions_and_optimizer():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=10, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(copy.predict_proba(X), clf.predict_proba(X))
    assert np.shares_memory(copy.coefs_[0], copy.net_.params)
    # the Adam state came along: both continue identically (random_state=0 reseeds
    # the shuffle of each call)
    copy.partial_fit(X, y)
    clf.partial_fit(X, y)
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    fresh = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    fresh.partial_fit(X, y, classes=[0, 1, 2])
    assert copy._optimizer.t == clf._optimizer.t > fresh._optimizer.t
    params = sklearn.base.clone(clf).get_params()
    assert params == clf.get_params() and params["hidden_layer_sizes"] == (8,)


def test_errors_as_sklearn():
    X, y = _blobs(30)
    with pytest.raises(NotFittedError):
        MLPRegressor().predict(X)
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is "
                                         "expecting 2 features"):
        clf.predict(np.ones((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(np.full((4, 2), np.nan))
    # a single class fits, as in scikit-learn, and predicts it
    one = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one.fit(X, np.full(30, "a"))
    assert (one.predict(X) == "a").all()


@pytest.mark.parametrize("params, message", [
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
    (dict(activation="swish"), "activation"),
    (dict(solver="newton"), "solver"),
    (dict(max_iter=0), "max_iter"),
    (dict(batch_size=-1), "batch_size"),
    (dict(learning_rate_init=0), "learning_rate_init"),
    (dict(dtype="int8"), "dtype"),
    (dict(momentum=1.5), "momentum"),
])
def test_invalid_parameters_fail_in_fit(params, message):
    clf = MLPClassifier(**params)   # no validation in __init__, as sklearn requires
    X, y = _blobs(30)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


def test_dropin_benchmark_runs():
    """benchmarks/sklearn_dropin.py on one small case: both libraries fit, and with the
    same seed and algorithm they score the same."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sklearn_dropin.py"
    spec = importlib.util.spec_from_file_location("sklearn_dropin", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    [row] = bench.main(["--datasets", "iris", "--repeats", "1", "--max-iter", "5",
                        "--hidden", "8"])
    assert row["fastbp_score"] == row["sklearn_score"] and row["fastbp_iter"] == 5
    assert row["fastbp_s"] > 0 and row["sklearn_s"] > 0


def test_import_without_sklearn():
    """A subprocess where importing sklearn fails: ``import fastbp`` works, and the
    estimators say that they need scikit-learn."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
import fastbp
net = fastbp.MLP([2, 3, 2], seed=0)
try:
    fastbp.MLPClassifier
except ImportError as exc:
    assert "scikit-learn" in str(exc), exc
else:
    raise AssertionError("no ImportError")
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
