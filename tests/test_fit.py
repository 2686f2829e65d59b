"""fit: history, validation, early stopping, determinism, divergence, callbacks, output."""
import numpy as np
import pytest

import fastbp
from fastbp import training


@pytest.fixture(scope="module")
def digits():
    X, y = fastbp.load_digits()
    return (X[:400] / 16.0), y[:400]


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 5))
    y = X @ rng.standard_normal((5, 2)) + 0.1 * rng.standard_normal((120, 2))
    return X, y


def _net(seed=0, **kw):
    kw.setdefault("activation", "tanh")
    return fastbp.MLP([64, 16, 10], seed=seed, **kw)


def test_history_keys_and_learning(digits):
    X, y = digits
    net = _net()
    h = net.fit(X, y, epochs=4, optimizer=fastbp.Adam(net, lr=0.01), seed=0,
                validation_data=(X[:100], y[:100]), verbose=False)
    assert isinstance(h, dict) and isinstance(h, fastbp.History)
    assert set(h) == {"loss", "lr", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in h.values())
    assert all(type(v) is float for vs in h.values() for v in vs)
    assert h["loss"][-1] < h["loss"][0] and h["val_loss"][-1] < h["val_loss"][0]
    assert h["val_accuracy"][-1] == pytest.approx(fastbp.accuracy(net, X[:100], y[:100]))
    assert h.epochs_run == 4 and h.stop_reason is None and h.best_epoch is None


def test_regression_history_has_r2(regression):
    X, y = regression
    net = fastbp.MLP([5, 8, 2], activation="tanh", loss="mse", dtype="float64", seed=0)
    h = net.fit(X, y, epochs=3, optimizer="adam", seed=0, validation_data=(X, y),
                verbose=False)
    assert set(h) == {"loss", "lr", "val_loss", "val_r2"}
    pred = net.predict(X)
    r2 = np.mean(1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0))
    assert h["val_r2"][-1] == pytest.approx(r2, rel=1e-9)
    assert h["val_loss"][-1] == pytest.approx(np.mean((y - pred) ** 2), rel=1e-9)


def test_same_seed_same_result(digits):
    X, y = digits

    def run(seed):
        net = _net()
        opt = fastbp.SGD(net, lr=0.05, momentum=0.9)
        h = net.fit(X, y, epochs=3, batch_size=25, optimizer=opt, seed=seed,
                    validation_split=0.2, schedule=fastbp.StepLR(opt, 2), verbose=False)
        return dict(h), net.params.copy(), opt.state.copy()

    h1, p1, s1 = run(7)
    h2, p2, s2 = run(7)
    assert h1 == h2
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(s1, s2)
    h3, p3, _ = run(8)
    assert h3 != h1 and not np.array_equal(p3, p1)


def test_validation_split_holds_out_the_last_rows_of_a_seeded_shuffle(digits):
    X, y = digits
    net = _net()
    seen = []
    h = net.fit(X, y, epochs=1, batch_size=400, validation_split=0.25, seed=3,
                shuffle=False, verbose=False,
                callbacks=[lambda e, logs: seen.append(logs)])
    order = np.random.default_rng(3).permutation(len(X))
    val_rows = np.sort(order[-100:])
    assert h["val_loss"][0] == pytest.approx(net.compute_loss(X[val_rows], y[val_rows]),
                                             rel=1e-6)
    assert seen[0]["val_loss"] == h["val_loss"][0]
    # One full-batch step on the 300 training rows: the loss it reports is theirs.
    train_rows = np.sort(order[:-100])
    twin = _net()
    assert h["loss"][0] == pytest.approx(twin.compute_loss(X[train_rows], y[train_rows]),
                                         rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(validation_split=0.2, validation_data=([[0.0] * 64], [0])), "not both"),
    (dict(validation_split=1.0), "validation_split"),
    (dict(validation_split=0.999999), "no rows"),
    (dict(early_stopping=3), "early_stopping"),
    (dict(verbose="loud"), "verbose"),
    (dict(on_nonfinite="ignore"), "on_nonfinite"),
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(callbacks=[1]), "callbacks"),
    (dict(epochs=0), "epochs"),
])
def test_bad_arguments_name_themselves(digits, kwargs, match):
    X, y = digits
    with pytest.raises((ValueError, TypeError), match=match):
        _net().fit(X, y, **kwargs)


def test_schedule_must_belong_to_the_optimizer(digits):
    X, y = digits
    net = _net()
    other = fastbp.SGD(net, lr=0.1)
    with pytest.raises(ValueError, match="schedule"):
        net.fit(X, y, optimizer=fastbp.SGD(net), schedule=fastbp.StepLR(other, 1))


def test_schedule_is_stepped_per_epoch(digits):
    X, y = digits
    net = _net()
    opt = fastbp.SGD(net, lr=0.1)
    h = net.fit(X, y, epochs=5, schedule=fastbp.StepLR(opt, step_size=2, gamma=0.5),
                verbose=False)   # the optimizer comes from the schedule
    np.testing.assert_allclose(h["lr"], [0.1, 0.1, 0.05, 0.05, 0.025])
    assert opt.lr == pytest.approx(0.025)   # epoch 6 would use 0.1 * 0.5 ** (5 // 2)


def test_early_stopping_restores_the_best_epoch(digits):
    """Validation labels shifted by one: the better the network learns the training
    labels, the worse the validation loss gets, so it stops after `patience` epochs."""
    X, y = digits
    net = _net()
    snapshots = {}
    h = net.fit(X, y, epochs=30, optimizer=fastbp.Adam(net, lr=0.01), seed=0,
                validation_data=(X, (y + 1) % 10), early_stopping=3, verbose=False,
                callbacks=[lambda e, logs: snapshots.__setitem__(e, net.params.copy())])
    best = int(np.argmin(h["val_loss"])) + 1
    assert h.stop_reason == "early_stopping" and h.best_epoch == best
    assert len(h["loss"]) == h.epochs_run == best + 3 < 30
    np.testing.assert_array_equal(net.params, snapshots[best])
    assert not np.array_equal(net.params, snapshots[h.epochs_run])


def test_callbacks_stop_training(digits):
    X, y = digits
    calls = []

    def stop_at_two(epoch, logs):
        calls.append((epoch, sorted(logs)))
        return epoch == 2

    h = _net().fit(X, y, epochs=5, callbacks=[stop_at_two], verbose=False)
    assert calls == [(1, ["loss", "lr"]), (2, ["loss", "lr"])]
    assert len(h["loss"]) == 2 and h.stop_reason == "callback"

    def raise_stop(epoch, logs):
        if epoch == 3:
            raise fastbp.StopTraining

    h = _net().fit(X, y, epochs=5, callbacks=raise_stop, verbose=False)
    assert len(h["loss"]) == 3 and h.stop_reason == "callback"


def _diverging_fit(regression, **kwargs):
    """Linear regression whose learning rate a callback raises to 1e3 after epoch 1,
    so the loss overflows during epoch 2. Returns (net, opt, end-of-epoch snapshots)."""
    X, y = regression
    net = fastbp.MLP([5, 8, 2], activation="identity", loss="mse", dtype="float64",
                     seed=0)
    opt = fastbp.SGD(net, lr=0.01, momentum=0.9)
    snaps = {}

    def callback(epoch, logs):
        snaps[epoch] = (net.params.copy(), opt.state.copy(), opt.steps)
        opt.lr = 1e3

    return net, opt, snaps, dict(optimizer=opt, epochs=5, batch_size=10, seed=0,
                                 callbacks=[callback], verbose=False, **kwargs)


def test_nonfinite_loss_raises_naming_epoch_and_batch(regression):
    X, y = regression
    net, opt, snaps, kwargs = _diverging_fit(regression)
    with pytest.raises(fastbp.TrainingDiverged, match=r"epoch 2, batch \d+ of 12") as err:
        net.fit(X, y, **kwargs)
    e = err.value
    assert isinstance(e, FloatingPointError)
    assert e.epoch == 2 and 1 <= e.batch <= 12
    assert e.nonfinite > 0 or not np.isfinite(e.loss)
    assert len(e.history["loss"]) == 1
    # The last good weights: the end of epoch 1, with the optimizer's state and steps.
    params, state, steps = snaps[1]
    np.testing.assert_array_equal(net.params, params)
    np.testing.assert_array_equal(opt.state, state)
    assert opt.steps == steps == 12


def test_nonfinite_loss_stop_option_returns_history(regression):
    X, y = regression
    net, opt, snaps, kwargs = _diverging_fit(regression, on_nonfinite="stop")
    with pytest.warns(RuntimeWarning, match=r"epoch 2, batch"):
        h = net.fit(X, y, **kwargs)
    assert h.stop_reason == "nonfinite" and h.diverged_at[0] == 2
    assert len(h["loss"]) == 1
    np.testing.assert_array_equal(net.params, snaps[1][0])
    assert np.isfinite(net.params).all()


def test_verbose_false_prints_nothing(digits, capsys):
    X, y = digits
    _net().fit(X, y, epochs=2, validation_split=0.1, verbose=False)
    _net().fit(X, y, epochs=1, verbose="auto")   # pytest's stderr is not a terminal
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_verbose_true_prints_one_line_per_epoch(digits):
    X, y = digits
    lines = []
    _net().fit(X, y, epochs=3, validation_split=0.1, verbose=True, print_fn=lines.append)
    assert len(lines) == 3
    assert lines[0].startswith("epoch   1/3") and "val_accuracy" in lines[0]


def test_progress_bar_on_a_terminal(digits, capsys, monkeypatch):
    pytest.importorskip("tqdm", reason="tqdm draws the progress bar")
    monkeypatch.setattr(training, "_stderr_is_terminal", lambda: True)
    X, y = digits
    _net().fit(X, y, epochs=2, batch_size=50, verbose="auto")
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 2/2" in err and "16/16" in err
