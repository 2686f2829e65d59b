"""The CPU training step's fast paths give the results of the plain ones.

- The optimizer update fused into backward (kernels/cpu/backward_update.py) against the
  separate pass after backward, which a clipping optimizer still takes: with a
  max_grad_norm no gradient reaches, clipping scales by exactly 1, so both paths must
  leave the same parameters, state and losses, bit for bit, for every optimizer, and
  count the same non-finite parameters.
- A batch already in the kernels' form has its values checked by one compiled pass
  (kernels/cpu/checks.py, validation.ReadyBatch): every bad value it can hold is
  refused with the full check's message, with no side effects, and a good one trains
  exactly as its converted twin does.
"""
import numpy as np
import pytest

import fastbp

# Wide enough that with two or more threads the products and the first layer's
# update run in parallel blocks; the 10-way last layer stays on one thread.
SIZES, BATCH = [300, 512, 256, 10], 64
NO_CLIP_REACHED = 1e30

OPTIMIZERS = [
    ("sgd", {}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("adam", {"weight_decay": 1e-3}),
    ("adamw", {"amsgrad": True}),
    ("rmsprop", {"momentum": 0.5, "centered": True}),
]


def _data(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    return X, rng.integers(0, sizes[-1], batch)


def _train(sizes, X, y, name, kwargs, max_grad_norm, steps=3, lr=None):
    net = fastbp.MLP(sizes, activation="tanh", seed=1)
    if lr is not None:
        kwargs = {**kwargs, "lr": lr}
    opt = fastbp.make_optimizer(name, net, max_grad_norm=max_grad_norm, **kwargs)
    losses = [net.train_step(X, y, opt) for _ in range(steps)]
    return net, opt, losses


@pytest.mark.parametrize("sizes, batch", [(SIZES, BATCH), ([20, 16, 5], 8)],
                         ids=["wide", "small"])
@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=lambda v: str(v))
def test_fused_update_equals_the_separate_pass(sizes, batch, name, kwargs):
    X, y = _data(sizes, batch)
    fused, fused_opt, fused_losses = _train(sizes, X, y, name, kwargs, None)
    apart, apart_opt, apart_losses = _train(sizes, X, y, name, kwargs, NO_CLIP_REACHED)
    assert fused_losses == apart_losses
    assert np.array_equal(fused.params, apart.params)
    assert np.array_equal(fused_opt.state, apart_opt.state)
    assert np.array_equal(fused.grads, apart.grads)


def test_fused_update_counts_non_finite_parameters_as_the_separate_pass():
    X, y = _data(SIZES, BATCH)
    counts = []
    for max_grad_norm in (None, NO_CLIP_REACHED):
        net = fastbp.MLP(SIZES, activation="tanh", seed=1)
        # every parameter with a non-zero gradient overflows float32
        opt = fastbp.SGD(net, lr=1e300, max_grad_norm=max_grad_norm)
        with pytest.raises(fastbp.TrainingDiverged) as info:
            net.train_step(X, y, opt)
        counts.append(info.value.nonfinite)
        assert info.value.nonfinite == np.count_nonzero(~np.isfinite(net.params))
    assert counts[0] == counts[1] > 0


def _refused(net, X, y, opt, fragments):
    before = [X.tobytes(), y.tobytes(), net.params.tobytes(), net.grads.tobytes()]
    with pytest.raises(ValueError) as info:
        net.train_step(X, y, opt)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert before == [X.tobytes(), y.tobytes(), net.params.tobytes(), net.grads.tobytes()]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_ready_batch_with_non_finite_X_is_refused(value):
    net = fastbp.MLP([5, 4, 3], activation="tanh", seed=0)
    X, y = _data([5, 4, 3], 6)
    X[3, 2] = value
    _refused(net, X, y, fastbp.SGD(net), ["X:", "expected finite values"])


@pytest.mark.parametrize("label", [-1, 3, 2**40])
def test_ready_batch_with_labels_out_of_range_is_refused(label):
    net = fastbp.MLP([5, 4, 3], activation="tanh", seed=0)
    X, y = _data([5, 4, 3], 6)
    y[4] = label
    _refused(net, X, y, fastbp.SGD(net), ["y:", "[0, 3)", repr(label)])


@pytest.mark.parametrize("loss, value, fragment", [
    ("mse", np.nan, "expected finite values"),
    ("bce_with_logits", 1.5, "in [0, 1]"),
    ("bce_with_logits", -0.25, "in [0, 1]"),
    ("bce_with_logits", np.inf, "expected finite values"),
])
def test_ready_batch_with_bad_targets_is_refused(loss, value, fragment):
    net = fastbp.MLP([5, 4, 3], activation="tanh", loss=loss, seed=0)
    X, _ = _data([5, 4, 3], 6)
    y = np.random.default_rng(1).uniform(0, 1, (6, 3)).astype(np.float32)
    y[2, 1] = value
    _refused(net, X, y, fastbp.SGD(net), ["y:", fragment])


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "bce_with_logits"])
def test_ready_batch_trains_as_its_converted_twin(loss):
    X, labels = _data([5, 4, 3], 6)
    y = labels if loss == "softmax_cross_entropy" else \
        np.random.default_rng(1).uniform(0, 1, (6, 3)).astype(np.float32)
    # the twin: float64 X and Fortran-ordered or int32 y, converted by the full checks
    twin_y = y.astype(np.int32) if y.ndim == 1 else np.asfortranarray(y.astype(np.float64))
    results = []
    for X_in, y_in in ((X, y), (X.astype(np.float64), twin_y)):
        net = fastbp.MLP([5, 4, 3], activation="tanh", loss=loss, seed=0)
        opt = fastbp.SGD(net, lr=0.1)
        losses = [net.train_step(X_in, y_in, opt) for _ in range(2)]
        results.append((losses, net.params.copy(), net.backward(X_in, y_in)))
    assert results[0][0] == results[1][0]
    assert np.array_equal(results[0][1], results[1][1])
    assert results[0][2] == results[1][2]
