"""The minibatch training loop."""
import time

import numpy as np

from . import validation
from .optim import SGD


def accuracy(net, X, y):
    """Fraction of rows of X whose predicted class equals y (classifiers only)."""
    return float(np.mean(net.predict(X) == np.asarray(y)))


def fit(net, X, y, epochs=10, batch_size=32, optimizer=None, shuffle=True, seed=None,
        validation_data=None, verbose=False, print_fn=print):
    """Train ``net`` on (X, y) by minibatch backpropagation.

    X (n, sizes[0]) and y as for ``net.backward``; both are checked and converted once,
    then each epoch gathers the (shuffled) rows into one reused buffer, so the steps
    themselves allocate nothing. ``optimizer`` defaults to ``SGD(net, lr=0.01)``.
    ``validation_data`` = (X_val, y_val) is scored after every epoch. ``seed`` fixes
    the shuffling. With ``verbose``, one line per epoch goes to ``print_fn``.

    Returns a dict of per-epoch lists: "loss" (mean training loss over the epoch's
    minibatches), and with validation data "val_loss" and, for classifiers,
    "val_accuracy".
    """
    epochs = validation.positive_int("epochs", epochs)
    batch_size = validation.positive_int("batch_size", batch_size)
    X = net._inputs(X)
    labels, targets = net._targets(y, X.shape[0])
    if optimizer is None:
        optimizer = SGD(net, lr=0.01)
    if validation_data is not None:
        X_val, y_val = validation_data
        X_val = net._inputs(X_val)
        net._targets(y_val, X_val.shape[0])   # fail now, not after the first epoch
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    X_epoch = np.empty_like(X)
    labels_epoch = np.empty_like(labels)
    targets_epoch = np.empty_like(targets)
    history = {"loss": []}
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        if shuffle:
            order = rng.permutation(n)
            np.take(X, order, axis=0, out=X_epoch)
            if labels.size:
                np.take(labels, order, out=labels_epoch)
            if targets.size:
                np.take(targets, order, axis=0, out=targets_epoch)
        else:
            X_epoch, labels_epoch, targets_epoch = X, labels, targets
        total = 0.0
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            lab = labels_epoch[a:b] if labels.size else labels
            tgt = targets_epoch[a:b] if targets.size else targets
            total += net._train_step_checked(X_epoch[a:b], lab, tgt, optimizer) * (b - a)
        history["loss"].append(total / n)
        line = f"epoch {epoch:3d}/{epochs}  loss {total / n:.4f}"
        if validation_data is not None:
            val_loss = net.compute_loss(X_val, y_val)
            history.setdefault("val_loss", []).append(val_loss)
            line += f"  val_loss {val_loss:.4f}"
            if net.is_classifier:
                acc = accuracy(net, X_val, y_val)
                history.setdefault("val_accuracy", []).append(acc)
                line += f"  val_accuracy {acc:.4f}"
        if verbose:
            print_fn(line + f"  ({time.perf_counter() - start:.2f} s)")
    return history
