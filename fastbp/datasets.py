"""Data sets that ship inside the package (no network access at run time)."""
import gzip
from importlib import resources

import numpy as np


def load_digits():
    """The 8x8 handwritten digits (UCI; licence and source in fastbp/data/README.md).

    Returns (X, y): X (1797, 64) float64 pixel intensities in 0..16, y (1797,) int64
    class labels 0..9.
    """
    ref = resources.files("fastbp") / "data" / "digits.csv.gz"
    with ref.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(np.int64)


def train_test_split(X, y, test_fraction=0.25, seed=0):
    """Shuffle with ``seed`` and split into (X_train, X_test, y_train, y_test), keeping
    each class's share equal in both parts (stratified by label)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    test_idx = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        test_idx.append(idx[:int(round(test_fraction * idx.size))])
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[np.concatenate(test_idx)] = True
    train = rng.permutation(np.flatnonzero(~test_mask))
    test = rng.permutation(np.flatnonzero(test_mask))
    return X[train], X[test], y[train], y[test]
