"""scikit-learn compatible estimators: ``MLPClassifier`` and ``MLPRegressor``.

They wrap :class:`fastbp.MLP` and :func:`fastbp.fit` behind scikit-learn's estimator
API (fit, partial_fit, predict, predict_proba, score, get_params, set_params), with
parameter names taken from ``sklearn.neural_network.MLPClassifier`` where the meaning is
the same::

    from fastbp import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
    clf.fit(X_train, y_train).score(X_test, y_test)

scikit-learn is optional. When it is importable the classes derive from its
``BaseEstimator`` and mixins, validate input with ``sklearn.utils.validation`` and pass
``sklearn.utils.estimator_checks.check_estimator`` (the few checks that cannot pass are
listed in ``EXPECTED_FAILED_CHECKS`` with the reason). Without it they still fit,
predict and score, with fastbp's own input checks and get_params/set_params.

Fitted attributes (trailing underscore, as scikit-learn does): ``net_`` (the
fastbp.MLP), ``optimizer_``, ``n_features_in_``, ``n_outputs_``, ``n_iter_``,
``loss_``, ``best_loss_``, ``loss_curve_``; ``classes_`` for the classifier;
``feature_names_in_`` when X had string column names (pandas).
"""
import inspect
import numbers

import numpy as np

from . import validation
from .kernels import codes

try:   # scikit-learn is an optional dependency
    from sklearn.base import BaseEstimator as _SkBaseEstimator
    from sklearn.base import ClassifierMixin as _SkClassifierMixin
    from sklearn.base import RegressorMixin as _SkRegressorMixin
    HAVE_SKLEARN = True
except ImportError:   # pragma: no cover - exercised by the no-sklearn test
    HAVE_SKLEARN = False

# check_estimator checks that cannot pass, with the reason (sklearn >= 1.6 takes this
# dict as ``expected_failed_checks``). Empty: every check passes with the settings
# tests/test_estimators.py uses.
EXPECTED_FAILED_CHECKS = {"MLPClassifier": {}, "MLPRegressor": {}}


class NotFittedError(ValueError, AttributeError):
    """Raised when predict or score comes before fit (scikit-learn's own class when it
    is installed)."""


if HAVE_SKLEARN:
    from sklearn.exceptions import NotFittedError  # noqa: F811


# -- fallbacks of the scikit-learn base classes ------------------------------------
class _FallbackBaseEstimator:
    """get_params/set_params from the __init__ signature, as sklearn.base does."""

    @classmethod
    def _get_param_names(cls):
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"Invalid parameter {key!r} for estimator "
                                 f"{type(self).__name__}; valid parameters: {valid}")
            setattr(self, key, value)
        return self

    def __repr__(self):
        defaults = inspect.signature(type(self).__init__).parameters
        shown = [f"{k}={v!r}" for k, v in self.get_params().items()
                 if not (k in defaults and defaults[k].default is v
                         or (k in defaults and _same(defaults[k].default, v)))]
        return f"{type(self).__name__}({', '.join(shown)})"


def _same(a, b):
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return False


class _FallbackClassifierMixin:
    _estimator_type = "classifier"

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of ``predict(X)`` against y."""
        return float(np.average(self.predict(X) == np.asarray(y), weights=sample_weight))


class _FallbackRegressorMixin:
    _estimator_type = "regressor"

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination R^2 of ``predict(X)``, averaged over outputs."""
        y = np.asarray(y, dtype=np.float64)
        pred = np.asarray(self.predict(X), dtype=np.float64).reshape(y.shape)
        y2, p2 = y.reshape(len(y), -1), pred.reshape(len(y), -1)
        w = None if sample_weight is None else np.asarray(sample_weight, np.float64)
        ss_res = np.average((y2 - p2) ** 2, axis=0, weights=w)
        ss_tot = np.average((y2 - np.average(y2, axis=0, weights=w)) ** 2, axis=0,
                            weights=w)
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                      np.where(ss_res > 0, 0.0, 1.0))
        return float(r2.mean())


if HAVE_SKLEARN:
    _BaseEstimator, _ClassifierMixin, _RegressorMixin = (
        _SkBaseEstimator, _SkClassifierMixin, _SkRegressorMixin)
else:   # pragma: no cover
    _BaseEstimator, _ClassifierMixin, _RegressorMixin = (
        _FallbackBaseEstimator, _FallbackClassifierMixin, _FallbackRegressorMixin)


# -- helpers -----------------------------------------------------------------------
def _check_random_state(seed):
    """A numpy RandomState from None, an int or a RandomState (sklearn's rule)."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"random_state: expected None, an int or a numpy RandomState, "
                     f"got {seed!r}")


def _validate_data(est, X, y="no_validation", reset=True, multi_output=False,
                   y_numeric=False):
    """Checked (X, y) or X, recording n_features_in_ on ``reset`` (sklearn's
    validate_data when sklearn is there, fastbp's checks otherwise)."""
    no_y = isinstance(y, str) and y == "no_validation"
    if HAVE_SKLEARN:
        kwargs = dict(reset=reset, dtype=(np.float64, np.float32))
        if not no_y:
            kwargs.update(multi_output=multi_output, y_numeric=y_numeric)
        try:
            from sklearn.utils.validation import validate_data
        except ImportError:   # scikit-learn < 1.6
            return est._validate_data(X, y, **kwargs)
        return validate_data(est, X, y, **kwargs)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-D array (samples, features), got shape {X.shape}")
    if X.dtype not in (np.float32, np.float64):
        if X.dtype.kind not in "iuf":
            raise TypeError(f"X: expected a real float or integer array, got {X.dtype}")
        X = X.astype(np.float64)
    if reset:
        est.n_features_in_ = X.shape[1]
    elif X.shape[1] != est.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(est).__name__} is "
                         f"expecting {est.n_features_in_} features as input.")
    validation.as_float_matrix("X", X, X.shape[1], X.dtype)   # finiteness, non-empty
    if no_y:
        return X
    if y is None:
        raise ValueError(f"{type(est).__name__} requires y to be passed, but the target "
                         "y is None")
    y = np.asarray(y)
    if not multi_output and y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y: expected {X.shape[0]} rows (one per row of X), got {y.shape[0]}")
    return X, y


def _check_is_fitted(est):
    if not hasattr(est, "net_"):
        raise NotFittedError(f"This {type(est).__name__} instance is not fitted yet. Call "
                             "'fit' with appropriate arguments before using this estimator.")


class _BaseMLP(_BaseEstimator):
    """What the classifier and the regressor share: building the network and the
    optimizer, the epoch loop with scikit-learn's stopping rule, and pickling."""

    _loss = None

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", solver="adam",
                 learning_rate_init=0.001, batch_size="auto", max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, n_iter_no_change=10, momentum=0.9,
                 weight_decay=0.0, dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.dtype = dtype

    # -- parameters --------------------------------------------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = (sizes,)
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError(f"hidden_layer_sizes: expected a sequence of positive ints, got "
                            f"{self.hidden_layer_sizes!r}") from None
        for s in sizes:
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral) \
                    or s <= 0:
                raise ValueError(f"hidden_layer_sizes: expected positive ints, got "
                                 f"{self.hidden_layer_sizes!r}")
        return [int(s) for s in sizes]

    def _net_dtype(self, X):
        if self.dtype is None:
            return "float32" if X.dtype == np.float32 else "float64"
        return validation.dtype_name(self.dtype)

    def _batch_size(self, n):
        if isinstance(self.batch_size, str) and self.batch_size == "auto":
            return min(200, n)
        return min(validation.positive_int("batch_size", self.batch_size), n)

    def _check_params(self):
        validation.positive_int("max_iter", self.max_iter)
        validation.positive_int("n_iter_no_change", self.n_iter_no_change)
        validation.positive_float("learning_rate_init", self.learning_rate_init)
        if isinstance(self.tol, (bool, np.bool_)) or not isinstance(self.tol, numbers.Real) \
                or not self.tol >= 0:
            raise ValueError(f"tol: expected a number >= 0, got {self.tol!r}")
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            validation.positive_int("batch_size", self.batch_size)
        validation.choice("solver", self.solver, codes.OPTIMIZERS)
        validation.choice("activation", self.activation, codes.ACTIVATIONS)

    def _make_optimizer(self, net):
        from .optim import make_optimizer
        solver = validation.choice("solver", self.solver, codes.OPTIMIZERS)
        kwargs = {"lr": self.learning_rate_init}
        if self.weight_decay:
            kwargs["weight_decay"] = self.weight_decay
        if solver == "sgd" and self.momentum:
            kwargs["momentum"] = self.momentum
        return make_optimizer(solver, net, **kwargs)

    def _initialize(self, X, n_outputs):
        from .network import MLP
        self._check_params()
        self._rng = _check_random_state(self.random_state)
        output = "identity"
        self.net_ = MLP([X.shape[1], *self._hidden_sizes(), n_outputs],
                        activation=self.activation, output_activation=output,
                        loss=self._loss, dtype=self._net_dtype(X),
                        seed=int(self._rng.randint(np.iinfo(np.int32).max)))
        self.optimizer_ = self._make_optimizer(self.net_)
        self.n_outputs_ = n_outputs
        self.n_iter_ = 0
        self.loss_curve_ = []
        self.best_loss_ = np.inf
        self._no_improvement = 0

    # -- training ----------------------------------------------------------------------
    def _run_epochs(self, X, y, epochs, stop_early):
        """Train for up to ``epochs`` epochs; with ``stop_early``, stop as
        scikit-learn's MLP does when the training loss has not improved by ``tol`` for
        more than ``n_iter_no_change`` epochs in a row."""
        from .training import fit

        def after_epoch(epoch, logs):
            loss = float(logs["loss"])
            self.loss_curve_.append(loss)
            self.n_iter_ += 1
            if loss > self.best_loss_ - self.tol:
                self._no_improvement += 1
            else:
                self._no_improvement = 0
            self.best_loss_ = min(self.best_loss_, loss)
            return stop_early and self._no_improvement > self.n_iter_no_change

        fit(self.net_, X, y, epochs=epochs, batch_size=self._batch_size(X.shape[0]),
            optimizer=self.optimizer_, shuffle=bool(self.shuffle),
            seed=int(self._rng.randint(np.iinfo(np.int32).max)), callbacks=[after_epoch],
            verbose=False)
        self.loss_ = self.loss_curve_[-1]
        return self

    def _forward(self, X):
        _check_is_fitted(self)
        X = _validate_data(self, X, reset=False)
        return self.net_.forward(X)

    # -- pickling: the network travels as its saved arrays, not as Python objects -----
    def __getstate__(self):
        from .persistence import network_to_arrays
        state = super().__getstate__() if hasattr(super(), "__getstate__") \
            else self.__dict__.copy()
        state = dict(state)
        if "net_" in state:
            state["net_"] = network_to_arrays(state["net_"])
            state["optimizer_"] = state["optimizer_"].state_dict()
        return state

    def __setstate__(self, state):
        from .optim import optimizer_from_state_dict
        from .persistence import network_from_arrays
        state = dict(state)
        if "net_" in state and isinstance(state["net_"], dict):
            state["net_"] = network_from_arrays(state["net_"], "<pickle>")
            state["optimizer_"] = optimizer_from_state_dict(state["net_"],
                                                            state["optimizer_"])
        if hasattr(super(), "__setstate__"):
            super().__setstate__(state)
        else:   # pragma: no cover
            self.__dict__.update(state)


class MLPClassifier(_ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier trained by backpropagation on fastbp's kernels.

    Softmax outputs, one per class, trained on the cross-entropy loss; labels may be
    any values numpy can sort (ints, strings), recorded in ``classes_``.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (100,)
        Widths of the hidden layers.
    activation : str, default "relu"
        Hidden activation, one of ``fastbp.ACTIVATIONS``.
    solver : {"sgd", "adam", "adamw", "rmsprop"}, default "adam"
        The fastbp optimizer (torch.optim's algorithms).
    learning_rate_init : float, default 0.001
    batch_size : int or "auto", default "auto" (min(200, n_samples))
    max_iter : int, default 200
        Epochs for ``fit`` (at most: see tol).
    shuffle : bool, default True
        Reshuffle the samples every epoch.
    random_state : None, int or numpy RandomState
        Seeds the weights and the shuffling; an int makes fits repeatable.
    tol, n_iter_no_change : float, int (1e-4, 10)
        ``fit`` stops when the training loss has not improved by ``tol`` for more than
        ``n_iter_no_change`` consecutive epochs (scikit-learn's rule).
    momentum : float, default 0.9
        Momentum of the "sgd" solver.
    weight_decay : float, default 0.0
        The optimizer's weight decay (torch.optim's meaning; decoupled for "adamw").
    dtype : None, "float32" or "float64"
        The network's float type; None: float32 when X is float32, else float64.
    """

    _loss = "softmax_cross_entropy"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags

    def _encode(self, y, first):
        """y as int64 indices into classes_ (set from y when ``first``)."""
        if HAVE_SKLEARN:
            from sklearn.utils.multiclass import check_classification_targets
            check_classification_targets(y)
        if first:
            classes = np.unique(y)
            if classes.size < 2:
                raise ValueError(f"y: a classifier needs at least 2 classes, got 1 class "
                                 f"({classes[0]!r})")
            self.classes_ = classes
        encoded = np.searchsorted(self.classes_, y)
        encoded = np.clip(encoded, 0, len(self.classes_) - 1)
        unseen = self.classes_[encoded] != y
        if unseen.any():
            raise ValueError(f"y: labels {np.unique(np.asarray(y)[unseen])!r} are not in "
                             f"classes {self.classes_!r}")
        return encoded.astype(np.int64)

    def fit(self, X, y):
        """Train a new network on X (n_samples, n_features) and labels y (n_samples,)
        for up to ``max_iter`` epochs. Returns self."""
        X, y = _validate_data(self, X, y, reset=True)
        labels = self._encode(y, first=True)
        self._initialize(X, len(self.classes_))
        return self._run_epochs(X, labels, self.max_iter, stop_early=True)

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y). The first call needs ``classes``, every label that
        will ever appear; later calls continue training the same network and
        optimizer. Returns self."""
        first = not hasattr(self, "net_")
        X, y = _validate_data(self, X, y, reset=first)
        if first:
            if classes is None:
                raise ValueError("classes: the first call to partial_fit needs the list "
                                 "of all classes")
            self._encode(np.asarray(classes), first=True)
            self._initialize(X, len(self.classes_))
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes: {classes!r} differs from the classes of the first "
                             f"partial_fit call, {self.classes_!r}")
        labels = self._encode(y, first=False)
        return self._run_epochs(X, labels, 1, stop_early=False)

    def predict_proba(self, X):
        """(n_samples, n_classes) class probabilities (softmax of the outputs), in the
        order of ``classes_``."""
        logits = self._forward(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits

    def predict_log_proba(self, X):
        """Logarithm of ``predict_proba``, computed stably."""
        logits = self._forward(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X):
        """(n_samples,) predicted labels, values of ``classes_``."""
        scores = self._forward(X)   # first: it raises NotFittedError before fit
        return self.classes_[scores.argmax(axis=1)]


class MLPRegressor(_RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor trained by backpropagation on fastbp's kernels.

    Linear outputs trained on the mean squared error; y may be (n_samples,) or
    (n_samples, n_outputs). Parameters as :class:`MLPClassifier`.
    """

    _loss = "mse"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _targets(self, y):
        y = np.asarray(y)
        self._y_1d = y.ndim == 1
        return y.reshape(len(y), -1)

    def fit(self, X, y):
        """Train a new network on X (n_samples, n_features) and targets y for up to
        ``max_iter`` epochs. Returns self."""
        X, y = _validate_data(self, X, y, reset=True, multi_output=True, y_numeric=True)
        y2 = self._targets(y)
        self._initialize(X, y2.shape[1])
        return self._run_epochs(X, y2, self.max_iter, stop_early=True)

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing from the current network (a new one on
        the first call). Returns self."""
        first = not hasattr(self, "net_")
        X, y = _validate_data(self, X, y, reset=first, multi_output=True, y_numeric=True)
        y_1d = np.asarray(y).ndim == 1
        y2 = np.asarray(y).reshape(len(y), -1)
        if first:
            self._initialize(X, y2.shape[1])
            self._y_1d = y_1d
        elif y2.shape[1] != self.n_outputs_:
            raise ValueError(f"y: expected {self.n_outputs_} outputs as in earlier calls, "
                             f"got {y2.shape[1]}")
        return self._run_epochs(X, y2, 1, stop_early=False)

    def predict(self, X):
        """(n_samples,) predictions when fitted on 1-D y, else (n_samples, n_outputs)."""
        out = self._forward(X)
        return out[:, 0] if self._y_1d else out
