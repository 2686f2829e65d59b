"""The multilayer perceptron: a description of layers over flat parameter buffers.

The class holds no arithmetic of its own: it validates input at the boundary, keeps
the flat buffers and workspaces, and hands both to the compiled whole-network passes in
``fastbp.kernels.cpu.network``.
"""
import numpy as np

from . import aligned
from . import concurrency as _concurrency
from . import device as _device
from . import divergence, validation
from .kernels import codes
from .kernels import cpu as cpu_kernels
from .kernels.cpu import checks as cpu_checks
from .layout import NetworkLayout, Workspace
from .plan import plan_for


class Layer:
    """One fully connected layer's views into its network's flat buffers.

    W (out, in) and b (out,) view ``net.params``; dW and db view ``net.grads``. Writing
    into them (``layer.W[...] = ...`` or ``layer.W = array``) changes the network.
    """

    def __init__(self, net, index):
        self._net = net
        self.index = index
        self.activation = net.activations[index]
        w_slice, w_shape, b_slice = net.layout.weight_slice(index)
        self.n_in, self.n_out = w_shape[1], w_shape[0]
        self._views = {
            "W": net.params[w_slice].reshape(w_shape), "b": net.params[b_slice],
            "dW": net.grads[w_slice].reshape(w_shape), "db": net.grads[b_slice],
        }

    def _get(name):
        def get(self):
            return self._views[name]

        def set(self, value):
            view = self._views[name]
            if not _device.is_device_array(value):
                value = np.asarray(value)
            if value.shape != view.shape:
                raise ValueError(f"{name}: expected shape {view.shape}, got {value.shape}")
            _device.copy_into(view, value)
        return property(get, set, doc=f"{name} of this layer, a view into the network's "
                                      "flat buffer; assigning copies into the view.")

    W = _get("W")
    b = _get("b")
    dW = _get("dW")
    db = _get("db")
    del _get

    def __repr__(self):
        return f"Layer({self.n_in} -> {self.n_out}, {self.activation})"


class MLP:
    """A multilayer perceptron trained by backpropagation on fastbp's kernels.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, inputs first: [784, 128, 10] is one hidden layer of 128. Each
        at most 2**31 - 1, as is a batch's row count: the kernels hand dimensions to
        BLAS as 32-bit integers (ValueError naming ``sizes`` or ``X`` beyond that).
    activation : str or list of str
        Hidden layers' activation, one name for all or one per hidden layer; names in
        ``fastbp.ACTIVATIONS``.
    output_activation : str
        The last layer's activation ("identity": logits for the logit losses).
    loss : str
        One of ``fastbp.LOSSES``, each with mean reduction as PyTorch defines it:
        "softmax_cross_entropy" (y: (batch,) int class labels), "mse" (y: (batch, out)
        floats), "bce_with_logits" (y: (batch, out) targets in [0, 1]); for one output,
        y may be (batch,).
    dtype : "float32" (default) or "float64"
    seed : int or None
        Seed of the weight initialisation (Glorot uniform; He uniform for relu-like:
        the activations of kernels.codes.HE_INIT).
    leaky_relu_slope : float
        Negative slope of "leaky_relu" layers (0.01, as PyTorch).
    device : "cpu" (default) or "cuda"
        Where parameters, gradients, optimizer state and workspaces live and the
        kernels run. With "cuda" they are numba.cuda device arrays that stay on the GPU
        across steps (``fastbp.device.to_host(net.params)`` or ``.copy_to_host()``
        gives numpy copies); only input batches go in and the loss or requested outputs
        come out. Raises fastbp.device.CudaUnavailableError saying why when no GPU can
        be used. ``net.to(device)`` moves a network without changing its values.
    checkpoint : int or None
        Recompute instead of storing: with ``checkpoint=k`` only every k-th layer's
        output (and the last layer's) is kept between forward and backward; backward
        recomputes the others one segment of k layers at a time. Activation memory falls
        to about (L/k + k) layer outputs instead of L, for about one extra forward pass
        of the non-kept layers. None or 1: keep everything (the default).

    Attributes
    ----------
    params, grads : (n_params,) arrays of ``dtype``; every layer's W then b, flat.
    layers : list of Layer, with W, b, dW, db views into params and grads.

    Inputs X are (batch, sizes[0]) float or integer arrays; they are copied to ``dtype``
    in C order (with canonical strides: a one-row view such as ``x[None, :]`` counts as
    not C-ordered) when they are not already, and are never modified. The network keeps
    workspaces between calls, so one instance runs one call at a time: a second thread
    calling into it meanwhile gets a RuntimeError (fastbp.concurrency). Different
    networks may train in different threads at once.
    """

    def __init__(self, sizes, activation="relu", output_activation="identity",
                 loss="softmax_cross_entropy", dtype="float32", seed=None,
                 leaky_relu_slope=codes.DEFAULT_LEAKY_RELU_SLOPE, device="cpu",
                 checkpoint=None):
        device = _device.require(device)
        self.device = "cpu"
        self._staging = None
        self._in_use = _concurrency.new_lock()
        self.sizes = validation.layer_sizes(sizes)
        n_hidden = len(self.sizes) - 2
        if isinstance(activation, str):
            hidden = [activation] * n_hidden
        else:
            try:
                hidden = list(activation)
            except TypeError:
                raise TypeError(f"activation: expected a name or a list of {n_hidden} "
                                f"names, got {activation!r}") from None
            if len(hidden) != n_hidden:
                raise ValueError(f"activation: expected one name or a list of {n_hidden} "
                                 f"names (one per hidden layer), got {len(hidden)}")
        self.activations = [validation.choice("activation", a, codes.ACTIVATIONS)
                            for a in hidden]
        self.activations.append(validation.choice("output_activation", output_activation,
                                                  codes.ACTIVATIONS))
        self.loss = validation.choice("loss", loss, codes.LOSSES)
        if self.loss == "softmax_cross_entropy" and self.sizes[-1] < 2:
            raise ValueError(f"sizes: softmax_cross_entropy needs at least 2 outputs "
                             f"(classes), got {self.sizes[-1]}")
        self.dtype = np.dtype(validation.dtype_name(dtype))
        self.leaky_relu_slope = validation.positive_float("leaky_relu_slope",
                                                          leaky_relu_slope)
        act_codes = [codes.ACTIVATION_CODES[a] for a in self.activations]
        self.checkpoint = (1 if checkpoint is None
                           else validation.positive_int("checkpoint", checkpoint))
        self.layout = NetworkLayout.build(self.sizes, act_codes,
                                          [self.leaky_relu_slope] * len(act_codes),
                                          self.checkpoint)
        self._loss_code = codes.LOSS_CODES[self.loss]
        # The CPU passes compiled for this network's activations only.
        self._kernels = cpu_kernels.network_passes(act_codes)
        self._warmed = set()
        # on cache lines (fastbp/aligned.py), as the workspace and optimizer state
        self.params = aligned.zeros(self.layout.n_params, self.dtype)
        self.grads = aligned.zeros(self.layout.n_params, self.dtype)
        self.layers = [Layer(self, l) for l in range(self.layout.n_layers)]
        self._workspace = Workspace(self.layout, self.dtype)
        self._no_labels = np.zeros(0, np.int64)
        self._no_targets = np.zeros((0, self.sizes[-1]), self.dtype)
        self._ready_batch = validation.ReadyBatch(self.sizes[0], self.sizes[-1], self.dtype,
                                                  self.is_classifier, self._no_labels,
                                                  self._no_targets)
        self._unit_targets = self.loss == "bce_with_logits"
        self._plans = {}   # batch size -> fastbp.plan.StepPlan
        self.init_params(seed)
        if device != "cpu":
            self.to(device)

    # -- placement -------------------------------------------------------------------
    def to(self, device):
        """Move parameters, gradients and workspaces to ``device`` ("cpu" or "cuda")
        without changing their values; returns the network. Optimizers follow on their
        next step. Moving to "cuda" compiles (or loads from numba-cuda's disk cache)
        the CUDA kernels of the network's passes (fastbp.warmup), with a one-line
        notice on stderr when they must be compiled."""
        device = _device.require(device)
        if device == self.device:
            return self
        self.params = _device.move(self.params, device)
        self.grads = _device.move(self.grads, device)
        self.device = device
        self._kernels = (cpu_kernels.network_passes(self.layout.act_codes)
                         if device == "cpu" else _device.kernels(device))
        self.layers = [Layer(self, l) for l in range(self.layout.n_layers)]
        self._workspace = Workspace(self.layout, self.dtype, device)
        self._staging = (_device.Staging(self.sizes[0], self.sizes[-1], self.dtype)
                         if device == "cuda" else None)
        self._plans = {}
        if device == "cuda":   # the passes' CUDA kernels now, with a notice if compiled
            from .warmup import warmup
            warmup(self, passes=())
        return self

    # -- parameters ------------------------------------------------------------------
    def init_params(self, seed=None):
        """Fresh random weights (Glorot uniform, He uniform for relu-like layers) and
        zero biases, drawn from ``numpy.random.default_rng(seed)``: the same values on
        every device (on "cuda" drawn on the host and copied into the device buffers in
        place, one copy each for params and grads)."""
        on_host = self.device == "cpu"
        params = self.params if on_host else np.zeros(self.layout.n_params, self.dtype)
        rng = np.random.default_rng(seed)
        for l, layer in enumerate(self.layers):
            w_slice, w_shape, b_slice = self.layout.weight_slice(l)
            fan_in, fan_out = layer.n_in, layer.n_out
            if codes.ACTIVATION_CODES[layer.activation] in codes.HE_INIT:
                limit = np.sqrt(6.0 / fan_in)
            else:
                limit = np.sqrt(6.0 / (fan_in + fan_out))
            params[w_slice].reshape(w_shape)[...] = rng.uniform(-limit, limit,
                                                                size=(fan_out, fan_in))
            params[b_slice] = 0.0
        if on_host:
            self.grads[...] = 0.0
        else:
            _device.copy_into(self.params, params)
            _device.copy_into(self.grads, np.zeros(self.layout.n_params, self.dtype))

    @property
    def n_params(self):
        return self.layout.n_params

    @property
    def is_classifier(self):
        return self.loss == "softmax_cross_entropy"

    # -- input checks ----------------------------------------------------------------
    def _inputs(self, X):
        return validation.as_float_matrix("X", X, self.sizes[0], self.dtype)

    def _targets(self, y, batch):
        """(labels, targets) for the compiled passes; the one the loss ignores is empty."""
        if self.is_classifier:
            return validation.class_labels("y", y, batch, self.sizes[-1]), self._no_targets
        targets = validation.float_targets("y", y, batch, self.sizes[-1], self.dtype,
                                           unit_interval=self.loss == "bce_with_logits")
        return self._no_labels, targets

    def _batch(self, X, y):
        """(X, labels, targets) for the compiled passes, checked as ``_inputs`` and
        ``_targets`` check them. A batch already in the kernels' form
        (validation.ReadyBatch) has only its values checked: by one compiled pass on
        the CPU (a quarter of a 64-64-10 network's step went in numpy's several
        checks), by validation.ready_values_ok for a CUDA network's host batches (which
        says why). Any other batch, and any that fails that check, goes through the full
        checks, which convert it or raise naming what is wrong."""
        ready = self._ready_batch(X, y)
        values_ok = (cpu_checks.batch_values_ok if self.device == "cpu"
                     else validation.ready_values_ok)
        if ready is not None and values_ok(ready[0], ready[1], self.sizes[-1], ready[2],
                                           self._unit_targets):
            return ready
        X = self._inputs(X)
        return (X, *self._targets(y, X.shape[0]))

    def _warm(self, name, optimizer=None):
        """Compile pass ``name`` before its first call here, announcing a cold compile
        on stderr (fastbp.warmup)."""
        if self.device == "cpu" and name not in self._warmed:
            from .warmup import warmup
            warmup(self, optimizer, (name,))
            self._warmed.add(name)

    # -- the passes ------------------------------------------------------------------
    @_concurrency.exclusive
    def forward(self, X):
        """The last layer's output (logits for the logit losses) as a new
        (batch, sizes[-1]) array of ``dtype``."""
        X = self._inputs(X)
        self._warm("forward")
        out = plan_for(self, X.shape[0]).forward(X)
        return out.copy() if self.device == "cpu" else out.copy_to_host()

    @_concurrency.exclusive
    def compute_loss(self, X, y):
        """Mean loss on (X, y) as a float; gradients are left untouched."""
        X = self._inputs(X)
        labels, targets = self._targets(y, X.shape[0])
        self._warm("loss")
        return plan_for(self, X.shape[0]).loss(X, labels, targets)

    def backward(self, X, y):
        """Forward and backward on (X, y): fills ``grads`` (every dW, db) with the
        gradient of the mean loss and returns the loss as a float."""
        X, labels, targets = self._batch(X, y)
        return self._backward_checked(X, labels, targets)

    @_concurrency.exclusive
    def _backward_checked(self, X, labels, targets):
        """backward on inputs that already passed ``_inputs``/``_targets`` (the training
        loop checks a whole data set once, then feeds views of it)."""
        self._warm("backward")
        return plan_for(self, X.shape[0]).backward(X, labels, targets)

    @_concurrency.exclusive
    def train_step(self, X, y, optimizer):
        """One training step on (X, y): forward, loss, backward and the optimizer's
        update, all in one compiled call. Returns the mean loss before the update.

        Raises fastbp.TrainingDiverged when the update left any parameter NaN or
        infinite (the update notices them as it writes them, at almost no cost). This
        call keeps no copy of the parameters, so they then hold those values: keep a
        copy (``net.params.copy()``) to go back to, or train with ``fit``, which
        restores the start of the epoch. A non-finite loss whose update stayed finite
        is returned as it is.

        On device="cuda" the step is launched and the loss returned without waiting for
        the GPU, as a fastbp.cuda_plan.StepLoss: ``float(loss)`` (or ``loss.item()``,
        arithmetic, comparisons) waits and reads it, and raises the TrainingDiverged
        above then; a loop that never reads its losses copies nothing back.
        """
        # a DistributedOptimizer all-reduces between backward and update, so its steps
        # go through _train_step on every device
        if self.device == "cuda" and not getattr(optimizer, "reduces_gradients", False):
            X, labels, targets = self._cuda_inputs(X, y)
            return self._train_step_planned(X, labels, targets, optimizer)
        # this method holds the lock itself and calls the unlocked _train_step: every
        # Python call around a 64-64-10 network's 20 us compiled step shows in its time
        X, labels, targets = self._batch(X, y)
        loss, nonfinite = self._train_step(X, labels, targets, optimizer)
        if nonfinite:
            raise divergence.TrainingDiverged(
                f"train_step: {divergence.describe(loss, nonfinite, self.n_params)} at "
                f"optimizer step {optimizer.steps}; the parameters now hold those values. "
                f"Try a smaller learning rate (it was {optimizer.lr:g}) or gradient "
                f"clipping (max_grad_norm=...).", None, None, loss, None, nonfinite)
        return loss

    def _cuda_inputs(self, X, y):
        """(X, labels, targets) checked: host arrays as everywhere, arrays that live on
        the GPU from their interface, used in place (fastbp.device_inputs)."""
        if not _device.on_device(X):
            return self._batch(X, y)
        from .cuda_plan import runner
        from .device_inputs import checked
        return checked(self, X, y, runner(self))

    @_concurrency.exclusive
    def _train_step_planned(self, X, labels, targets, optimizer):
        """train_step on "cuda": launched from the step's plan, the loss left on the
        device (fastbp.cuda_plan.StepLoss)."""
        from .cuda_plan import train_step
        return train_step(self, X, labels, targets, optimizer)

    def _training_kernels(self, opt_code):
        """The kernels whose network_train_step and network_train_epoch train this
        network with the optimizer of code ``opt_code``: on the CPU the passes compiled
        for its activations and, for a process's first optimizer, that optimizer
        (kernels/cpu/network.py, ``training_passes``); on "cuda" the CUDA kernels."""
        if self.device != "cpu":
            return self._kernels
        return cpu_kernels.training_passes(self._kernels.act_set, opt_code)

    def _train_step(self, X, labels, targets, optimizer):
        """(loss before the update, how many parameters the update left non-finite),
        for a caller that holds the network (``_train_step_checked`` takes it)."""
        if getattr(optimizer, "reduces_gradients", False):   # fastbp.distributed
            return optimizer._train_step(self, X, labels, targets)
        if "train_step" not in self._warmed:
            self._warm("train_step", optimizer)
        return plan_for(self, X.shape[0]).train_step(X, labels, targets, optimizer)

    _train_step_checked = _concurrency.exclusive(_train_step)

    @_concurrency.exclusive
    def train_epoch(self, X, y, optimizer, batch_size=32):
        """Training steps over the rows of (X, y) in order, ``batch_size`` rows each (the
        last step takes the remainder), with no return to Python between steps on the
        CPU: one compiled call for the whole pass. Shuffle X and y first if wanted.

        Returns the steps' mean losses (each before its update) as a float64 array of
        ceil(len(X) / batch_size) entries. When a step's loss, or the parameters after
        its update, are NaN or infinite, the parameters, the optimizer's state and its
        step count are restored to their values at the start of this call and
        fastbp.TrainingDiverged is raised naming the step (``batch``, 1-based).
        """
        batch_size = validation.positive_int("batch_size", batch_size)
        if self.device == "cuda":
            X, labels, targets = self._cuda_inputs(X, y)
        else:
            X = self._inputs(X)
            labels, targets = self._targets(y, X.shape[0])
        n_batches = -(-X.shape[0] // batch_size)
        losses = np.empty(n_batches, np.float64)
        start = divergence.Snapshot(self, optimizer)
        ran, nonfinite = n_batches, 0
        if getattr(optimizer, "reduces_gradients", False):
            # distributed steps all-reduce between backward and update (fastbp.distributed)
            for i in range(n_batches):
                rows = slice(i * batch_size, (i + 1) * batch_size)
                losses[i], nonfinite = self._train_step_checked(
                    X[rows], labels[rows] if labels.size else labels,
                    targets[rows] if targets.size else targets, optimizer)
                if divergence.diverged(losses[i], nonfinite):
                    ran = i + 1
                    break
        else:
            ran, nonfinite = self._train_epoch_checked(X, labels, targets, batch_size,
                                                       optimizer, losses)
        if divergence.diverged(losses[ran - 1], nonfinite):
            start.restore()
            raise divergence.TrainingDiverged(
                f"train_epoch: {divergence.describe(losses[ran - 1], nonfinite, self.n_params)}"
                f" at step {ran} of {n_batches}; the parameters, optimizer state and step "
                f"count were restored to their values at the start of this call. Try a "
                f"smaller learning rate (it was {optimizer.lr:g}) or gradient clipping "
                f"(max_grad_norm=...).", None, ran, float(losses[ran - 1]), None,
                int(nonfinite))
        return losses

    @_concurrency.exclusive
    def _train_epoch_checked(self, X, labels, targets, batch_size, optimizer, losses):
        """The kernels' network_train_epoch on checked inputs (the CPU's or its CUDA
        twin, which launches every step and reads the losses once): fills ``losses``,
        advances the optimizer's step count, returns (steps run, nonfinite)."""
        self._warm("train_epoch", optimizer)
        return plan_for(self, min(batch_size, X.shape[0])).train_epoch(
            X, labels, targets, batch_size, optimizer, losses)

    def predict(self, X):
        """Class labels (batch,) int64 for softmax_cross_entropy; 0/1 labels for
        bce_with_logits ((batch,) for one output, else (batch, out)); the outputs
        (batch, out) for mse."""
        out = self.forward(X)
        if self.loss == "softmax_cross_entropy":
            return out.argmax(axis=1)
        if self.loss == "bce_with_logits":
            labels = (out > 0).astype(np.int64)
            return labels[:, 0] if labels.shape[1] == 1 else labels
        return out

    def fit(self, X, y, **kwargs):
        """Train on (X, y); see :func:`fastbp.training.fit` for the arguments."""
        from .training import fit
        return fit(self, X, y, **kwargs)

    def save(self, path, optimizer=None):
        """Write this network (and ``optimizer``'s state, if given) to the .npz file
        ``path``; :func:`fastbp.load` reads it back. See :mod:`fastbp.persistence`."""
        from .persistence import save
        save(self, path, optimizer=optimizer)

    def __repr__(self):
        acts = ", ".join(self.activations)
        return (f"MLP(sizes={list(self.sizes)}, activations=[{acts}], loss={self.loss!r}, "
                f"dtype={self.dtype.name!r}, n_params={self.n_params}"
                + (f", device={self.device!r})" if self.device != "cpu" else ")"))
