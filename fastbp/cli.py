"""The command line.

    python -m fastbp train [--data FILE] [options]   train, report held-out accuracy
    python -m fastbp predict MODEL DATA [--output F] predictions of a saved model
    python -m fastbp compare [options]               validate and time every kernel
    python -m fastbp warmup [--dtype ...] [--activations ...]
                                                     compile the kernels ahead of time

(``fastbp`` is the same as ``python -m fastbp`` once the package is installed.)

``train`` uses the bundled 8x8 digits unless ``--data`` names a .npz file (arrays "X"
and "y") or a .csv file (numbers, an optional header row, the label in the last
column or the one ``--label-column`` names). Labels must be integers >= 0; the network
gets max(label) + 1 outputs and predicts labels directly. Features are standardised
with the training split's mean and standard deviation (columns constant there are
set to 0: they carry no information), and the scaling is folded into the first layer
afterwards, so a saved model takes raw features, as ``predict`` gives them. The fold is
checked: where it would change the network's outputs (a column's mean many orders of
magnitude beyond its spread, in float32) training ends with an error instead.

Errors in flags or files print one line starting with "error:" and exit with status 2
(usage) or 1 (anything else), never a traceback (set FASTBP_DEBUG=1 to see one).
"""
import argparse
import os
import sys
import time
import zipfile

import numpy as np

from .datasets import load_digits, train_test_split
from .kernels import codes
from .tables import read_csv
from .warmup import warmup

# Defaults of ``train``, chosen by measurement on the digits (2 shared vCPUs): held-out
# accuracy over seeds 0-9 from 96.9% (seed 7) to 99.1%, mean 98.3%, seed 0 (the
# default) 97.6%; 1.3-1.7 s of training, about 3 s per run with warm numba caches.
# Tried and not better: SGD/tanh 64 (seed 0: 95.8%), 512 units (slower, no gain),
# 50 epochs, batches of 16.
DEFAULTS = dict(hidden=[256], activation="relu", optimizer="adam", lr=None, epochs=30,
                batch_size=32, dtype="float32", seed=0, test_fraction=0.25)
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}


class CommandLineError(Exception):
    """A user error the command line reports in one line (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}\n")


def _parse_hidden(text):
    try:
        sizes = [int(s) for s in text.split(",")]   # int() refuses an empty width
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 64,32, "
                                         f"got {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"expected positive widths like 64,32, got {text!r}")
    return sizes


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, "
                                             f"got {text!r}") from None
        if not (np.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, "
                                             f"got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _names(choices):
    """argparse type: comma-separated names, each one of ``choices``."""
    def parse(text):
        names = [name.strip() for name in text.split(",")]
        bad = [name for name in names if name not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"expected names among {', '.join(choices)}, "
                                             f"got {bad[0]!r}")
        return names
    return parse


def build_parser(prog="fastbp"):
    d = DEFAULTS
    parser = _Parser(prog=prog,
                     description="Train MLPs by backpropagation on compiled kernels.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser(
        "train", help="train an MLP (built-in digits or your data), report held-out "
                      "accuracy",
        description="Train an MLP classifier and report its accuracy on a held-out "
                    "split. Defaults: the built-in 8x8 digits, one hidden layer of 256 "
                    "relu units, Adam (lr 0.001), 30 epochs of batches of 32.")
    train.add_argument("--data", metavar="FILE",
                       help=".npz (arrays X and y) or .csv (features, then a label "
                            "column) to train on; default: the built-in digits")
    train.add_argument("--label-column", default="-1", metavar="COL",
                       help="CSV label column: index (negative from the end) or header "
                            "name (default: the last column)")
    train.add_argument("--hidden", type=_parse_hidden, default=d["hidden"],
                       metavar="W1,W2,...", help="hidden layer widths (default 256)")
    train.add_argument("--activation", default=d["activation"], choices=codes.ACTIVATIONS,
                       metavar="NAME", help="hidden activation: "
                       + ", ".join(codes.ACTIVATIONS) + f" (default {d['activation']})")
    train.add_argument("--optimizer", default=d["optimizer"], choices=codes.OPTIMIZERS,
                       help=f"(default {d['optimizer']})")
    train.add_argument("--lr", type=_positive(float), default=d["lr"],
                       help="learning rate (default: 0.001 for adam, adamw, rmsprop; "
                            "0.1 for sgd)")
    train.add_argument("--epochs", type=_positive(int), default=d["epochs"],
                       help=f"(default {d['epochs']})")
    train.add_argument("--batch-size", type=_positive(int), default=d["batch_size"],
                       help=f"minibatch size (default {d['batch_size']})")
    train.add_argument("--dtype", default=d["dtype"], choices=("float32", "float64"),
                       help=f"(default {d['dtype']})")
    train.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                       help="cpu (default) or cuda")
    train.add_argument("--seed", type=int, default=d["seed"],
                       help="seeds the split, the weights and the shuffling (default 0)")
    train.add_argument("--test-fraction", type=_fraction, default=d["test_fraction"],
                       help="share of the data held out for testing (default 0.25)")
    train.add_argument("--save", metavar="MODEL.npz", help="save the trained model here")
    train.add_argument("--plot", metavar="FILE.png",
                       help="plot the learning curves (needs matplotlib: "
                            "pip install 'fastbp[plot]')")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over MPI: run as `mpiexec -n N python -m fastbp "
                            "train --distributed ...`; each rank trains on its shard, "
                            "--batch-size is the global batch, rank 0 reports and saves "
                            "(needs mpi4py: pip install 'fastbp[mpi]')")

    predict = sub.add_parser(
        "predict", help="predict with a saved model",
        description="Load a model saved by 'train --save' and write one prediction per "
                    "row of DATA.")
    predict.add_argument("model", metavar="MODEL", help="a model file (.npz)")
    predict.add_argument("data", metavar="DATA",
                         help=".npz (array X) or .csv (the model's features, optionally "
                              "followed by a label column, which is then scored)")
    predict.add_argument("--label-column", default=None, metavar="COL",
                         help="CSV label column to drop and score (default: the last "
                              "column when there is one more than the model's inputs)")
    predict.add_argument("--output", "-o", metavar="FILE",
                         help="write here (.npy, or text: one line per row); default stdout")

    from .compare import build_parser as compare_parser
    compare_parser(sub.add_parser(
        "compare", help="validate and time every kernel on CPU and GPU side by side "
                        "(table + JSON)",
        description="Check every kernel (activations, fused linear forward and backward, "
                    "losses, SGD) against the float64 reference on CPU and GPU and time "
                    "them side by side; prints a table, writes JSON, and exits 1 if a "
                    "kernel fails its check."))

    warm = sub.add_parser(
        "warmup", help="compile the kernels ahead of time (else the first run does)",
        description="Compile the CPU kernels that train and predict use, for the given "
                    "dtypes and hidden activations, into numba's on-disk cache, so the "
                    "first training run starts at once. One process per dtype, so two "
                    "dtypes use two cores.")
    warm.add_argument("--dtype", type=_names(("float32", "float64")), default=["float32"],
                      metavar="D1,D2", help="float32 (default), float64 or both")
    warm.add_argument("--activations", type=_names(codes.ACTIVATIONS),
                      default=[d["activation"]], metavar="A1,A2,...",
                      help="hidden activations to compile networks for (default "
                           f"{d['activation']}; the output layer is identity)")
    return parser


# -- data files ------------------------------------------------------------------------
# Labels are class indices: whole numbers that int64, float64 and the kernels all hold
# exactly, far below where converting them could overflow.
MAX_LABEL = 2**31 - 1


def _check_labels(y, where):
    """CommandLineError for the first label that is not a whole number in
    [0, MAX_LABEL]; ``where(i)`` names the place of y[i] ("FILE: line L, column C")."""
    y = np.asarray(y)
    if y.dtype.kind not in "iuf":
        raise CommandLineError(f"{where(None)}: labels should be integers, got "
                               f"{y.dtype} values")
    ok = (y >= 0) & (y <= MAX_LABEL)
    if y.dtype.kind == "f":
        ok &= np.floor(y) == y   # False for NaN and infinity too, without warnings
    if ok.all():
        return
    i = int(np.argmin(ok))
    value = y[i]
    why = ("negative" if value < 0 else "too large" if value > MAX_LABEL
           else "non-integral")
    raise CommandLineError(f"{where(i)}: label {value:g} is {why}; labels should be "
                           f"integers >= 0 and at most {MAX_LABEL}")


def _check_destination(flag, path):
    """CommandLineError now, not after the work, when ``path`` (None: not asked for)
    cannot be written."""
    if path is None:
        return
    from .persistence import check_writable
    try:
        check_writable(path)
    except OSError as exc:
        raise CommandLineError(f"{flag} {path}: {exc.strerror}") from None


def _column_index(spec, header, n_cols, path):
    if header is not None and spec in header:
        return header.index(spec)
    try:
        index = int(spec)
    except ValueError:
        raise CommandLineError(f"--label-column: {spec!r} is neither a column index nor a "
                               f"header name of {path}") from None
    if not -n_cols <= index < n_cols:
        raise CommandLineError(f"--label-column: index {index} is outside the "
                               f"{n_cols} columns of {path}")
    return index % n_cols


def _read_npz(path, need_y):
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise CommandLineError(f"{path}: a .npy file; expected a .npz archive "
                                       "with arrays X and y")
            files = archive.files
            if "X" not in files:
                raise CommandLineError(f"{path}: no array named 'X' (found: "
                                       f"{', '.join(files) or 'none'})")
            if need_y and "y" not in files:
                raise CommandLineError(f"{path}: no array named 'y' (found: "
                                       f"{', '.join(files)})")
            X = archive["X"]
            y = archive["y"] if "y" in files else None
    except CommandLineError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        from .persistence import unreadable_reason
        raise CommandLineError(f"{path}: not a readable .npz file "
                               f"({unreadable_reason(path, exc)})") from None
    if X.ndim != 2:
        raise CommandLineError(f"{path}: X should be 2-D (samples, features), got shape "
                               f"{X.shape}")
    if X.dtype.kind not in "iuf":
        raise CommandLineError(f"{path}: X should hold numbers, got {X.dtype}")
    return X.astype(np.float64), y


def _check_file(path):
    if not os.path.exists(path):
        raise CommandLineError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CommandLineError(f"{path}: is a directory, expected a file")


def load_training_data(path, label_column="-1"):
    """(X (n, d) float64, y (n,) int64) from a .npz or .csv file."""
    _check_file(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        X, y = _read_npz(path, need_y=True)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(X):
            raise CommandLineError(f"{path}: y should be ({len(X)},) labels, one per row of "
                                   f"X, got shape {y.shape}")
        _check_labels(y, lambda i: path if i is None else f"{path}: y[{i}]")
    elif ext == ".csv":
        data = read_csv(path)
        table, header = data.values, data.header
        if table.shape[1] < 2:
            raise CommandLineError(f"{path}: expected feature columns and a label column, "
                                   f"got {table.shape[1]} column")
        col = _column_index(label_column, header, table.shape[1], path)
        y = table[:, col]
        X = np.delete(table, col, axis=1)
        _check_labels(y, lambda i: data.where(i, col))
    else:
        raise CommandLineError(f"{path}: unknown file type {ext or '(none)'!r}; expected "
                               ".npz or .csv")
    if not np.isfinite(X).all():
        raise CommandLineError(f"{path}: the features hold NaN or infinity")
    y = y.astype(np.int64)
    if len(np.unique(y)) < 2:
        raise CommandLineError(f"{path}: needs at least 2 classes, got only label {y[0]}")
    return X, y


# -- train -----------------------------------------------------------------------------
def _standardizer(X, dtype):
    """(mean, inv_scale) of the training features X (n, d), float64: x is standardised
    as (x - mean) * inv_scale, and the scaling is later folded into the first layer's
    weights of ``dtype``.

    A column counts as constant when its variance is negligible against its magnitude:
    var <= n eps var + (n |mean| eps)^2 with eps the float64 machine epsilon, the rule
    of scikit-learn's StandardScaler (sklearn.preprocessing._data._is_constant_feature).
    The variance of a constant column of 14.62 rounds to about 1e-27, not 0, and
    dividing by its root gave first-layer weights near 1e13 that float32 rounding
    ruined. A constant column carries no information in the training data, so it is
    standardised to 0 (inv_scale 0): the network ignores it, and folding adds nothing
    that could cancel. A column whose spread is real but so small that 1 / spread
    cannot be held in ``dtype`` (features near 1e-40 in float32) is refused, naming it,
    instead of folding to infinity.
    """
    n = X.shape[0]
    mean = X.mean(axis=0)
    var = X.var(axis=0)
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * np.abs(mean) * eps) ** 2
    with np.errstate(divide="ignore"):
        inv_scale = np.where(constant, 0.0, 1.0 / np.sqrt(var))
    too_small = inv_scale > np.finfo(dtype).max
    if too_small.any():
        j = int(np.flatnonzero(too_small)[0])
        raise CommandLineError(
            f"feature column {j + 1} (1-based, label column not counted): its spread "
            f"({np.sqrt(var[j]):.3g}) is too small to fold the standardisation into "
            f"{np.dtype(dtype).name} weights; rescale that column or use --dtype float64")
    return mean, inv_scale


# How far the folded network's outputs may stray from the trained network's on
# standardised inputs, relative to the outputs' magnitude. Rounding W * inv_scale and
# b - W @ mean costs about eps * |mean| * inv_scale (eps 6e-8 in float32, 1e-16 in
# float64): these bounds admit columns whose mean is up to ~1e4 (float32) or ~1e10
# (float64) times their spread, where the outputs change far below any decision.
_FOLD_RTOL = {"float32": 1e-3, "float64": 1e-6}


def _fold_into_first_layer(net, mean, inv_scale, X):
    """Make ``net`` take raw features x where it was trained on (x - mean) * inv_scale:
    W' = W * inv_scale (per input column), b' = b - W' @ mean, computed in float64.

    Checked on the rows X (raw features): the folded network's outputs must equal the
    trained network's outputs on the standardised rows to _FOLD_RTOL, or
    CommandLineError says why (weights beyond the dtype's range, or a column whose
    mean is so large against its spread that b' = b - W' @ mean cancels in the dtype);
    the network is left unfolded then.
    """
    layer = net.layers[0]
    W = np.asarray(layer.W, dtype=np.float64) * inv_scale
    b = np.asarray(layer.b, dtype=np.float64) - W @ mean
    limit = np.finfo(net.dtype).max
    if not (np.all(np.abs(W) <= limit) and np.all(np.abs(b) <= limit)):
        raise CommandLineError(
            f"the trained first layer cannot take raw features in {net.dtype.name}: "
            f"folding the standardisation into it gives weights beyond {limit:.3g}; "
            f"rescale the features or use --dtype float64")
    trained = net.forward((X - mean) * inv_scale).astype(np.float64)
    W_old, b_old = layer.W.copy(), layer.b.copy()
    layer.W = W.astype(net.dtype)
    layer.b = b.astype(net.dtype)
    folded = net.forward(X).astype(np.float64)
    error = np.abs(folded - trained).max() / (1.0 + np.abs(trained).max())
    if not error <= _FOLD_RTOL[net.dtype.name]:
        layer.W, layer.b = W_old, b_old
        ratio = np.abs(mean) * inv_scale
        j = int(np.argmax(ratio))
        raise CommandLineError(
            f"folding the standardisation into {net.dtype.name} weights would change the "
            f"network's outputs (relative error {error:.2g}): feature column {j + 1} has "
            f"a mean {ratio[j]:.3g} times its spread, which cancels in b - W @ mean; "
            f"center that column or use --dtype float64")


def _import_pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CommandLineError("--plot needs matplotlib, which is not installed: "
                               "pip install 'fastbp[plot]'") from None
    return plt


def _plot(plt, history, path, title):
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history["loss"], label="training loss")
    if "val_loss" in history:
        ax_loss.plot(epochs, history["val_loss"], label="held-out loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    if "val_accuracy" in history:
        ax_acc.plot(epochs, history["val_accuracy"], color="C1", label="held-out accuracy")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train(args):
    from .network import MLP
    from .optim import make_optimizer
    from .training import accuracy, fit, minibatch_sizes, prepare

    for flag, path in (("--save", args.save), ("--plot", args.plot)):
        _check_destination(flag, path)   # fail before training, not after
    plt = _import_pyplot() if args.plot else None
    if args.data is None:
        X, y = load_digits()
        name = "digits"
    else:
        X, y = load_training_data(args.data, args.label_column)
        name = os.path.basename(args.data)
    n_classes = int(y.max()) + 1
    X_train, X_test, y_train, y_test = train_test_split(X, y, args.test_fraction, args.seed)
    if len(X_train) == 0 or len(X_test) == 0:
        raise CommandLineError(f"--test-fraction {args.test_fraction} leaves an empty "
                               f"split of {len(X)} samples")
    mean, inv_scale = _standardizer(X_train, args.dtype)
    net = MLP([X.shape[1], *args.hidden, n_classes], activation=args.activation,
              dtype=args.dtype, seed=args.seed, device=args.device)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    optimizer = make_optimizer(args.optimizer, net, lr=lr)
    X_fit, y_fit, batch_size = (X_train - mean) * inv_scale, y_train, args.batch_size
    if args.distributed:   # this rank's shard; --batch-size is the global batch
        from . import distributed
        optimizer, X_fit, y_fit, batch_size = distributed.command_line_setup(
            net, optimizer, X_fit, y_fit, batch_size)
    print(f"{name}: {len(X_train)} training and {len(X_test)} held-out samples, "
          f"{X.shape[1]} features, {n_classes} classes; {net}; {optimizer}", flush=True)
    if net.device == "cpu":
        from .kernels.cpu import blas
        print(f"matrix products: {blas.describe()}", flush=True)
    # compilation, if any, is not training time (on "cuda" the products' geometry
    # depends on the minibatch: fit's full and last ones)
    prepare(net, optimizer, batch_sizes=minibatch_sizes(len(X_fit), batch_size))
    start = time.perf_counter()
    history = fit(net, X_fit, y_fit, epochs=args.epochs,
                  batch_size=batch_size, optimizer=optimizer, seed=args.seed,
                  validation_data=((X_test - mean) * inv_scale, y_test),
                  verbose=False if args.quiet else True)
    seconds = time.perf_counter() - start
    if net.device != "cpu":
        net.to("cpu")
    _fold_into_first_layer(net, mean, inv_scale, X)
    acc = accuracy(net, X_test, y_test)
    print(f"test accuracy {acc:.4f} ({seconds:.1f} s training)")
    if args.save:
        net.save(args.save)
        print(f"model saved to {args.save}")
    if plt is not None:
        _plot(plt, history, args.plot, f"{name}: held-out accuracy {acc:.4f}")
        print(f"learning curves plotted to {args.plot}")
    return 0


# -- predict ---------------------------------------------------------------------------
def _read_predict_data(path, n_features, label_column):
    """(X (n, n_features), y or None)."""
    _check_file(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        X, y = _read_npz(path, need_y=False)
    elif ext == ".csv":
        data = read_csv(path)
        table, header = data.values, data.header
        y = None
        if label_column is not None:
            col = _column_index(label_column, header, table.shape[1], path)
            y, X = table[:, col], np.delete(table, col, axis=1)
        elif table.shape[1] == n_features + 1:
            y, X = table[:, -1], table[:, :-1]
        else:
            X = table
    else:
        raise CommandLineError(f"{path}: unknown file type {ext or '(none)'!r}; expected "
                               ".npz or .csv")
    if X.shape[1] != n_features:
        raise CommandLineError(f"{path}: the model takes {n_features} features per row, "
                               f"the data has {X.shape[1]}")
    return X, y


def predict(args):
    from .persistence import load

    _check_file(args.model)
    if os.path.splitext(args.model)[1].lower() == ".csv":
        raise CommandLineError(f"{args.model}: a .csv file where the model is expected; "
                               "the order is: predict MODEL DATA, MODEL a fastbp model "
                               "written by `fastbp train --save` or `MLP.save`")
    _check_destination("--output", args.output)
    net = load(args.model)
    X, y = _read_predict_data(args.data, net.sizes[0], args.label_column)
    pred = net.predict(X)
    if args.output and args.output.lower().endswith(".npy"):
        np.save(args.output, pred)
    else:
        if pred.ndim == 1:
            lines = [str(v) for v in pred.tolist()]
        else:
            lines = [",".join(repr(float(v)) if net.loss == "mse" else str(v) for v in row)
                     for row in pred.tolist()]
        text = "\n".join(lines) + "\n"
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
    if y is not None and net.is_classifier:
        print(f"accuracy {np.mean(pred == y):.4f} on {len(y)} labelled rows",
              file=sys.stderr)
    if args.output:
        print(f"{len(pred)} predictions written to {args.output}", file=sys.stderr)
    return 0


# -- warmup ----------------------------------------------------------------------------
def warm_networks(dtype, activations):
    """Compile (or load) the kernels ``train`` and ``predict`` use with their default
    network on the digits, for one dtype and each hidden activation; returns seconds."""
    from .network import MLP
    from .optim import make_optimizer

    seconds = 0.0
    for activation in activations:
        net = MLP([64, *DEFAULTS["hidden"], 10], activation=activation, dtype=dtype)
        seconds += warmup(net, make_optimizer(DEFAULTS["optimizer"], net))
    return seconds


def warmup_command(args):
    start = time.perf_counter()
    # one network after the other: each cold one uses a second process of its own
    # (fastbp.warmup.split_backward), so both cores are busy already
    for dtype in args.dtype:
        warm_networks(dtype, args.activations)
    print(f"fastbp's kernels are compiled for {', '.join(args.dtype)} and "
          f"{', '.join(args.activations)} ({time.perf_counter() - start:.1f} s)")
    return 0


def main(argv=None, prog="fastbp"):
    """Entry point of the ``fastbp`` script (and of ``python -m fastbp``, which passes
    its own ``prog`` for the usage lines); returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    try:
        if args.command == "train":
            if args.distributed:   # rank 0 alone prints and writes files
                from .distributed import rank0_reports
                with rank0_reports(args):
                    return train(args)
            return train(args)
        if args.command == "predict":
            return predict(args)
        if args.command == "compare":
            from .compare import run as compare
            return compare(args)
        if args.command == "warmup":
            return warmup_command(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:   # one line, never a traceback (FASTBP_DEBUG=1 shows it)
        if os.environ.get("FASTBP_DEBUG"):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        if getattr(args, "distributed", False):   # a rank alone in error stops them all
            from .distributed import abort_unless_agreed
            abort_unless_agreed(exc)
        return 1
    return 1


def _one_line(exc):
    if isinstance(exc, CommandLineError):
        text = str(exc)
    elif isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"{exc.filename}: no such file"
    elif isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or exc}"
    elif isinstance(exc, (ValueError, TypeError, ImportError, RuntimeError)):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())
