"""scikit-learn drop-ins: ``MLPClassifier`` and ``MLPRegressor`` trained on fastbp's kernels.

Change one import line and keep everything else::

    from fastbp import MLPClassifier          # was: from sklearn.neural_network import ...
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
    clf.fit(X_train, y_train).score(X_test, y_test)

Conventions: scikit-learn's, throughout (sklearn.neural_network, version 1.x). The
constructor parameters, their defaults and meanings, the fitted attributes (``coefs_``
as (n_in, n_out) arrays, ``intercepts_``, ``loss_``, ``best_loss_``, ``loss_curve_``,
``validation_scores_``, ``best_validation_score_``, ``n_iter_``, ``t_``, ``n_layers_``,
``n_outputs_``, ``out_activation_``, ``classes_``, ``n_features_in_``,
``feature_names_in_``), the warnings (ConvergenceWarning) and the errors are
scikit-learn's; so are the losses (half squared error for the regressor, log loss for
the classifier, alpha's L2 scaling: fastbp/_sklearn_solvers.py states them), the weight
initialisation (Glorot uniform drawn from ``random_state`` in scikit-learn's order, so
the same seed gives the same initial weights), the shuffling and the early-stopping
split. Only the arithmetic moves: every forward and backward pass and every SGD/Adam
update runs in fastbp's compiled kernels (``net_``, a :class:`fastbp.MLP`, holds the
weights; ``coefs_`` and ``intercepts_`` are views into its flat buffer, and assigning
new arrays to them sets the network's weights).

fastbp's additions, as extra keyword parameters: more hidden activations (every name
in ``fastbp.ACTIVATIONS``; its "sigmoid" is "logistic"), the solvers "adamw" and
"rmsprop" (torch.optim's algorithms and meanings; ``weight_decay`` is AdamW's decoupled
decay), ``dtype`` (None: the dtype of X, as scikit-learn; or "float32"/"float64") and
``device`` ("cpu", or "cuda": the passes and updates of fit, partial_fit and predict
run on the GPU; the network returns to the host between calls, where ``coefs_`` and
``intercepts_`` view it).

scikit-learn must be installed to use these classes (``import fastbp`` alone does not
need it).
"""
import contextlib
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.optimize

try:
    from sklearn.base import (BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context,
                              is_classifier)
except ImportError as exc:   # pragma: no cover - exercised by the no-sklearn test
    raise ImportError("fastbp.MLPClassifier and fastbp.MLPRegressor need scikit-learn "
                      "(pip install scikit-learn)") from exc
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: F401
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d, gen_batches
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (_check_partial_fit_first_call, type_of_target,
                                      unique_labels)
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from . import _sklearn_solvers as solvers
from . import device as _device
from .concurrency import using
from .kernels import codes
from .validation import canonical, writeable

# scikit-learn's message (its test_mlp.py matches it), with where it happened appended
_NONFINITE_WEIGHTS = ("Solver produced non-finite parameter weights. The input data may "
                      "contain large values and need to be preprocessed.")

try:
    from sklearn.utils.validation import validate_data
except ImportError:   # scikit-learn < 1.6
    def validate_data(est, *args, **kwargs):
        return est._validate_data(*args, **kwargs)

# check_estimator checks that cannot pass, with the reason (sklearn >= 1.6 takes this
# dict as ``expected_failed_checks``). Empty: every check passes.
EXPECTED_FAILED_CHECKS = {"MLPClassifier": {}, "MLPRegressor": {}}

_STOCHASTIC_SOLVERS = ("sgd", "adam", "adamw", "rmsprop")
# scikit-learn's activation names -> fastbp's; fastbp's own names stand for themselves.
_ACTIVATION_NAMES = {"logistic": "sigmoid", **{a: a for a in codes.ACTIVATIONS}}
_DTYPES = {"float32", "float64", np.float32, np.float64, np.dtype("float32"),
           np.dtype("float64")}
_PREDICT_CHUNK = 8192   # rows per forward call at prediction time (bounds workspaces)


class BaseMultilayerPerceptron(BaseEstimator):
    """What the classifier and the regressor share (scikit-learn's structure): the
    declared parameter constraints, checked once per fit by ``_fit_context``; one
    ``_fit(X, y, sample_weight, incremental)`` behind ``fit`` and ``partial_fit``; the
    stochastic and L-BFGS solvers; and pickling."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_ACTIVATION_NAMES))],
        "solver": [StrOptions({"lbfgs", *_STOCHASTIC_SOLVERS})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"),
                             Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        # fastbp's additions
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "dtype": [None, Options(object, _DTYPES)],
        "device": [StrOptions({"cpu", "cuda"})],
    }

    def __init__(self, hidden_layer_sizes, activation, solver, alpha, batch_size,
                 learning_rate, learning_rate_init, power_t, max_iter, loss, shuffle,
                 random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
                 early_stopping, validation_fraction, beta_1, beta_2, epsilon,
                 n_iter_no_change, max_fun, weight_decay, dtype, device):
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.weight_decay = weight_decay
        self.dtype = dtype
        self.device = device

    # -- the network behind coefs_ and intercepts_ -----------------------------------
    def _build_network(self, layer_units, dtype):
        """A fastbp MLP of these widths whose last layer is linear; its loss names the
        output's family (the estimator applies the output function itself)."""
        from .network import MLP
        loss = {"softmax": "softmax_cross_entropy",
                "logistic": "bce_with_logits"}.get(self.out_activation_, "mse")
        return MLP(list(layer_units), activation=_ACTIVATION_NAMES[self.activation],
                   output_activation="identity", loss=loss, dtype=dtype, seed=0)

    def _attach(self, net):
        """Make ``net`` the estimator's network: coefs_ (n_in, n_out) and intercepts_
        become views into its flat parameter buffer."""
        self.net_ = net
        self.coefs_ = [layer.W.T for layer in net.layers]
        self.intercepts_ = [layer.b for layer in net.layers]
        self._views = self.coefs_ + self.intercepts_
        self.n_layers_ = len(net.layers) + 1

    def _network(self):
        """The network holding coefs_ and intercepts_. When they were assigned new
        arrays (or set on an unfitted estimator, as scikit-learn allows), a network is
        built from them first, and any optimizer state is dropped."""
        check_is_fitted(self, "coefs_")
        arrays = list(self.coefs_) + list(self.intercepts_)
        net = getattr(self, "net_", None)
        views = getattr(self, "_views", ())
        if net is not None and len(arrays) == len(views) and all(
                a is v for a, v in zip(arrays, views)):
            return net
        coefs = [np.asarray(c) for c in self.coefs_]
        intercepts = [np.asarray(b) for b in self.intercepts_]
        dtype = coefs[0].dtype if coefs[0].dtype in (np.float32, np.float64) else np.float64
        units = [coefs[0].shape[0]] + [c.shape[1] for c in coefs]
        net = self._build_network(units, dtype)
        for layer, W, b in zip(net.layers, coefs, intercepts):
            layer.W = W.T
            layer.b = np.reshape(b, layer.b.shape)
        self._attach(net)
        self.__dict__.pop("_optimizer", None)
        return net

    @contextlib.contextmanager
    def _on_device(self, net):
        """``net`` on ``self.device`` for the duration of the block (the passes and
        updates run there), then back on the host, where coefs_ and intercepts_ view
        its parameters between calls. Nested uses move nothing."""
        if net.device == self.device:
            yield net
            return
        net.to(self.device)
        try:
            yield net
        finally:
            net.to("cpu")
            self._attach(net)

    def _net_dtype(self, X):
        if self.dtype is None:
            return X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)
        return np.dtype(self.dtype)

    # -- fitting -----------------------------------------------------------------------
    def _initialize(self, y, layer_units, dtype):
        """First fit: attributes, then scikit-learn's initial weights (Glorot uniform,
        factor 2 for logistic units, drawn from self._random_state in its order)."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        net = self._build_network(layer_units, dtype)
        factor = 2.0 if _ACTIVATION_NAMES[self.activation] == "sigmoid" else 6.0
        for layer in net.layers:
            bound = np.sqrt(factor / (layer.n_in + layer.n_out))
            coef = self._random_state.uniform(-bound, bound, (layer.n_in, layer.n_out))
            intercept = self._random_state.uniform(-bound, bound, layer.n_out)
            layer.W = coef.T
            layer.b = intercept
        self._attach(net)
        self.__dict__.pop("_optimizer", None)
        self._best_params = net.params.copy()
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hidden_layer_sizes}.")
        if self.weight_decay and self.solver != "adamw":
            raise ValueError(f"weight_decay is AdamW's decoupled weight decay and needs "
                             f"solver='adamw'; got solver={self.solver!r} with "
                             f"weight_decay={self.weight_decay!r} (alpha is the L2 "
                             f"penalty of every solver)")
        # before any work: a clear CudaUnavailableError where no GPU can be used
        _device.require(self.device)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)

        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        n_features = X.shape[1]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self.n_outputs_ = y.shape[1]
            self._initialize(y, [n_features, *hidden_layer_sizes, y.shape[1]],
                             self._net_dtype(X))
        net = self._network()
        if y.shape[1] != net.sizes[-1]:
            raise ValueError(f"y has {y.shape[1]} output(s), but the network was fitted "
                             f"with {net.sizes[-1]}")
        self.n_outputs_ = y.shape[1]
        # minibatches are gathered by rows: CSR when sparse, C order when dense; a
        # read-only array (a memory map, say) is copied, as the network's own inputs
        # are (validation.writeable)
        X = X.tocsr().astype(net.dtype) if hasattr(X, "toarray") else \
            writeable(canonical(np.ascontiguousarray(X, dtype=net.dtype)))
        Y = writeable(canonical(np.ascontiguousarray(y, dtype=net.dtype)))
        if sample_weight is not None:
            sample_weight = writeable(sample_weight.astype(net.dtype, copy=False))
        loss_grad = solvers.LossGrad(net, self.out_activation_, self.alpha)

        # the solvers call the kernels directly: hold the network as fastbp.fit does
        with using(net, "fit"):
            if self.solver in _STOCHASTIC_SOLVERS:
                with self._on_device(net):
                    self._fit_stochastic(net, loss_grad, X, Y, y, sample_weight,
                                         incremental)
            else:
                self._fit_lbfgs(net, loss_grad, X, Y, sample_weight)

        if not np.isfinite(net.params).all():
            raise ValueError(_NONFINITE_WEIGHTS)
        return self

    def _fit_lbfgs(self, net, loss_grad, X, Y, sample_weight):
        """Full-batch L-BFGS-B (scipy.optimize.minimize) over the flat parameters in
        scikit-learn's packing, with fastbp's compiled loss-and-gradient."""
        X = _dense(X)
        self._order, self._order_net = solvers.sklearn_order(net), net
        packed = net.params[self._order].astype(np.float64)
        iteration = [0]

        def report(intermediate_result):
            iteration[0] += 1
            print("Iteration %d, loss = %.8f" % (iteration[0], intermediate_result.fun))

        result = scipy.optimize.minimize(
            self._loss_grad_lbfgs, packed, method="L-BFGS-B", jac=True,
            args=(X, Y, sample_weight),
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
            callback=report if self.verbose else None)
        self.n_iter_ = min(result.nit, self.max_iter)
        if result.status != 0:
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                          f"(status={result.status}):\n{result.message}\n\nIncrease the "
                          f"number of iterations to improve the convergence "
                          f"(max_iter={self.max_iter}).", ConvergenceWarning, stacklevel=3)
        self.loss_ = float(result.fun)
        net.params[self._order] = result.x

    def _loss_grad_lbfgs(self, packed_coef_inter, X, y, sample_weight, *workspaces):
        """The loss and its gradient (float64, packed as scikit-learn packs coefs_ then
        intercepts_) at the parameters ``packed_coef_inter``; scikit-learn's signature
        (its trailing workspace lists are accepted and not needed)."""
        net = self._network()
        if getattr(self, "_order_net", None) is not net:
            self._order, self._order_net = solvers.sklearn_order(net), net
        net.params[self._order] = packed_coef_inter
        X = np.ascontiguousarray(_dense(X), dtype=net.dtype)
        Y = np.asarray(y, dtype=net.dtype).reshape(X.shape[0], -1)
        with self._on_device(net):   # the parameters go over, the gradient comes back
            loss = solvers.LossGrad(net, self.out_activation_, self.alpha)(X, Y,
                                                                          sample_weight)
        return loss, net.grads[self._order].astype(np.float64)

    def _make_optimizer(self, net):
        if self.solver == "sgd":
            return solvers.SGDOptimizer(net, self.learning_rate_init, self.learning_rate,
                                        self.momentum, self.nesterovs_momentum,
                                        self.power_t)
        if self.solver == "adam":
            return solvers.AdamOptimizer(net, self.learning_rate_init, self.beta_1,
                                         self.beta_2, self.epsilon)
        from .optim import AdamW, RMSprop
        if self.solver == "adamw":
            opt = AdamW(net, lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2),
                        eps=self.epsilon, weight_decay=self.weight_decay)
        else:
            opt = RMSprop(net, lr=self.learning_rate_init, eps=self.epsilon)
        return solvers.TorchOptimizer(opt)

    def _fit_stochastic(self, net, loss_grad, X, Y, y, sample_weight, incremental):
        """scikit-learn's epoch loop (shuffle, minibatches, stopping rule, early
        stopping on a held-out split, ConvergenceWarning), each minibatch one compiled
        forward/backward and one compiled update."""
        if not incremental or not hasattr(self, "_optimizer"):
            self._optimizer = self._make_optimizer(net)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            # stratified for classifiers with one output column (not multilabel)
            stratify = y if is_classifier(self) and self.n_outputs_ == 1 else None
            arrays = [X, Y, y] + ([] if sample_weight is None else [sample_weight])
            parts = train_test_split(*arrays, random_state=self._random_state,
                                     test_size=self.validation_fraction, stratify=stratify)
            X_train, X_val, Y_train, _, _, y_val = parts[:6]
            sw_train, sw_val = parts[6:8] if sample_weight is not None else (None, None)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            elif y_val.shape[1] == 1:
                y_val = y_val.ravel()
        else:
            X_train, Y_train, sw_train = X, Y, sample_weight
            X_val = y_val = sw_val = None

        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped", stacklevel=3)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        self.n_iter_ = 0
        start = self._optimizer.snapshot()   # buffers reused every iteration
        for _ in range(self.max_iter):
            if self.shuffle:   # sklearn.utils.shuffle's draw, without its checks
                order = np.arange(n_samples)
                self._random_state.shuffle(order)
                sample_idx = sample_idx[order]
            accumulated_loss = 0.0
            start.take()   # every step is checked, so this is finite
            diverged = None
            batch = 0   # minibatches run this iteration
            for X_part, Y_part, sw_part, rows in _epoch_parts(X_train, Y_train, sw_train,
                                                              sample_idx, batch_size):
                losses, nonfinite = self._optimizer.train_epoch(
                    loss_grad, X_part, Y_part, sw_part, rows, batch_size)
                for batch_loss in losses.tolist():
                    batch += 1
                    size = min(batch * batch_size, n_samples) - (batch - 1) * batch_size
                    accumulated_loss += batch_loss * size
                if nonfinite:   # the last update left parameters NaN or infinite
                    where = f"iteration {self.n_iter_ + 1}, minibatch {batch}"
                    if not early_stopping:
                        start.restore()
                        raise ValueError(
                            f"{_NONFINITE_WEIGHTS} ({where}; the parameters and solver "
                            f"state were restored to their values at the start of that "
                            f"iteration)")
                    # As scikit-learn: with early stopping a divergent fit ends with a
                    # NaN validation score and the best validation weights, no error.
                    diverged = where
                    accumulated_loss = np.nan
                    break

            self.n_iter_ += 1
            self.loss_ = accumulated_loss / n_samples
            self.t_ += n_samples
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
            self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val)
            self._optimizer.iteration_ends(self.t_)
            if diverged is not None:   # more iterations cannot bring the weights back
                warnings.warn(f"Solver produced non-finite parameter weights at {diverged}; "
                              f"training stopped and the weights of the best validation "
                              f"score were restored", RuntimeWarning, stacklevel=3)
                break
            if self._no_improvement_count > self.n_iter_no_change:
                if early_stopping:
                    msg = ("Validation score did not improve more than tol=%f for %d "
                           "consecutive epochs." % (self.tol, self.n_iter_no_change))
                else:
                    msg = ("Training loss did not improve more than tol=%f for %d "
                           "consecutive epochs." % (self.tol, self.n_iter_no_change))
                if self._optimizer.trigger_stopping(msg, self.verbose):
                    break
                self._no_improvement_count = 0
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and "
                              "the optimization hasn't converged yet." % self.max_iter,
                              ConvergenceWarning, stacklevel=3)
        if early_stopping:   # restore the best weights
            _device.copy_into(net.params, self._best_params)

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, sw_val):
        if early_stopping:
            score = self._score(X_val, y_val, sample_weight=sw_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = np.array(_device.to_host(self.net_.params))
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to X (n_samples, n_features), dense or sparse, and y.

        y: class labels (n_samples,) or a label indicator matrix (n_samples, n_labels)
        for the classifier; targets (n_samples,) or (n_samples, n_outputs) for the
        regressor. sample_weight: (n_samples,) or None. Returns self.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    # -- prediction --------------------------------------------------------------------
    def _forward_pass_fast(self, X, check_input=True):
        """The output layer's values (after the output function), (n_samples,
        n_outputs), of dtype result_type(X, the network's dtype) as scikit-learn's."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        net = self._network()
        if X.shape[1] != net.sizes[0]:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {net.sizes[0]} features as input.")
        dtype = np.result_type(X.dtype, net.dtype)
        out = np.empty((X.shape[0], net.sizes[-1]), dtype)
        with self._on_device(net):
            for a in range(0, X.shape[0], _PREDICT_CHUNK):
                out[a:a + _PREDICT_CHUNK] = net.forward(_dense(X[a:a + _PREDICT_CHUNK]))
        with np.errstate(over="ignore", invalid="ignore"):
            return solvers.output_function(self.out_activation_)(out)

    def _score_with_function(self, X, y, sample_weight, score_function):
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return float(score_function(y, y_pred, sample_weight=sample_weight))

    # -- pickling: the network travels as its saved arrays -----------------------------
    def __getstate__(self):
        from .persistence import network_to_arrays
        state = dict(super().__getstate__())
        for key in ("coefs_", "intercepts_", "_views", "_order", "_order_net"):
            state.pop(key, None)
        if "net_" in state:
            state["net_"] = network_to_arrays(state["net_"])
        return state

    def __setstate__(self, state):
        from .persistence import network_from_arrays
        state = dict(state)
        net = state.pop("net_", None)
        super().__setstate__(state)
        if net is not None:
            self._attach(network_from_arrays(net, "<pickle>"))
            if hasattr(self, "_optimizer"):
                self._optimizer.bind(self.net_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _dense(X):
    """A dense C-contiguous array of a dense or scipy.sparse minibatch."""
    return X.toarray() if hasattr(X, "toarray") else X


def _epoch_parts(X, Y, sample_weight, sample_idx, batch_size):
    """(X, Y, sample_weight, rows) parts of an epoch whose minibatches are
    sample_idx[0:batch_size], sample_idx[batch_size:2 batch_size], ...: the whole
    epoch in one part for dense X (the solver gathers the rows in compiled code), one
    densified minibatch per part for sparse X."""
    if not hasattr(X, "toarray"):
        yield X, Y, sample_weight, sample_idx
        return
    for batch_slice in gen_batches(len(sample_idx), batch_size):
        rows = sample_idx[batch_slice]
        yield (_dense(X[rows]), Y[rows], None if sample_weight is None else
               sample_weight[rows], np.arange(len(rows)))


_PARAMETERS_DOC = """
    Parameters (scikit-learn's names, defaults and meanings)
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
    activation : {"identity", "logistic", "tanh", "relu"} or one of fastbp.ACTIVATIONS
        ("sigmoid" is "logistic"), default="relu"
    solver : {"lbfgs", "sgd", "adam"}, or fastbp's "adamw", "rmsprop"; default="adam"
        "adamw": torch.optim.AdamW with lr=learning_rate_init, betas=(beta_1, beta_2),
        eps=epsilon, weight_decay=weight_decay; "rmsprop": torch.optim.RMSprop with
        lr=learning_rate_init, eps=epsilon and torch's other defaults. Both minimise the
        same loss (alpha included) as the scikit-learn solvers.
    alpha : float, default=0.0001
        L2 penalty: alpha / (2 * n_samples) * sum of squared weights (biases excluded)
        is added to the loss (n_samples: of the minibatch, or the sum of its sample
        weights).
    batch_size : int or "auto" (min(200, n_samples)), default="auto"
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant" (sgd)
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5 (invscaling: lr = learning_rate_init / (t + 1) ** power_t,
        t the number of samples seen)
    max_iter : int, default=200 (epochs; L-BFGS iterations for lbfgs)
    shuffle : bool, default=True
    random_state : None, int or numpy RandomState; initial weights, shuffling and the
        early-stopping split, drawn as scikit-learn draws them.
    tol : float, default=1e-4
    verbose : bool or int, default=False (prints "Iteration i, loss = ..." per epoch)
    warm_start : bool, default=False
    momentum : float in [0, 1], default=0.9 (sgd)
    nesterovs_momentum : bool, default=True (sgd)
    early_stopping : bool, default=False (hold out validation_fraction of the data,
        stratified for classifiers, and stop when its score stops improving)
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, defaults 0.9, 0.999, 1e-8 (adam's)
    n_iter_no_change : int or np.inf, default=10
    max_fun : int, default=15000 (lbfgs: most loss evaluations)
    weight_decay : float, default=0.0
        fastbp's: the decoupled weight decay of solver="adamw" (torch.optim.AdamW's).
    dtype : None, "float32" or "float64", default=None
        fastbp's: the network's float type; None follows X (float32 stays float32, other
        input becomes float64), as scikit-learn does.
    device : "cpu" or "cuda", default="cpu"
        fastbp's: where fit, partial_fit and predict run their passes and updates. With
        "cuda" the network's parameters (and the solver's state) move to the GPU for
        each call and back to the host after it, so ``coefs_``/``intercepts_`` stay
        numpy views between calls; each minibatch's inputs go over, and its (n,
        n_outputs) output and output gradient make a round trip, as the loss is computed
        on the host; with alpha > 0 so do the parameters and gradients (correct, not
        fast); L-BFGS moves the parameters at every evaluation. Results agree with "cpu"
        to rounding. fit raises fastbp.device.CudaUnavailableError (a RuntimeError)
        saying why where no GPU can be used.
"""


class MLPClassifier(ClassifierMixin, BaseMultilayerPerceptron):
    """Multi-layer perceptron classifier, scikit-learn's ``MLPClassifier`` on fastbp's
    kernels.

    Multiclass y: softmax outputs, one per class; binary y: one logistic output;
    label indicator y (multilabel): one logistic output per label; the loss is the
    log loss in every case. Labels may be any values numpy can sort.
    """ + _PARAMETERS_DOC

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, weight_decay=0.0, dtype=None,
                 device="cpu"):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            loss="log_loss", shuffle=shuffle, random_state=random_state, tol=tol,
            verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            weight_decay=weight_decay, dtype=dtype, device=device)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as "
                        f"in the previous call to fit. Previously got {self.classes_}, "
                        f"`y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. "
                                 f"`self.classes_` has {self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    def predict(self, X):
        """Predicted classes: (n_samples,), or (n_samples, n_labels) for multilabel."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight, accuracy_score)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing from the current network. The first call
        needs ``classes`` (every label that will ever appear). Returns self."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """(n_samples, n_classes) probabilities in the order of ``classes_``; of X's
        float dtype when the network is float32, else float64."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMultilayerPerceptron):
    """Multi-layer perceptron regressor, scikit-learn's ``MLPRegressor`` on fastbp's
    kernels: linear outputs and half the squared error (loss="squared_error"), or exp
    outputs and half the Poisson deviance (loss="poisson").
    """ + _PARAMETERS_DOC

    _parameter_constraints: dict = {
        **BaseMultilayerPerceptron._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu",
                 *, solver="adam", alpha=0.0001, batch_size="auto",
                 learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, weight_decay=0.0,
                 dtype=None, device="cpu"):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            loss=loss, shuffle=shuffle, random_state=random_state, tol=tol,
            verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            weight_decay=weight_decay, dtype=dtype, device=device)

    def predict(self, X):
        """Predictions: (n_samples,) when there is one output (y was (n,) or (n, 1)),
        else (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight, r2_score)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current network (a new one on
        the first call). Returns self."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
