"""The public API contract of fastbp.MLP, its layers and SGD.

What this file proves:
- fastbp.MLP(sizes, activation, output_activation, loss, dtype, seed) has those
  parameter names, in that order, with the documented defaults (float32 by default,
  float64 supported);
- net.forward returns a new array each call (mutating it, or calling again, changes
  nothing else); net.backward returns a Python float and fills net.grads with the
  gradient; compute_loss leaves the gradients alone;
- net.params / net.grads are flat, contiguous 1-D buffers, and net.layers[i].W/.b/.dW/.db
  are writable (out, in)/(out,) views into them: writing a view changes net.forward,
  `layer.W = array` copies in with a shape check, and forward computes
  act(X @ W.T + b) layer by layer from exactly those views;
- per-layer activation lists, seeding (same seed -> identical params), predict for the
  three losses, train_step == backward + optimizer.step(), and that forward, backward,
  compute_loss, predict, train_step and fit never modify X or y.
"""
import inspect

import numpy as np
import pytest

import fastbp

ACT = {
    "identity": lambda s: s,
    "tanh": np.tanh,
    "relu": lambda s: np.maximum(s, 0.0),
    "sigmoid": lambda s: 1.0 / (1.0 + np.exp(-s)),
}


def numpy_forward(net, X):
    """act(X @ W.T + b) through net.layers, in float64, from the layer views."""
    A = np.asarray(X, np.float64)
    for layer in net.layers:
        A = ACT[layer.activation](A @ layer.W.astype(np.float64).T + layer.b)
    return A


def data(n_in=6, n_out=3, batch=8, loss="softmax_cross_entropy", seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (batch, n_in)).astype(dtype)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, n_out, batch).astype(np.int64)
    elif loss == "mse":
        y = rng.normal(size=(batch, n_out)).astype(dtype)
    else:
        y = rng.uniform(0, 1, (batch, n_out)).astype(dtype)
    return X, y


# -- constructor -----------------------------------------------------------------------
def test_constructor_names_order_and_defaults():
    params = inspect.signature(fastbp.MLP).parameters
    names = list(params)
    assert names[:6] == ["sizes", "activation", "output_activation", "loss", "dtype",
                         "seed"]
    assert params["sizes"].default is inspect.Parameter.empty
    assert params["activation"].default == "relu"
    assert params["output_activation"].default == "identity"
    assert params["loss"].default == "softmax_cross_entropy"
    assert params["dtype"].default == "float32"
    assert params["seed"].default is None


def test_defaults_in_effect():
    net = fastbp.MLP([4, 5, 3])
    assert net.sizes == (4, 5, 3)
    assert [l.activation for l in net.layers] == ["relu", "identity"]
    assert net.loss == "softmax_cross_entropy"
    assert net.dtype == np.float32
    for buf in (net.params, net.grads):
        assert buf.dtype == np.float32
    assert net.forward(np.zeros((2, 4))).dtype == np.float32


def test_keyword_and_positional_calls_agree():
    a = fastbp.MLP([4, 5, 3], "tanh", "identity", "softmax_cross_entropy", "float64", 7)
    b = fastbp.MLP(sizes=[4, 5, 3], activation="tanh", output_activation="identity",
                   loss="softmax_cross_entropy", dtype="float64", seed=7)
    assert a.dtype == b.dtype == np.float64
    np.testing.assert_array_equal(a.params, b.params)


def test_public_names_exported():
    for name in ("MLP", "Layer", "SGD", "Optimizer", "fit", "accuracy", "gradcheck",
                 "load_digits", "train_test_split", "ACTIVATIONS", "LOSSES"):
        assert hasattr(fastbp, name), name
    assert set(fastbp.LOSSES) == {"softmax_cross_entropy", "mse", "bce_with_logits"}
    assert {"identity", "sigmoid", "tanh", "relu"} <= set(fastbp.ACTIVATIONS)


# -- buffers and layer views -------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_params_and_grads_are_flat(dtype):
    sizes = [6, 5, 4, 3]
    net = fastbp.MLP(sizes, dtype=dtype, seed=0)
    n = sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:]))
    assert net.n_params == n
    for buf in (net.params, net.grads):
        assert buf.shape == (n,) and buf.ndim == 1
        assert buf.dtype == np.dtype(dtype)
        assert buf.flags.c_contiguous and buf.flags.writeable
    assert not np.shares_memory(net.params, net.grads)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_views_shapes_and_memory(dtype):
    sizes = [6, 5, 4, 3]
    net = fastbp.MLP(sizes, activation="tanh", dtype=dtype, seed=0)
    assert len(net.layers) == len(sizes) - 1
    covered = np.zeros(net.n_params, bool)
    for layer, n_in, n_out in zip(net.layers, sizes[:-1], sizes[1:]):
        assert layer.W.shape == (n_out, n_in) and layer.dW.shape == (n_out, n_in)
        assert layer.b.shape == (n_out,) and layer.db.shape == (n_out,)
        for view, buf in ((layer.W, net.params), (layer.b, net.params),
                          (layer.dW, net.grads), (layer.db, net.grads)):
            assert view.dtype == np.dtype(dtype)
            assert view.flags.writeable
            assert np.shares_memory(view, buf)
            assert view.base is not None
        for view in (layer.W, layer.b):
            start = (view.__array_interface__["data"][0]
                     - net.params.__array_interface__["data"][0]) // view.itemsize
            covered[start:start + view.size] = True
    assert covered.all(), "layer views do not tile net.params"


def test_forward_is_act_of_X_WT_plus_b_from_the_views():
    net = fastbp.MLP([6, 5, 4, 3], activation="tanh", dtype="float64", seed=3)
    X, _ = data(dtype=np.float64)
    np.testing.assert_allclose(net.forward(X), numpy_forward(net, X), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("which", ["W", "b"])
def test_writing_into_views_changes_forward(which):
    net = fastbp.MLP([6, 5, 3], activation="tanh", dtype="float64", seed=1)
    X, _ = data(dtype=np.float64)
    before = net.forward(X)
    view = getattr(net.layers[0], which)
    view[...] += 0.5           # in place, through the view
    after = net.forward(X)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, numpy_forward(net, X), rtol=1e-12, atol=1e-12)


def test_writing_params_changes_layer_views():
    net = fastbp.MLP([6, 5, 3], seed=1)
    net.params[...] = 0
    assert not net.layers[0].W.any() and not net.layers[1].b.any()
    np.testing.assert_array_equal(net.forward(np.ones((2, 6))), np.zeros((2, 3)))


@pytest.mark.parametrize("which", ["W", "b", "dW", "db"])
def test_assigning_a_view_copies_in(which):
    net = fastbp.MLP([6, 5, 3], activation="tanh", dtype="float64", seed=1)
    layer = net.layers[1]
    view_before = getattr(layer, which)
    new = np.random.default_rng(0).normal(size=view_before.shape)
    setattr(layer, which, new)
    view = getattr(layer, which)
    np.testing.assert_array_equal(view, new)
    buf = net.params if which in ("W", "b") else net.grads
    assert np.shares_memory(view, buf), "assignment replaced the view instead of copying"
    assert view is not new and not np.shares_memory(view, new)
    new += 1.0                 # the caller's array stays the caller's
    assert not np.array_equal(getattr(layer, which), new)
    if which in ("W", "b"):
        X, _ = data(dtype=np.float64)
        np.testing.assert_allclose(net.forward(X), numpy_forward(net, X), rtol=1e-12)


def test_assigning_a_view_accepts_lists_and_other_dtypes():
    net = fastbp.MLP([2, 2], seed=0)
    net.layers[0].W = [[1, 2], [3, 4]]
    net.layers[0].b = np.array([0.5, -0.5], np.float64)
    np.testing.assert_array_equal(net.params, np.array([1, 2, 3, 4, 0.5, -0.5], np.float32))


@pytest.mark.parametrize("which, bad_shape", [
    ("W", (5, 6)), ("W", (3,)), ("W", (3, 5, 1)), ("b", (5,)), ("b", (3, 1)),
    ("dW", (5, 3)), ("db", ())])
def test_assigning_a_view_checks_the_shape(which, bad_shape):
    net = fastbp.MLP([6, 5, 3], seed=1)
    layer = net.layers[1]   # W (3, 5), b (3,)
    params, grads = net.params.copy(), net.grads.copy()
    with pytest.raises(ValueError) as info:
        setattr(layer, which, np.ones(bad_shape))
    message = str(info.value)
    assert which in message and "expected" in message
    assert str(getattr(layer, which).shape) in message and str(bad_shape) in message
    np.testing.assert_array_equal(net.params, params)
    np.testing.assert_array_equal(net.grads, grads)


# -- forward, backward, compute_loss -----------------------------------------------------
def test_forward_returns_a_new_array():
    net = fastbp.MLP([6, 5, 3], activation="tanh", seed=0)
    X, _ = data()
    X2, _ = data(seed=1)
    out1 = net.forward(X)
    out2 = net.forward(X)
    assert out1 is not out2 and not np.shares_memory(out1, out2)
    assert not np.shares_memory(out1, net.params)
    out1_copy = out1.copy()
    net.forward(X2)             # a later call must not overwrite an earlier result
    net.backward(X2, np.zeros(8, np.int64))
    np.testing.assert_array_equal(out1, out1_copy)
    out1[...] = 1e3             # mutating the result must not change the network
    np.testing.assert_array_equal(net.forward(X), out2)
    assert out1.flags.writeable and out1.shape == (8, 3)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "bce_with_logits"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_backward_returns_float_and_fills_grads(loss, dtype):
    net = fastbp.MLP([6, 5, 3], activation="tanh", loss=loss, dtype=dtype, seed=0)
    X, y = data(loss=loss, dtype=np.dtype(dtype).type)
    assert not net.grads.any()
    grads_buffer = net.grads
    loss_value = net.backward(X, y)
    assert type(loss_value) is float and np.isfinite(loss_value) and loss_value > 0
    assert net.grads is grads_buffer, "grads buffer replaced instead of filled"
    assert all(l.dW.any() for l in net.layers)
    assert np.shares_memory(net.layers[0].dW, net.grads)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert net.compute_loss(X, y) == pytest.approx(loss_value, rel=tol)


def test_backward_grads_are_the_gradient():
    """Central differences on a few parameters, float64: net.grads is d(loss)/d(params)."""
    net = fastbp.MLP([6, 5, 3], activation="tanh", dtype="float64", seed=2)
    X, y = data(dtype=np.float64)
    net.backward(X, y)
    grads = net.grads.copy()
    eps = 1e-6
    for i in np.random.default_rng(0).choice(net.n_params, 12, replace=False):
        old = net.params[i]
        net.params[i] = old + eps
        up = net.compute_loss(X, y)
        net.params[i] = old - eps
        down = net.compute_loss(X, y)
        net.params[i] = old
        assert (up - down) / (2 * eps) == pytest.approx(grads[i], rel=1e-5, abs=1e-8)


def test_compute_loss_leaves_grads_and_params_alone():
    net = fastbp.MLP([6, 5, 3], seed=0)
    X, y = data()
    net.backward(X, y)
    grads, params = net.grads.copy(), net.params.copy()
    value = net.compute_loss(*data(seed=5))
    assert type(value) is float
    np.testing.assert_array_equal(net.grads, grads)
    np.testing.assert_array_equal(net.params, params)


def test_batch_size_can_change_between_calls():
    net = fastbp.MLP([6, 5, 3], activation="tanh", dtype="float64", seed=0)
    X, y = data(batch=16, dtype=np.float64)
    full = net.forward(X)
    np.testing.assert_allclose(net.forward(X[:3]), full[:3], rtol=1e-12)
    np.testing.assert_allclose(net.forward(X[:1]), full[:1], rtol=1e-12)
    np.testing.assert_allclose(net.forward(X), full, rtol=1e-12)


# -- activations, seeds, dtypes -----------------------------------------------------------
def test_per_layer_activation_list():
    net = fastbp.MLP([6, 5, 4, 3], activation=["tanh", "relu"],
                     output_activation="sigmoid", loss="mse", dtype="float64", seed=0)
    assert [l.activation for l in net.layers] == ["tanh", "relu", "sigmoid"]
    X, _ = data(dtype=np.float64)
    np.testing.assert_allclose(net.forward(X), numpy_forward(net, X), rtol=1e-12,
                               atol=1e-12)
    swapped = fastbp.MLP([6, 5, 4, 3], activation=["relu", "tanh"],
                         output_activation="sigmoid", loss="mse", dtype="float64", seed=0)
    swapped.params[...] = net.params
    assert not np.allclose(swapped.forward(X), net.forward(X))


def test_same_seed_same_params():
    a = fastbp.MLP([6, 5, 3], seed=42)
    b = fastbp.MLP([6, 5, 3], seed=42)
    c = fastbp.MLP([6, 5, 3], seed=43)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    assert not np.array_equal(fastbp.MLP([6, 5, 3]).params, fastbp.MLP([6, 5, 3]).params)
    for layer in a.layers:
        assert layer.W.any() and not layer.b.any()   # random weights, zero biases


def test_same_seed_same_training():
    X, y = data(batch=32)
    runs = []
    for _ in range(2):
        net = fastbp.MLP([6, 5, 3], seed=9)
        fastbp.fit(net, X, y, epochs=3, batch_size=8, seed=1,
                   optimizer=fastbp.SGD(net, lr=0.1))
        runs.append(net.params.copy())
    np.testing.assert_array_equal(*runs)


def test_float64_supported_and_close_to_float32():
    X, y = data(dtype=np.float64)
    n32 = fastbp.MLP([6, 5, 3], activation="tanh", dtype="float32", seed=0)
    n64 = fastbp.MLP([6, 5, 3], activation="tanh", dtype="float64", seed=0)
    assert n64.params.dtype == n64.grads.dtype == np.float64
    out64 = n64.forward(X)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(n32.params, n64.params, rtol=1e-6)
    np.testing.assert_allclose(n32.forward(X), out64, rtol=1e-4, atol=1e-5)
    assert n32.backward(X, y) == pytest.approx(n64.backward(X, y), rel=1e-5)
    np.testing.assert_allclose(n32.grads, n64.grads, rtol=1e-3, atol=1e-5)


# -- predict -------------------------------------------------------------------------------
def test_predict_classifier_is_argmax():
    net = fastbp.MLP([6, 5, 4], activation="tanh", seed=0)
    X, _ = data(batch=20)
    pred = net.predict(X)
    assert pred.shape == (20,) and pred.dtype.kind == "i"
    np.testing.assert_array_equal(pred, net.forward(X).argmax(axis=1))
    assert fastbp.accuracy(net, X, pred) == 1.0


def test_predict_mse_is_the_output():
    net = fastbp.MLP([6, 5, 2], activation="tanh", loss="mse", seed=0)
    X, _ = data()
    np.testing.assert_array_equal(net.predict(X), net.forward(X))


@pytest.mark.parametrize("n_out", [1, 3])
def test_predict_bce_thresholds_logits_at_zero(n_out):
    net = fastbp.MLP([6, 5, n_out], activation="tanh", loss="bce_with_logits", seed=0)
    X, _ = data(batch=30)
    logits = net.forward(X)
    pred = net.predict(X)
    expected = (logits > 0).astype(np.int64)
    if n_out == 1:
        assert pred.shape == (30,)
        expected = expected[:, 0]
    else:
        assert pred.shape == (30, n_out)
    np.testing.assert_array_equal(pred, expected)
    assert set(np.unique(pred)) <= {0, 1}


# -- train_step ------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "bce_with_logits"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_train_step_equals_backward_then_step(loss, dtype):
    a = fastbp.MLP([6, 5, 3], activation="tanh", loss=loss, dtype=dtype, seed=4)
    b = fastbp.MLP([6, 5, 3], activation="tanh", loss=loss, dtype=dtype, seed=4)
    opt_a, opt_b = fastbp.SGD(a, lr=0.2), fastbp.SGD(b, lr=0.2)
    for step in range(4):
        X, y = data(loss=loss, seed=step, dtype=np.dtype(dtype).type)
        loss_a = a.train_step(X, y, opt_a)
        loss_b = b.backward(X, y)
        opt_b.step()
        assert type(loss_a) is float
        assert loss_a == loss_b
        np.testing.assert_array_equal(a.grads, b.grads)
        np.testing.assert_array_equal(a.params, b.params)
    assert opt_a.steps == opt_b.steps == 4
    assert not np.array_equal(a.params, fastbp.MLP([6, 5, 3], seed=4, dtype=dtype).params)


def test_sgd_step_is_params_minus_lr_grads():
    net = fastbp.MLP([6, 5, 3], dtype="float64", seed=0)
    net.backward(*data(dtype=np.float64))
    before, grads = net.params.copy(), net.grads.copy()
    fastbp.SGD(net, lr=0.3).step()
    np.testing.assert_allclose(net.params, before - 0.3 * grads, rtol=1e-15, atol=1e-17)
    np.testing.assert_array_equal(net.grads, grads)


def test_fit_returns_history_and_lowers_the_loss():
    X, y = data(batch=64)
    net = fastbp.MLP([6, 8, 3], activation="tanh", seed=0)
    start = net.compute_loss(X, y)
    history = net.fit(X, y, epochs=5, batch_size=16, seed=0,
                      optimizer=fastbp.SGD(net, lr=0.5), validation_data=(X, y))
    assert len(history["loss"]) == len(history["val_loss"]) == 5
    assert len(history["val_accuracy"]) == 5
    assert net.compute_loss(X, y) < start


# -- inputs are never modified ----------------------------------------------------------
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "bce_with_logits"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_inputs_never_modified(loss, dtype):
    """X and y in the network's own dtype and C order go to the kernels without a copy:
    the case where an in-place kernel could write into them."""
    np_dtype = np.dtype(dtype).type
    net = fastbp.MLP([6, 5, 3], activation="tanh", loss=loss, dtype=dtype, seed=0)
    X, y = data(loss=loss, batch=16, dtype=np_dtype)
    assert X.flags.c_contiguous and X.dtype == net.dtype
    X_copy, y_copy = X.copy(), y.copy()
    net.forward(X)
    net.predict(X)
    net.compute_loss(X, y)
    net.backward(X, y)
    net.train_step(X, y, fastbp.SGD(net, lr=0.1))
    fastbp.fit(net, X, y, epochs=2, batch_size=5, seed=0, validation_data=(X, y))
    fastbp.fit(net, X, y, epochs=1, batch_size=5, shuffle=False)
    np.testing.assert_array_equal(X, X_copy)
    np.testing.assert_array_equal(y, y_copy)
    assert X.dtype == X_copy.dtype and y.dtype == y_copy.dtype
