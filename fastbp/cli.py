"""The command line: ``python -m fastbp train`` trains on the built-in digits."""
import argparse
import sys
import time

import numpy as np

from .datasets import load_digits, train_test_split
from .network import MLP
from .optim import SGD
from .training import accuracy, fit


def _parse_hidden(text):
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 64,32, "
                                         f"got {text!r}") from None
    return sizes


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m fastbp",
                                     description="Train MLPs by backpropagation.")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an MLP on the built-in 8x8 digits and "
                                         "report held-out accuracy")
    train.add_argument("--hidden", type=_parse_hidden, default=[64],
                       help="hidden layer widths, comma-separated (default 64)")
    train.add_argument("--activation", default="tanh", help="hidden activation (tanh)")
    train.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (0.1)")
    train.add_argument("--epochs", type=int, default=30, help="epochs (30)")
    train.add_argument("--batch-size", type=int, default=32, help="minibatch size (32)")
    train.add_argument("--dtype", default="float32", help="float32 or float64")
    train.add_argument("--seed", type=int, default=0, help="random seed (0)")
    train.add_argument("--test-fraction", type=float, default=0.25,
                       help="share of the data held out for testing (0.25)")
    from .compare import build_parser as compare_parser
    compare_parser(sub.add_parser("compare", help="validate and time every kernel on CPU "
                                                  "and GPU side by side (table + JSON)"))
    return parser


def train(args):
    X, y = load_digits()
    X = X / 16.0   # pixel counts 0..16 -> [0, 1]
    X_train, X_test, y_train, y_test = train_test_split(X, y, args.test_fraction, args.seed)
    net = MLP([X.shape[1], *args.hidden, 10], activation=args.activation,
              dtype=args.dtype, seed=args.seed)
    print(f"digits: {len(X_train)} training and {len(X_test)} test samples; {net}")
    start = time.perf_counter()
    fit(net, X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=SGD(net, lr=args.lr), seed=args.seed, validation_data=(X_test, y_test),
        verbose=True)
    print(f"test accuracy {accuracy(net, X_test, y_test):.4f} "
          f"({time.perf_counter() - start:.1f} s training)")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return train(args)
        if args.command == "compare":
            from .compare import run as compare
            return compare(args)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1
