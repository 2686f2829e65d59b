"""Training on device="cuda" without per-step host work: plans, a loss ring, lazy losses.

One ``CudaRunner`` per CUDA network (created on its first training step) owns:

- a launch plan per batch size (``fastbp.kernels.cuda.plan.TrainStepPlan``): every
  view, grid and packed argument of a step is built once, when the workspace is sized,
  and rebuilt only when a buffer it uses is replaced (a larger batch grows the
  workspace; ``net.to`` moves the parameters);
- the loss ring: a float64 device array holding, per step slot, the step's mean loss
  and how many parameters its update left NaN or infinite. Steps write it on the
  device; the host copies it back in one transfer when it wants the values.

What that gives:

- ``train_step`` returns a :class:`StepLoss` at once, without waiting for the GPU: a
  loop of steps that never reads the loss copies nothing back (the batch goes in, as
  it must). ``float(loss)`` (or ``loss.item()``, arithmetic, comparisons, formatting)
  waits for the step, reads the ring and returns the loss as on the CPU; it raises
  fastbp.TrainingDiverged when that step's update left a parameter NaN or infinite,
  the check the CPU's ``train_step`` makes before returning. A StepLoss can be read
  until ``RING_STEPS`` later steps (or a ``fit``/``train_epoch`` call) reuse its slot;
  then reading it raises RuntimeError.
- ``fit`` and ``train_epoch`` upload an epoch's data once (``epoch_data``) and run
  the kernels' ``network_train_epoch``, the CUDA twin of the CPU's, which launches all
  its steps from plans of its own, then reads its loss ring once: the losses of every
  step and the first divergent step, named as on the CPU.

Clipping (``max_grad_norm``) is planned too: the factor of the step's own gradient
norm is computed on the device after backward and read there by the update. Not
planned: ``backward``/``compute_loss``/``forward``, which return host values by
definition.
A host batch given to ``train_step`` goes through pinned, double-buffered staging
(``device.PinnedBatches``): copied to page-locked memory, then to the GPU
asynchronously on fastbp's own copy stream, so the host queues the next step while the
GPU works and the next batch's upload runs beside the current step's kernels.
``fit`` and ``train_epoch`` upload once per call, and device-resident inputs
(fastbp.device_inputs, fastbp.device_data) are not copied at all.
"""
import numpy as np

from . import device as _device
from . import divergence
from .plan import plan_for

RING_STEPS = 1024   # train_step losses kept readable on the device


class CudaRunner:
    """The CUDA state of one network's training (see the module docstring)."""

    def __init__(self, net):
        from .kernels.cuda import config, optim
        self.net = net
        self.partials = _device.empty(max(config.max_reduce_blocks, 256), np.float64, "cuda")
        self.counter = optim.new_counter()
        self.bad = optim.new_counter()   # invalid entries of device-resident inputs
        from .kernels.cuda.plan import RingCursor
        self.ring_cursor = RingCursor()   # the ring slot the next step writes, on the GPU
        self.no_labels = _device.empty(0, np.int64, "cuda")
        self.no_targets = _device.empty((0, net.sizes[-1]), net.dtype, "cuda")
        self.plans = {}
        self.ring = self.host_ring = None
        self.capacity = 0
        self.generation = 0       # bumped whenever earlier slots stop being readable
        self.cursor = 0           # train_step's next step number (slot = cursor % capacity)
        self.written = self.read_at = 0
        self._ensure_ring(RING_STEPS)
        self._rows = (None, [])
        self._batches = {}   # (batch, labels?, targets?) -> device.PinnedBatches
        self._epoch = None

    # -- the ring ----------------------------------------------------------------------
    def _ensure_ring(self, steps):
        if steps > self.capacity:
            self.ring = _device.empty(3 * steps, np.float64, "cuda")
            self.host_ring = np.zeros(3 * steps, np.float64)
            self.capacity = steps
            self.generation += 1
            self.cursor = 0

    def read(self):
        """The ring on the host (one device-to-host copy, none when nothing was written
        since the last read): losses in [0, capacity), then the updates' non-finite
        counts, then the invalid-input counts."""
        if self.read_at != self.written:
            _device.download(self.host_ring, self.ring)
            self.read_at = self.written
        return self.host_ring

    # -- one step ----------------------------------------------------------------------
    def _plan(self, X, labels, targets):
        from .kernels.cuda.plan import TrainStepPlan, keep_plan
        batch = X.shape[0]
        step = plan_for(self.net, batch)   # the passes' arguments (fastbp.plan)
        plan = self.plans.get(batch)
        if plan is None or not plan.uses(step.params, step.grads, step.acts, step.pres,
                                         step.dbuf, self.partials, self.counter, self.bad):
            plan = keep_plan(self.plans, batch, TrainStepPlan(
                *step.backward_args(X, labels, targets), self.partials, self.counter,
                self.bad))
        else:
            plan.bind_inputs(X, labels, targets)
        return plan

    def _state_rows(self, state):
        if self._rows[0] is not state:   # views of the optimizer's rows, made once
            self._rows = (state, [state[r] for r in range(state.shape[0])])
        return self._rows[1]

    def step(self, X, labels, targets, optimizer, slot, check=False):
        """Launch one training step on device batch (X, labels, targets) into ``slot``;
        ``check``: count invalid input entries on the device first (inputs the caller
        keeps on the GPU, which the host has not seen)."""
        plan = self._plan(X, labels, targets)
        code, params, grads, state, hparams, step = optimizer.compiled_args_for(self.net)
        limits = ((self.net.sizes[-1], self.net.loss == "bce_with_logits") if check
                  else None)
        plan.run(code, self._state_rows(state), hparams, step, self.ring, self.ring_cursor,
                 slot, self.capacity, limits, self.net._staging.partials)
        self.written += 1

    def stage(self, X, labels, targets):
        """Device arrays holding the host batch (``device.PinnedBatches``: pinned,
        double-buffered, asynchronous; its buffers made once per batch size)."""
        if _device.on_device(X):   # checked by fastbp.device_inputs: used in place
            return X, labels if labels.size else self.no_labels, targets
        key = (X.shape[0], bool(labels.size), bool(targets.size))
        batches = self._batches.get(key)
        if batches is None:
            net = self.net
            batches = self._batches[key] = _device.PinnedBatches(
                key[0], net.sizes[0], net.sizes[-1], net.dtype, key[1], key[2])
        dX, d_labels, d_targets = batches.put(X, labels, targets)
        if not labels.size:
            d_labels = self.no_labels
        if not targets.size:
            d_targets = self.no_targets
        return dX, d_labels, d_targets

    # -- many steps --------------------------------------------------------------------
    def epoch_data(self, X, labels, targets):
        """(X, labels, targets) of an epoch on the device, for the kernels'
        network_train_epoch: host arrays copied in, one copy each, into buffers kept
        per shape (so the kernels' minibatch views are made once); arrays that live on
        the GPU used in place, once their values pass the device-side check
        (ValueError naming how many entries are invalid, before any step)."""
        n = X.shape[0]
        # an epoch's steps keep their losses in the kernels' own ring (kernels/cuda/
        # plan.py EpochState); earlier StepLosses become unreadable all the same, as
        # documented, so that the two rings can become one without changing that
        self.generation += 1
        if _device.on_device(X):
            from .kernels.cuda.plan import count_invalid
            labels = labels if labels.size else self.no_labels
            net = self.net
            bad = count_invalid(X, labels, targets, net.sizes[-1],
                                net.loss == "bce_with_logits", self.bad)
            if bad:
                raise ValueError(invalid_inputs(net, bad, "the epoch", before_steps=True))
            return X, labels, targets
        key = (n, bool(labels.size), bool(targets.size))
        if self._epoch is None or self._epoch[0] != key:
            dX = _device.empty((n, X.shape[1]), self.net.dtype, "cuda")
            d_labels = (_device.empty(n, np.int64, "cuda") if labels.size
                        else self.no_labels)
            d_targets = _device.empty((n if targets.size else 0, self.net.sizes[-1]),
                                      self.net.dtype, "cuda")
            self._epoch = (key, dX, d_labels, d_targets)
        _, dX, d_labels, d_targets = self._epoch
        _device.upload(dX, X)
        if labels.size:
            _device.upload(d_labels, labels)
        if targets.size:
            _device.upload(d_targets, targets)
        return dX, d_labels, d_targets


def prepare(net, optimizer=None, device_inputs=False, batch_sizes=()):
    """Compile (or load from numba-cuda's disk cache) the CUDA kernels ``net``'s
    training and prediction launch, before any is needed and without launching one:
    the passes (forward, loss, backward: a plan is built for a one-row batch and for
    each of ``batch_sizes``), and with ``optimizer`` its update (and clipping) and the
    step's record; with ``device_inputs`` the check of inputs that live on the GPU.

    The kernels' argument types do not depend on the batch size, but the product
    geometry does (kernels/cuda/_launch.py product_shape: smaller tiles and split k for
    small outputs), so a batch size not prepared may compile a product variant or two
    at its first step (about a second each on a GPU host, once per machine: they are
    cached). ``fit`` passes its minibatch sizes."""
    r = runner(net)
    for batch in sorted({1, *(int(b) for b in batch_sizes if b)}):
        X = _device.empty((batch, net.sizes[0]), net.dtype, "cuda")
        if net.is_classifier:
            labels, targets = _device.empty(batch, np.int64, "cuda"), r.no_targets
        else:
            labels = r.no_labels
            targets = _device.empty((batch, net.sizes[-1]), net.dtype, "cuda")
        plan = r._plan(X, labels, targets)
    if optimizer is None:
        return
    steps = optimizer.steps   # compiled_args_for counts a step: none is run here
    try:
        code, _, _, state, hparams, step = optimizer.compiled_args_for(net)
    finally:
        optimizer.steps = steps
    check = (net.sizes[-1], net.loss == "bce_with_logits") if device_inputs else None
    plan.compile(code, r._state_rows(state), hparams, step, r.ring, r.ring_cursor,
                 r.capacity, net._staging.partials, check)


def runner(net):
    """The network's CudaRunner, created on first use."""
    r = getattr(net, "_cuda_runner", None)
    if r is None:
        r = net._cuda_runner = CudaRunner(net)
    return r


class StepLoss:
    """The loss of one device="cuda" training step, still on the GPU until read.

    ``float(loss)``, ``loss.item()``, arithmetic, comparisons and formatting wait for
    the step and read it (one device-to-host copy for all steps since the last read);
    reading raises fastbp.TrainingDiverged when the step's update left a parameter NaN
    or infinite (as the CPU's train_step does when it returns), and RuntimeError when
    the slot was reused since (more than RING_STEPS later steps, or fit/train_epoch).
    ``repr`` does not wait.
    """

    __slots__ = ("_runner", "_generation", "_index", "_step", "_lr", "_value")

    def __init__(self, runner, index, step, lr):
        self._runner, self._index, self._step, self._lr = runner, index, step, lr
        self._generation = runner.generation
        self._value = None

    def item(self):
        """The loss as a Python float (waits for the step); see the class docstring."""
        if self._value is not None:
            return self._value
        r = self._runner
        if r.generation != self._generation or r.cursor - self._index > r.capacity:
            raise RuntimeError(
                f"train_step loss of optimizer step {self._step}: no longer held on the "
                f"device (read it within {r.capacity} steps of the next training calls)")
        ring = r.read()
        slot = self._index % r.capacity
        loss, nonfinite = float(ring[slot]), int(ring[r.capacity + slot])
        bad = int(ring[2 * r.capacity + slot])
        if bad:
            raise ValueError(invalid_inputs(r.net, bad, f"optimizer step {self._step}"))
        if nonfinite:
            raise divergence.TrainingDiverged(
                f"train_step: {divergence.describe(loss, nonfinite, r.net.n_params)} at "
                f"optimizer step {self._step}; the parameters now hold those values "
                f"(on device=\"cuda\" this is reported when the step's loss is read). "
                f"Try a smaller learning rate (it was {self._lr:g}) or gradient "
                f"clipping (max_grad_norm=...).", None, None, loss, None, nonfinite)
        self._value = loss
        return loss

    __float__ = item

    def __repr__(self):
        if self._value is not None:
            return repr(self._value)
        return f"StepLoss(optimizer step {self._step}, not read yet)"

    def __format__(self, spec):
        return format(self.item(), spec)

    def __hash__(self):
        return hash(self.item())

    def __bool__(self):
        return bool(self.item())

    def __neg__(self):
        return -self.item()

    def __abs__(self):
        return abs(self.item())

    def __round__(self, n=None):
        return round(self.item(), n)


def _through_float(name):
    op = getattr(float, name)
    return lambda self, other: op(self.item(), float(other))


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__pow__", "__rpow__", "__lt__", "__le__",
              "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(StepLoss, _name, _through_float(_name))


def invalid_inputs(net, bad, where, before_steps=False):
    """The error message for ``bad`` invalid entries of device-resident inputs, found
    by a step (or, ``before_steps``, by the check of a whole epoch's data)."""
    what = ("labels outside [0, classes)" if net.is_classifier else
            "targets outside [0, 1]" if net.loss == "bce_with_logits" else "")
    when = ("before the first step: nothing was trained, so nothing needed to be "
            "restored" if before_steps else
            "after the step was launched: the parameters may hold their effect")
    return (f"X, y: {bad} entries of the device arrays given for {where} were NaN or "
            f"infinite{' or ' + what if what else ''} (checked on the device {when})")


def train_step(net, X, labels, targets, optimizer):
    """One step on checked host or device arrays; returns its StepLoss (no wait)."""
    r = runner(net)
    check = _device.on_device(X)
    X, labels, targets = r.stage(X, labels, targets)
    index = r.cursor
    r.step(X, labels, targets, optimizer, index % r.capacity, check)
    r.cursor += 1
    return StepLoss(r, index, optimizer.steps, optimizer.lr)


def planned_launches(net):
    """Kernel launches per step of the net's largest planned batch (for benchmarks and
    tests), or None when no plan was built."""
    r = getattr(net, "_cuda_runner", None)
    if r is None or not r.plans:
        return None
    return r.plans[max(r.plans)].count()
