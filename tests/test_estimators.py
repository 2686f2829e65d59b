"""fastbp.MLPClassifier / MLPRegressor: scikit-learn's estimator checks and basic use.

The instances checked are small (16 hidden units, up to 100 epochs) to keep the run
short; every check of ``check_estimator`` passes with them, so the expected failures
(``fastbp.estimators.EXPECTED_FAILED_CHECKS``) are empty. Checks skipped here and why:
check_array_api_input (SCIPY_ARRAY_API is not set) and the pandas checks (pandas is not
installed) skip themselves.
"""
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastbp
from fastbp.estimators import EXPECTED_FAILED_CHECKS, MLPClassifier, MLPRegressor

sklearn = pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

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
                        random_state=0).fit(X, names)
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
    assert clf.n_iter_ == 31 and clf.score(X, y) > 0.95
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X[:3], np.array([0, 1, 7]))


def test_regressor_single_and_multi_output():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(200, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=200, learning_rate_init=0.01,
                       random_state=0).fit(X, y)
    assert reg.predict(X).shape == (200,) and reg.score(X, y) > 0.95
    Y = np.c_[y, -y]
    reg.fit(X, Y)
    assert reg.predict(X).shape == (200, 2) and reg.n_outputs_ == 2


def test_solvers_dtype_and_refit_idempotent():
    X, y = _blobs()
    for solver in ("sgd", "adam", "adamw", "rmsprop"):
        clf = MLPClassifier(hidden_layer_sizes=(8,), solver=solver, max_iter=5,
                            learning_rate_init=0.01, random_state=1).fit(X, y)
        assert clf.optimizer_.name.lower() == solver
    clf32 = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    assert clf32.fit(X.astype(np.float32), y).net_.dtype == np.float32
    assert clf32.fit(X, y).net_.dtype == np.float64
    first = clf32.predict_proba(X)
    assert np.array_equal(clf32.fit(X, y).predict_proba(X), first)


def test_pickle_and_clone_keep_predictions():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=10, random_state=0).fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(copy.predict_proba(X), clf.predict_proba(X))
    assert copy.net_.layers[0].W.base is not None   # views into the rebuilt flat buffer
    copy.partial_fit(X, y)                          # the optimizer came along too
    assert copy.optimizer_.steps > clf.optimizer_.steps
    params = sklearn.base.clone(clf).get_params()
    assert params == clf.get_params() and params["hidden_layer_sizes"] == (8,)


@pytest.mark.parametrize("params, message", [
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
    (dict(activation="swish"), "activation"),
    (dict(solver="lbfgs"), "solver"),
    (dict(max_iter=0), "max_iter"),
    (dict(batch_size=-1), "batch_size"),
    (dict(learning_rate_init=0), "learning_rate_init"),
    (dict(dtype="int8"), "dtype"),
])
def test_invalid_parameters_fail_in_fit(params, message):
    clf = MLPClassifier(**params)   # no validation in __init__, as sklearn requires
    X, y = _blobs(30)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)


def test_works_without_sklearn():
    """A subprocess where importing sklearn fails: basic fit/predict/score still work."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
import numpy as np
import fastbp
from fastbp.estimators import HAVE_SKLEARN
assert not HAVE_SKLEARN
rng = np.random.default_rng(0)
X = rng.standard_normal((60, 2)); y = np.where(X[:, 0] > 0, "pos", "neg")
clf = fastbp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=40, learning_rate_init=0.02,
                           random_state=0).fit(X, y)
assert clf.score(X, y) > 0.9, clf.score(X, y)
assert clf.get_params()["max_iter"] == 40
clf.set_params(max_iter=5)
reg = fastbp.MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, random_state=0)
reg.fit(X, X[:, 0] * 2)
assert reg.score(X, X[:, 0] * 2) > 0.5
try:
    fastbp.MLPRegressor().predict(X)
except ValueError as exc:
    assert "not fitted" in str(exc)
else:
    raise AssertionError("predict before fit")
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
