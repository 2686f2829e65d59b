"""net.train_epoch: a whole pass of minibatch steps in one compiled call equals the
same steps taken one train_step at a time, and stops where training diverges."""
import numpy as np
import pytest

import fastbp


def _data(rng, n=70, n_in=6, n_out=4):
    return rng.standard_normal((n, n_in)), rng.integers(0, n_out, n)


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("batch_size", [1, 16, 70, 100])
def test_epoch_equals_steps(opt_name, batch_size):
    rng = np.random.default_rng(batch_size)
    X, y = _data(rng)
    nets = [fastbp.MLP([6, 9, 4], activation="gelu", dtype="float64", seed=2)
            for _ in range(2)]
    opts = [fastbp.optim.make_optimizer(opt_name, net, lr=0.05) for net in nets]
    losses = nets[0].train_epoch(X, y, opts[0], batch_size=batch_size)
    stepped = [nets[1].train_step(X[a:a + batch_size], y[a:a + batch_size], opts[1])
               for a in range(0, len(X), batch_size)]
    np.testing.assert_array_equal(losses, stepped)
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    assert opts[0].steps == opts[1].steps == len(stepped)


def test_epoch_regression_targets():
    rng = np.random.default_rng(0)
    X, T = rng.standard_normal((33, 5)), rng.random((33, 2))
    a, b = (fastbp.MLP([5, 7, 2], loss="mse", seed=1) for _ in range(2))
    oa, ob = fastbp.SGD(a, lr=0.1), fastbp.SGD(b, lr=0.1)
    losses = a.train_epoch(X, T, oa, batch_size=8)
    assert list(losses) == [b.train_step(X[i:i + 8], T[i:i + 8], ob) for i in range(0, 33, 8)]


def test_epoch_raises_at_first_divergent_step_and_restores_its_start():
    rng = np.random.default_rng(1)
    X, y = _data(rng, n=64)
    net = fastbp.MLP([6, 9, 4], activation="relu", dtype="float64", seed=0)
    opt = fastbp.SGD(net, lr=1e300)   # the first updates blow the weights up
    before = net.params.copy()
    with pytest.raises(fastbp.TrainingDiverged, match=r"step [12] of 8") as err:
        net.train_epoch(X, y, opt, batch_size=8)
    assert err.value.batch in (1, 2) and err.value.nonfinite > 0
    np.testing.assert_array_equal(net.params, before)
    assert opt.steps == 0


def test_epoch_checks_its_arguments():
    net = fastbp.MLP([6, 9, 4], seed=0)
    opt = fastbp.SGD(net)
    X, y = _data(np.random.default_rng(2))
    with pytest.raises(ValueError, match="batch_size"):
        net.train_epoch(X, y, opt, batch_size=0)
    with pytest.raises(ValueError, match="y"):
        net.train_epoch(X, y[:-1], opt)
