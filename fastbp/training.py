"""The minibatch training loop: ``fit``.

Design: the data are checked and converted once; each epoch gathers the shuffled rows
into buffers allocated once, then every minibatch is one compiled call
(``net._train_step_checked``: forward, loss, backward and the optimizer's update). Per
step, Python only slices views and checks that the returned loss is finite; per epoch it
copies the parameters and optimizer state once (the snapshot a divergence falls back
to), scores the validation data, and runs the schedule and the callbacks.
"""
import io
import math
import sys
import time
import warnings

import numpy as np

from . import aligned
from . import device as _device
from . import device_data, distributed, divergence, validation
from .concurrency import exclusive_function
from .divergence import TrainingDiverged
from .optim import SGD, Optimizer, copy_back, host_copy, make_optimizer
from .schedules import LRSchedule
from .warmup import PASSES, warmup

ON_NONFINITE = ("raise", "stop")


class StopTraining(Exception):
    """Raise from a callback to end training after the current epoch (as returning
    True does)."""


class History(dict):
    """fit's result: a dict of per-epoch lists ("loss", "lr", and with validation data
    "val_loss" plus "val_accuracy" or "val_r2"), with attributes

    epochs_run   epochs completed
    best_epoch   with early stopping, the (1-based) epoch whose weights were restored
    stop_reason  None (ran every epoch), "early_stopping", "callback" or "nonfinite"
    diverged_at  (epoch, batch) of a non-finite loss under on_nonfinite="stop", else None
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epochs_run = 0
        self.best_epoch = None
        self.stop_reason = None
        self.diverged_at = None


def accuracy(net, X, y):
    """Fraction of rows of X whose predicted class equals y (classifiers only)."""
    return float(np.mean(net.predict(X) == np.asarray(y)))


def _stderr_is_terminal():
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):   # closed or detached stream
        return False


def _verbosity(verbose):
    """(show_bar, print_lines) for ``verbose``."""
    if isinstance(verbose, str):
        if verbose != "auto":
            raise ValueError(f"verbose: expected True, False or 'auto', got {verbose!r}")
        return _stderr_is_terminal(), False
    if verbose in (0, 1) or isinstance(verbose, (bool, np.bool_)):
        return (_stderr_is_terminal(), True) if verbose else (False, False)
    raise ValueError(f"verbose: expected True, False or 'auto', got {verbose!r}")


def _resolve_optimizer(net, optimizer, schedule):
    if schedule is not None and not isinstance(schedule, LRSchedule):
        raise TypeError(f"schedule: expected a fastbp.schedules schedule (StepLR, "
                        f"ExponentialLR, CosineAnnealingLR, InverseScaling), got {schedule!r}")
    if optimizer is None:
        optimizer = schedule.optimizer if schedule is not None else SGD(net, lr=0.01)
    elif isinstance(optimizer, str):
        optimizer = make_optimizer(optimizer, net)
    elif not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected a fastbp optimizer or one of the names "
                        f"sgd, adam, adamw, rmsprop; got {optimizer!r}")
    if optimizer.net is not net:
        raise ValueError("optimizer: it was created for a different network")
    if schedule is not None and schedule.optimizer is not optimizer:
        raise ValueError("schedule: it was created for a different optimizer than the "
                         "one fit uses")
    return optimizer


def _split(net, X, labels, targets, validation_data, validation_split, rng):
    """(X, labels, targets) to train on and (X_val, y_val) checked, or None."""
    if validation_data is not None and validation_split is not None:
        raise ValueError("validation_split: give validation_data or validation_split, "
                         "not both")
    if validation_data is not None:
        try:
            X_val, y_val = validation_data
        except (TypeError, ValueError):
            raise TypeError("validation_data: expected a pair (X_val, y_val)") from None
        if _on_gpu(net, X_val):   # checked on the GPU, scored on the host (device_data)
            X_val, labels_val, targets_val = net._cuda_inputs(X_val, y_val)
            X_val, labels_val, targets_val = (device_data.to_host(a) for a in
                                              (X_val, labels_val, targets_val))
        else:
            X_val = net._inputs(X_val)
            labels_val, targets_val = net._targets(y_val, X_val.shape[0])
        return X, labels, targets, (X_val, labels_val if labels_val.size else targets_val)
    if validation_split is None:
        return X, labels, targets, None
    if isinstance(validation_split, (bool, np.bool_)) or not isinstance(
            validation_split, (int, float, np.integer, np.floating)) or not (
            0.0 < float(validation_split) < 1.0):
        raise ValueError(f"validation_split: expected a fraction in (0, 1), got "
                         f"{validation_split!r}")
    n = X.shape[0]
    n_val = int(math.ceil(float(validation_split) * n))
    if n_val >= n:
        raise ValueError(f"validation_split: {validation_split!r} of {n} rows leaves no "
                         f"rows to train on")
    order = rng.permutation(n)
    train_rows, val_rows = np.sort(order[:n - n_val]), np.sort(order[n - n_val:])
    if _on_gpu(net, X):   # both parts gathered on the device; validation scored on the host
        take, host = device_data.take, device_data.to_host
    else:
        take, host = (lambda a, rows: a[rows] if a.size else a), (lambda a: a)
    X_val = host(take(X, val_rows))
    y_val = host(take(labels if labels.size else targets, val_rows))
    X, labels, targets = (take(a, train_rows) for a in (X, labels, targets))
    return X, labels, targets, (X_val, y_val)


class _Scorer:
    """Validation loss and metric of a network on fixed, already checked data, scored
    in chunks so the network's workspace stays small."""

    def __init__(self, net, X_val, y_val, chunk):
        self.net, self.X, self.y, self.chunk = net, X_val, y_val, chunk
        if net.is_classifier or net.loss == "bce_with_logits":
            self.metric = "val_accuracy"
        else:
            self.metric = "val_r2"
            t = y_val.astype(np.float64)
            self.ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)

    def __call__(self):
        net, X, y, n = self.net, self.X, self.y, self.X.shape[0]
        loss = 0.0
        hits = 0.0
        ss_res = 0.0
        for a in range(0, n, self.chunk):
            b = min(a + self.chunk, n)
            loss += net.compute_loss(X[a:b], y[a:b]) * (b - a)
            out = net.forward(X[a:b])
            if net.is_classifier:
                hits += np.count_nonzero(out.argmax(axis=1) == y[a:b])
            elif net.loss == "bce_with_logits":
                hits += np.count_nonzero((out > 0) == (y[a:b].reshape(out.shape) > 0.5))
            else:
                ss_res = ss_res + ((out - y[a:b].reshape(out.shape)) ** 2).sum(axis=0,
                                                                              dtype=np.float64)
        loss /= n
        if self.metric == "val_accuracy":
            width = 1 if net.is_classifier else net.sizes[-1]
            return loss, float(hits / (n * width))
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(self.ss_tot > 0, 1.0 - ss_res / self.ss_tot,
                          np.where(ss_res == 0, 1.0, 0.0))
        return loss, float(np.mean(r2))


def _on_gpu(net, X):
    """True when fit trains a CUDA network on data that live on the GPU
    (fastbp.device_data)."""
    return net.device == "cuda" and _device.on_device(X)


def _steps(net, X, labels, targets, batch_size, optimizer):
    """Run an epoch's minibatch steps in order; yields (first row, end row, loss,
    non-finite count) per step. On the CPU, and under a DistributedOptimizer, each step
    runs when asked for (so a divergent step ends the epoch there); on "cuda" the
    kernels' network_train_epoch launches them all and reads their losses back once,
    up to the first divergent step (MLP._train_epoch_checked; data that live on the GPU
    are checked there before the first step, ValueError)."""
    n = X.shape[0]
    # a DistributedOptimizer all-reduces between backward and update, step by step
    if net.device == "cuda" and not getattr(optimizer, "reduces_gradients", False):
        losses = np.empty(-(-n // batch_size), np.float64)
        ran, nonfinite = net._train_epoch_checked(X, labels, targets, batch_size,
                                                  optimizer, losses)
        for i, a in enumerate(range(0, n, batch_size)[:ran]):
            yield (a, min(a + batch_size, n), float(losses[i]),
                   nonfinite if i == ran - 1 else 0)
        return
    for a in range(0, n, batch_size):
        b = min(a + batch_size, n)
        loss, nonfinite = net._train_step_checked(
            X[a:b], labels[a:b] if labels.size else labels,
            targets[a:b] if targets.size else targets, optimizer)
        yield a, b, loss, nonfinite


def minibatch_sizes(n, batch_size):
    """The sizes of an epoch's minibatches of ``n`` rows: the full one, and the last
    (0 when batch_size divides n); what ``prepare``'s ``batch_sizes`` takes."""
    return min(batch_size, n), n % batch_size


def prepare(net, optimizer, validating=True, device_inputs=False, batch_sizes=()):
    """Compile (or load from numba's cache) what ``fit`` runs for ``net`` with
    ``optimizer`` (its steps; with ``validating`` the loss and forward passes too;
    with ``device_inputs`` the device-side input check; on "cuda" the products of
    minibatches of ``batch_sizes`` rows), announcing a compile on stderr
    (fastbp.warmup). Under MPI rank 0 compiles first, alone and announced, and the
    other ranks then load its code, silently. Returns the seconds spent."""
    passes = distributed.step_passes(optimizer, PASSES if validating else ("train_step",))
    team = distributed.team_of(optimizer)
    # ranks compile alone (no helper process beside an MPI rank: its other ranks wait)
    return team.rank_zero_first(lambda quiet: warmup(
        net, optimizer, passes, stream=io.StringIO() if quiet else None,
        device_inputs=device_inputs, processes=1 if team.size > 1 else None,
        batch_sizes=batch_sizes))


@exclusive_function   # one training of a network at a time (fastbp.concurrency)
@distributed.fit_errors   # under MPI, an error on one rank stops every rank
def fit(net, X, y, epochs=10, batch_size=32, optimizer=None, shuffle=True, seed=None,
        validation_data=None, validation_split=None, early_stopping=None, schedule=None,
        callbacks=None, verbose="auto", on_nonfinite="raise", print_fn=print):
    """Train ``net`` on (X, y) by minibatch backpropagation; returns a :class:`History`.

    Parameters
    ----------
    X, y : as for ``net.backward``; checked and converted once. On device="cuda" they
        may also be arrays that live on the GPU (``__cuda_array_interface__``: numba
        device arrays, CuPy arrays, PyTorch CUDA tensors), checked as
        fastbp.device_inputs says and used in place: split and shuffled on the device,
        never copied to the host (fastbp.device_data; the validation rows are copied
        to the host once, for scoring). Not with a DistributedOptimizer (TypeError).
    epochs, batch_size : positive ints. The last minibatch of an epoch may be smaller.
    optimizer : a fastbp optimizer made for ``net``, or a name ("sgd", "adam", "adamw",
        "rmsprop") for that class with its defaults; default ``SGD(net, lr=0.01)`` (or
        the schedule's optimizer). A ``fastbp.distributed.DistributedOptimizer`` trains
        data-parallel over MPI ranks (see that module for what the ranks agree on).
    shuffle : reshuffle the rows every epoch.
    seed : seeds ``numpy.random.default_rng``, which draws the validation split, then
        each epoch's order. The same seed, data, network and optimizer give the same
        history and parameters (given the same number of numba threads).
    validation_data : (X_val, y_val), scored after every epoch (host arrays, or on
        "cuda" arrays on the GPU, copied to the host once).
    validation_split : a fraction in (0, 1): after a seeded shuffle, the last
        ceil(fraction * n) rows are held out for validation (not stratified); each part
        keeps the rows' original order. Not together with validation_data.
    early_stopping : None, or a patience: stop when the validation loss has not improved
        (strictly decreased) for that many epochs; at the end, the parameters of the best
        epoch are restored (``history.best_epoch``; the optimizer state is not).
        Needs validation data.
    schedule : a fastbp.schedules schedule of this optimizer, stepped after each epoch.
    callbacks : callables called after each epoch as ``callback(epoch, logs)``, epoch
        1-based, logs a dict with that epoch's "loss", "lr" and validation entries.
        Returning True, or raising :class:`StopTraining`, ends training after that
        epoch.
    verbose : "auto" (default): a tqdm progress bar on stderr when stderr is a terminal,
        nothing otherwise. True: also one line per epoch through ``print_fn``. False:
        print nothing.
    on_nonfinite : what to do when a minibatch's loss is NaN or infinite, or its update
        leaves any parameter NaN or infinite (checked after every step). Either way
        the parameters, the optimizer state and its step count are first restored to
        their values at the start of that epoch (the "last good weights": the end of
        the previous epoch; the update that produced the non-finite loss and the
        epoch's earlier updates are undone). "raise" (default) then raises
        :class:`TrainingDiverged` naming the epoch and batch; "stop" warns
        (RuntimeWarning) and returns the history of the completed epochs, with
        ``history.diverged_at = (epoch, batch)`` (and with early stopping, the best
        epoch's parameters restored).

    Returns
    -------
    History, a dict of per-epoch lists: "loss" (mean training loss over the epoch's
    minibatches, each before its update), "lr" (the learning rate used), and with
    validation data "val_loss" and "val_accuracy" (softmax_cross_entropy: the share
    of correct labels; bce_with_logits: of correct 0/1 outputs) or "val_r2" (mse: the
    coefficient of determination averaged over outputs, as sklearn's r2_score).
    """
    epochs = validation.positive_int("epochs", epochs)
    batch_size = validation.positive_int("batch_size", batch_size)
    on_nonfinite = validation.choice("on_nonfinite", on_nonfinite, ON_NONFINITE)
    show_bar, print_lines = _verbosity(verbose)
    optimizer = _resolve_optimizer(net, optimizer, schedule)
    on_gpu = _on_gpu(net, X)
    if on_gpu:   # used in place: checked from the interface, values on the device
        if getattr(optimizer, "reduces_gradients", False):
            raise TypeError("X: data on the GPU cannot be trained with a "
                            "DistributedOptimizer yet; pass host arrays (each rank's "
                            "shard, fastbp.distributed.shard)")
        X, labels, targets = net._cuda_inputs(X, y)
    else:
        X = net._inputs(X)
        labels, targets = net._targets(y, X.shape[0])
    team = distributed.team_of(optimizer)   # the MPI ranks of a DistributedOptimizer
    if team.rank != 0:
        show_bar = print_lines = False   # only rank 0 reports
    rng = np.random.default_rng(team.common_seed(seed))   # every rank shuffles alike
    X, labels, targets, val = _split(net, X, labels, targets, validation_data,
                                     validation_split, rng)
    if early_stopping is not None and early_stopping is not False:
        patience = validation.positive_int("early_stopping", early_stopping)
        if val is None:
            raise ValueError("early_stopping: needs validation_data or validation_split "
                             "(it watches the validation loss)")
    else:
        patience = None
    if callbacks is None:
        callbacks = ()
    elif callable(callbacks):
        callbacks = (callbacks,)
    else:
        callbacks = tuple(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks: expected callables, got {cb!r}")
    scorer = _Scorer(net, *val, max(batch_size, 1024)) if val is not None else None
    team.agree_loop(X.shape[0], batch_size, epochs, val is not None, patience)

    n = X.shape[0]
    n_batches = -(-n // batch_size)
    if shuffle and on_gpu:
        shuffler = device_data.Shuffler(X, labels, targets)
    elif shuffle:
        # the shuffled copies on cache lines, as the network's buffers (fastbp/aligned.py)
        X_epoch = aligned.empty(X.shape, X.dtype)
        labels_epoch = aligned.empty(labels.shape, labels.dtype)
        targets_epoch = aligned.empty(targets.shape, targets.dtype)
    else:
        X_epoch, labels_epoch, targets_epoch = X, labels, targets
    # Host copies (the network's buffers may live on a GPU): the start of the epoch,
    # which a divergent step falls back to.
    good = divergence.Snapshot(net, optimizer)
    best_params = host_copy(net.params) if patience is not None else None
    best_loss = math.inf
    waited = 0
    history = History(loss=[], lr=[])
    if scorer is not None:
        history["val_loss"] = []
        history[scorer.metric] = []
    # Compile (or load) the kernels first: the bar and the epoch times count training.
    prepare(net, optimizer, scorer is not None, on_gpu,
            batch_sizes=minibatch_sizes(n, batch_size))
    bar = None
    if show_bar:
        from tqdm import tqdm
        bar = tqdm(total=epochs * n_batches, unit="batch", file=sys.stderr,
                   dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            if bar is not None:
                bar.set_description(f"epoch {epoch}/{epochs}", refresh=False)
            if shuffle and on_gpu:
                X_epoch, labels_epoch, targets_epoch = shuffler.shuffled(rng.permutation(n))
            elif shuffle:
                order = rng.permutation(n)
                np.take(X, order, axis=0, out=X_epoch)
                if labels.size:
                    np.take(labels, order, out=labels_epoch)
                if targets.size:
                    np.take(targets, order, axis=0, out=targets_epoch)
            good.take()   # one copy per epoch; every step is checked, so it is finite
            lr = optimizer.lr
            total = 0.0
            steps = _steps(net, X_epoch, labels_epoch if labels.size else labels,
                           targets_epoch if targets.size else targets, batch_size, optimizer)
            for batch, (a, b, loss, nonfinite) in enumerate(steps, start=1):
                if divergence.diverged(loss, nonfinite):
                    good.restore()
                    message = (
                        f"fit: {divergence.describe(loss, nonfinite, net.n_params)} at "
                        f"epoch {epoch}, batch {batch} of {n_batches}; the parameters "
                        f"and optimizer state were restored to their values at the start "
                        f"of epoch {epoch}. Try a smaller learning rate (it was {lr:g}) "
                        f"or gradient clipping (max_grad_norm=...), and check the data; "
                        f"on_nonfinite='stop' returns the history instead of raising.")
                    if on_nonfinite == "raise":
                        raise TrainingDiverged(message, epoch, batch, loss, history,
                                               nonfinite)
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
                    history.stop_reason = "nonfinite"
                    history.diverged_at = (epoch, batch)
                    break
                total += loss * (b - a)
                if bar is not None:
                    bar.update(1)
            if history.stop_reason == "nonfinite":
                break

            logs = {"loss": total / n, "lr": lr}
            if scorer is not None:
                logs["val_loss"], logs[scorer.metric] = scorer()
            team.agree_logs(logs, n, scorer.X.shape[0] if scorer is not None else 0)
            for key, value in logs.items():
                history[key].append(value)
            history.epochs_run = epoch
            stop = None
            if patience is not None:
                if logs["val_loss"] < best_loss:
                    best_loss = logs["val_loss"]
                    history.best_epoch = epoch
                    host_copy(net.params, best_params)
                    waited = 0
                else:
                    waited += 1
                    if waited >= patience:
                        stop = "early_stopping"
            line = f"epoch {epoch:3d}/{epochs}  " + "  ".join(
                f"{k} {v:.4g}" if k == "lr" else f"{k} {v:.4f}" for k, v in logs.items())
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
            if print_lines:
                line += f"  ({time.perf_counter() - start:.2f} s)"
                if bar is not None and print_fn is print:
                    bar.write(line)
                else:
                    print_fn(line)
            for callback in callbacks:
                try:
                    if callback(epoch, dict(logs)) is True:
                        stop = stop or "callback"
                except StopTraining:
                    stop = stop or "callback"
            if schedule is not None:
                schedule.step()
            stop = team.agree_stop(stop)
            if stop is not None:
                history.stop_reason = stop
                break
    finally:
        if bar is not None:
            bar.close()
    if patience is not None and history.best_epoch is not None:
        copy_back(net.params, best_params)
    return history
