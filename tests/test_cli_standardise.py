"""The command line's standardisation, folded into the saved model's first layer.

Reported: a 600-row CSV with one column holding 14.62 in every row trained to a
validation accuracy of 0.93 but tested at 0.31 (and `predict` agreed with the 0.31):
the column's standard deviation rounded to 9e-14 instead of 0, dividing by it made
first-layer weights near 1e13, and float32 ruined every prediction. Features near 1e-40
folded to an infinite first layer that `load` then refused.

Here: constant columns of several magnitudes (and one constant in the training split
only) give the same accuracy during training (the last epoch's val_accuracy, on the
held-out rows), at the end (the folded model on raw rows) and from `predict` with the
saved file, in float32 and float64; unfoldable scales are refused naming the column.
"""
import numpy as np
import pytest

import fastbp
from fastbp.cli import main


def _write_csv(path, X, y):
    np.savetxt(path, np.c_[X, y], delimiter=",", fmt="%.17g")


def _informative(n=600, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, 4)) * 4.0
    y = rng.integers(0, 3, n)
    X = centers[y] + rng.standard_normal((n, 4))
    return X, y


def _accuracies(capsys, tmp_path, csv, dtype, epochs=10):
    model = tmp_path / f"model_{dtype}.npz"
    assert main(["train", "--data", str(csv), "--epochs", str(epochs), "--hidden", "16",
                 "--dtype", dtype, "--save", str(model), "--seed", "0"]) == 0
    out = capsys.readouterr().out
    last_val = float(out.split("val_accuracy ")[-1].split()[0])
    final = float(out.split("test accuracy ")[1].split()[0])
    assert main(["predict", str(model), str(csv), "-o", str(tmp_path / "p.txt")]) == 0
    err = capsys.readouterr().err
    pred = np.loadtxt(tmp_path / "p.txt", dtype=np.int64)
    y = np.loadtxt(csv, delimiter=",")[:, -1].astype(np.int64)
    assert f"accuracy {np.mean(pred == y):.4f}" in err
    return last_val, final, np.mean(pred == y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("constant", [14.62, 1e6, -3e-5])
def test_constant_column_keeps_the_trained_accuracy(tmp_path, capsys, dtype, constant):
    X, y = _informative()
    X = np.c_[X[:, :2], np.full(len(X), constant), X[:, 2:]]
    csv = tmp_path / "const.csv"
    _write_csv(csv, X, y)
    last_val, final, _ = _accuracies(capsys, tmp_path, csv, dtype)
    assert last_val > 0.8
    assert final == pytest.approx(last_val, abs=1.5 / 150)   # at most one held-out row


def test_column_constant_in_the_training_split_only(tmp_path, capsys):
    X, y = _informative(seed=1)
    # 14.62 everywhere except a few rows of the held-out split (--seed 0, 0.25)
    _, held_out, _, _ = fastbp.train_test_split(np.arange(len(X))[:, None], y, 0.25, 0)
    col = np.full(len(X), 14.62)
    col[held_out[:5, 0]] = 14.621
    X = np.c_[X, col]
    csv = tmp_path / "almost.csv"
    _write_csv(csv, X, y)
    last_val, final, predicted = _accuracies(capsys, tmp_path, csv, "float32")
    assert final == pytest.approx(last_val, abs=1.5 / 150)
    assert predicted > 0.8


def test_tiny_features_are_refused_naming_the_column(tmp_path, capsys):
    X, y = _informative(n=200, seed=2)
    X[:, 2] *= 1e-40
    csv = tmp_path / "tiny.csv"
    _write_csv(csv, X, y)
    assert main(["train", "--data", str(csv), "--epochs", "1", "--dtype", "float32",
                 "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and "feature column 3" in err and "float64" in err
    # float64 holds the scale: it trains, and the saved model loads
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(csv), "--epochs", "2", "--dtype", "float64",
                 "--quiet", "--save", str(model)]) == 0
    assert np.isfinite(fastbp.load(model).params).all()


def test_a_mean_far_beyond_the_spread_is_refused_in_float32(tmp_path, capsys):
    """b' = b - W' @ mean cancels in float32 when a column's mean is ~1e9 times its
    spread: the fold is checked against the trained outputs and refused."""
    X, y = _informative(n=300, seed=3)
    X[:, 1] = 1e6 + 1e-3 * X[:, 1]
    csv = tmp_path / "offset.csv"
    _write_csv(csv, X, y)
    assert main(["train", "--data", str(csv), "--epochs", "2", "--dtype", "float32",
                 "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "feature column 2" in err and "float64" in err
    last_val, final, predicted = _accuracies(capsys, tmp_path, csv, "float64", epochs=3)
    assert final == pytest.approx(last_val, abs=1.5 / 75) and predicted > 0.5
