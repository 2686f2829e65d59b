"""A step whose update makes the parameters non-finite is noticed at that step.

The report's case: float32 MLP([1, 1], loss="mse") with W = [[1e-38]], b = [0],
X = [[3e38]], y = [0]. The loss before the update is a finite 9.0, but dW = 2 * 3 * 3e38
overflows to inf, so the update writes -inf (NaN with clipping). Only the loss was
checked, so fit returned normally with W = -inf, and with more epochs "restored" a
snapshot that already held -inf. Now the update counts the non-finite values it writes
(kernels/cpu/optim.py) and every entry point acts on it (fastbp/divergence.py).
"""
import math

import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice
from fastbp.kernels import codes, cpu

W0 = 1e-38


def _overflowing(device="cpu"):
    net = fastbp.MLP([1, 1], loss="mse", dtype="float32", device=device)
    net.layers[0].W = np.array([[W0]])
    net.layers[0].b = np.array([0.0])
    return net, np.array([[3e38]]), np.array([0.0])


OPTIMIZERS = {
    "sgd": lambda net, clip: fastbp.SGD(net, lr=0.1, max_grad_norm=clip),
    "sgd_momentum": lambda net, clip: fastbp.SGD(net, lr=0.1, momentum=0.9, nesterov=True,
                                                 max_grad_norm=clip),
    "sgd_weight_decay": lambda net, clip: fastbp.SGD(net, lr=0.1, weight_decay=0.1,
                                                     max_grad_norm=clip),
    "adam": lambda net, clip: fastbp.Adam(net, lr=0.1, max_grad_norm=clip),
    "adamw_amsgrad": lambda net, clip: fastbp.AdamW(net, lr=0.1, amsgrad=True,
                                                    max_grad_norm=clip),
    "rmsprop": lambda net, clip: fastbp.RMSprop(net, lr=0.1, centered=True, momentum=0.5,
                                                max_grad_norm=clip),
}


def _params(net):
    return fdevice.to_host(net.params).copy()


@pytest.mark.parametrize("clip", [None, 1.0], ids=["no_clip", "clip"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_train_step_raises_for_every_optimizer(name, clip):
    net, X, y = _overflowing()
    opt = OPTIMIZERS[name](net, clip)
    with pytest.raises(fastbp.TrainingDiverged, match="NaN or infinite") as err:
        net.train_step(X, y, opt)
    e = err.value
    assert e.loss == pytest.approx(9.0, rel=1e-6) and e.nonfinite >= 1
    assert e.epoch is None and e.batch is None
    # documented: train_step keeps no copy, so the parameters hold what the update wrote
    assert not np.isfinite(_params(net)).all()


@pytest.mark.parametrize("epochs", [1, 3])
@pytest.mark.parametrize("clip", [None, 1.0], ids=["no_clip", "clip"])
def test_fit_raises_at_the_step_and_restores_finite_weights(epochs, clip):
    net, X, y = _overflowing()
    before = _params(net)
    opt = fastbp.SGD(net, lr=0.1, max_grad_norm=clip)
    with pytest.raises(fastbp.TrainingDiverged, match=r"epoch 1, batch 1 of 1") as err:
        net.fit(X, y, epochs=epochs, batch_size=1, optimizer=opt, verbose=False)
    assert err.value.epoch == 1 and err.value.batch == 1
    assert err.value.loss == pytest.approx(9.0, rel=1e-6)
    np.testing.assert_array_equal(_params(net), before)
    assert opt.steps == 0


def test_fit_stop_option_returns_with_finite_weights():
    net, X, y = _overflowing()
    before = _params(net)
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        h = net.fit(X, y, epochs=3, batch_size=1, optimizer=fastbp.Adam(net, lr=0.1),
                    verbose=False, on_nonfinite="stop")
    assert h.stop_reason == "nonfinite" and h.diverged_at == (1, 1) and h.epochs_run == 0
    np.testing.assert_array_equal(_params(net), before)


def test_train_epoch_restores_its_start_and_names_the_step():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.standard_normal((4, 1)), [[3e38]], rng.standard_normal((3, 1))])
    y = np.zeros(len(X))
    net = fastbp.MLP([1, 1], loss="mse", dtype="float32", seed=0)
    net.layers[0].W = np.array([[W0]])
    opt = fastbp.Adam(net, lr=1e-3)
    before, state, steps = _params(net), opt.state.copy(), opt.steps
    with pytest.raises(fastbp.TrainingDiverged, match=r"step 5 of 8") as err:
        net.train_epoch(X, y, opt, batch_size=1)
    assert err.value.batch == 5 and err.value.nonfinite >= 1
    np.testing.assert_array_equal(_params(net), before)
    np.testing.assert_array_equal(opt.state, state)
    assert opt.steps == steps


def test_optimizer_step_raises():
    net, X, y = _overflowing()
    assert net.backward(X, y) == pytest.approx(9.0, rel=1e-6)
    opt = fastbp.SGD(net, lr=0.1)
    with pytest.raises(fastbp.TrainingDiverged, match="SGD.step"):
        opt.step()


def test_estimator_divergence_is_reported_at_the_step():
    """scikit-learn's ValueError and message, plus where; the weights are restored."""
    pytest.importorskip("sklearn")
    X = np.random.default_rng(0).standard_normal((8, 2))
    reg = fastbp.MLPRegressor(hidden_layer_sizes=(3,), max_iter=3, random_state=0,
                              solver="sgd", learning_rate_init=1e300, batch_size=2)
    with pytest.raises(ValueError, match=r"non-finite parameter weights.*iteration 1, "
                                         r"minibatch [1-4]\b"):
        reg.fit(X, 3 * X[:, 0])
    assert all(np.isfinite(W).all() for W in reg.coefs_)


def test_estimator_with_early_stopping_keeps_its_best_finite_weights():
    """scikit-learn's behaviour (no error, a NaN last validation score), stopped at the
    divergent step with a warning naming it."""
    pytest.importorskip("sklearn")
    X = np.random.default_rng(1).standard_normal((40, 2))
    reg = fastbp.MLPRegressor(hidden_layer_sizes=(3,), max_iter=5, random_state=0,
                              solver="sgd", learning_rate_init=1e300, batch_size=4,
                              early_stopping=True)
    with pytest.warns(RuntimeWarning, match=r"non-finite parameter weights at iteration"):
        reg.fit(X, 3 * X[:, 0])
    assert np.isnan(reg.validation_scores_[-1])
    assert all(np.isfinite(W).all() for W in reg.coefs_)


def _hparams(code):
    hparams = np.zeros(codes.N_HPARAMS[code])
    hparams[codes.HP_LR] = 10.0 if code == codes.SGD else 1e-3
    if code == codes.ADAM:
        hparams[codes.HP_ADAM_BETA1], hparams[codes.HP_ADAM_BETA2] = 0.9, 0.999
        hparams[codes.HP_ADAM_EPS] = 1e-8
    if code == codes.RMSPROP:
        hparams[codes.HP_RMSPROP_ALPHA], hparams[codes.HP_RMSPROP_EPS] = 0.99, 1e-8
    return hparams


UPDATES = [(codes.SGD, 0), (codes.ADAM, 2), (codes.RMSPROP, 1)]


@pytest.mark.parametrize("code,n_rows", UPDATES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_kernel_counts_exactly_the_nonfinite_parameters(code, n_rows, dtype):
    rng = np.random.default_rng(2)
    n = 50_000   # past blocks.PARALLEL_MIN_ELEMENTS, so the threaded path counts too
    params = rng.standard_normal(n).astype(dtype)
    grads = rng.standard_normal(n).astype(dtype)
    bad = [3, 777, n - 1]
    grads[bad[0]] = np.inf
    grads[bad[1]] = np.nan
    params[bad[2]] = np.finfo(dtype).max
    grads[bad[2]] = -np.finfo(dtype).max
    hparams = _hparams(code)
    state = np.zeros((n_rows, n), dtype)
    count = cpu.optimizer_update(code, params, grads, state, hparams, 1)
    assert count == np.count_nonzero(~np.isfinite(params))
    expected = 3 if code == codes.SGD else 2   # Adam/RMSprop bound the step: no overflow
    assert count == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip", [0.0, 1e30])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_every_position_of_a_short_range_is_counted(dtype, clip, momentum):
    """The update loops keep the largest exponent and count again only when it is all
    ones (kernels/cpu/optim.py): a NaN, +inf or -inf gradient at any position of
    ranges shorter and longer than a vector, with and without clipping (which makes
    the clip factor 0 or leaves it 1 here, so both of plain SGD's loops run) and
    momentum, gives exactly the count of non-finite parameters."""
    rng = np.random.default_rng(5)
    for n in (1, 3, 8, 17, 40):
        for at in range(n):
            for value in (np.nan, np.inf, -np.inf):
                params = rng.standard_normal(n).astype(dtype)
                grads = rng.standard_normal(n).astype(dtype)
                grads[at] = value
                hparams = np.zeros(codes.N_HPARAMS[codes.SGD])
                hparams[codes.HP_LR] = 0.1
                hparams[codes.HP_MAX_GRAD_NORM] = clip
                hparams[codes.HP_SGD_MOMENTUM] = momentum
                state = np.zeros((1, n), dtype)
                count = cpu.optimizer_update(codes.SGD, params, grads, state, hparams, 1)
                assert count == np.count_nonzero(~np.isfinite(params)) >= 1, (n, at)
        # finite inputs whose update overflows only when stored in the dtype
        params = np.full(n, np.finfo(dtype).max, dtype)
        grads = np.full(n, -np.finfo(dtype).max, dtype)
        hparams = np.zeros(codes.N_HPARAMS[codes.SGD])
        hparams[codes.HP_LR] = 0.5
        hparams[codes.HP_SGD_MOMENTUM] = momentum
        count = cpu.optimizer_update(codes.SGD, params, grads, np.zeros((1, n), dtype),
                                     hparams, 1)
        assert count == n == np.count_nonzero(np.isinf(params))


def test_finite_updates_count_zero():
    rng = np.random.default_rng(3)
    params, grads = rng.standard_normal(100), rng.standard_normal(100)
    assert cpu.sgd_update(params, grads, 0.1) == 0


needs_cuda = pytest.mark.skipif(not fdevice.cuda_status()[0],
                                reason=f"CUDA not usable: {fdevice.cuda_status()[1]}")


@needs_cuda
@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_cuda_train_step_and_fit(name):
    net, X, y = _overflowing("cuda")
    with pytest.raises(fastbp.TrainingDiverged) as err:
        # on "cuda" the step reports when its loss is read (fastbp.cuda_plan.StepLoss)
        float(net.train_step(X, y, OPTIMIZERS[name](net, None)))
    assert err.value.loss == pytest.approx(9.0, rel=1e-6)
    net, X, y = _overflowing("cuda")
    before = _params(net)
    with pytest.raises(fastbp.TrainingDiverged, match=r"epoch 1, batch 1"):
        net.fit(X, y, epochs=2, batch_size=1, optimizer=OPTIMIZERS[name](net, 1.0),
                verbose=False)
    np.testing.assert_array_equal(_params(net), before)
    assert math.isfinite(net.compute_loss(X, y))
    # the network's reused counter was reset after the divergent step: a finite step
    # now reports nothing
    assert math.isfinite(net.train_step([[1.0]], [0.0], OPTIMIZERS[name](net, None)))


@needs_cuda
@pytest.mark.parametrize("code,n_rows", UPDATES)
def test_cuda_update_counts_as_the_cpu_does(code, n_rows):
    from numba import cuda
    from fastbp.kernels import cuda as K
    rng = np.random.default_rng(4)
    p = rng.standard_normal(21).astype(np.float32)
    g = rng.standard_normal(21).astype(np.float32)
    g[3], g[7] = np.inf, np.nan
    state = np.zeros((n_rows, 21), np.float32)
    p_d, g_d, state_d = cuda.to_device(p), cuda.to_device(g), cuda.to_device(state)
    n_cpu = cpu.optimizer_update(code, p, g, state, _hparams(code), 1)
    n_gpu = K.optimizer_update(code, p_d, g_d, state_d, _hparams(code), 1)
    assert n_cpu == n_gpu == 2
