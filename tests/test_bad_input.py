"""Bad input is refused at the API boundary, clearly, and without side effects.

What this file proves, for every public entry point that takes data (net.forward,
net.predict, net.backward, net.compute_loss, net.train_step, fastbp.fit, net.fit):

- wrong shapes, empty batches, X/y length mismatches, non-real dtypes, NaN or infinity,
  out-of-range or non-integral class labels and out-of-range bce targets raise ValueError
  or TypeError whose message names the argument, what was expected and what came;
- the caller's arrays are byte-for-byte unchanged afterwards, and so are the network's
  parameters and gradients (a refused call does no partial work);
- integer X is converted, giving exactly the result of the same values as floats;
- a non-contiguous X (Fortran order, strided slice of a wider array, negative strides)
  gives exactly the forward/backward result of its contiguous copy;
- constructor and optimizer arguments (sizes, activation names and list length, loss and
  dtype names, SGD's lr, fit's epochs and batch_size) are checked the same way, and the
  messages for unknown names list the valid ones.
"""
import re

import numpy as np
import pytest

import fastbp

N_IN, N_HIDDEN, N_OUT, BATCH = 5, 4, 3, 6


# -- helpers ---------------------------------------------------------------------------
def make_net(loss="softmax_cross_entropy", n_out=N_OUT, dtype="float32"):
    return fastbp.MLP([N_IN, N_HIDDEN, n_out], activation="tanh", loss=loss,
                      dtype=dtype, seed=0)


def good_X(batch=BATCH, dtype=np.float32):
    return np.random.default_rng(1).uniform(-1, 1, (batch, N_IN)).astype(dtype)


def good_y(loss, batch=BATCH, n_out=N_OUT):
    rng = np.random.default_rng(2)
    if loss == "softmax_cross_entropy":
        return np.arange(batch, dtype=np.int64) % n_out
    if loss == "mse":
        return rng.normal(size=(batch, n_out)).astype(np.float32)
    return rng.uniform(0, 1, (batch, n_out)).astype(np.float32)


def snapshot(a):
    """What 'unchanged' means for any array: same dtype, shape, strides and bytes."""
    if not isinstance(a, np.ndarray):
        return repr(a)
    return (a.dtype.str, a.shape, a.strides, a.tobytes())


# Entry points, each called as call(net, X, y). ``needs_y`` marks those that read y.
def _forward(net, X, y):
    return net.forward(X)


def _predict(net, X, y):
    return net.predict(X)


def _backward(net, X, y):
    return net.backward(X, y)


def _compute_loss(net, X, y):
    return net.compute_loss(X, y)


def _train_step(net, X, y):
    return net.train_step(X, y, fastbp.SGD(net, lr=0.1))


def _fit(net, X, y):
    return fastbp.fit(net, X, y, epochs=1, batch_size=4, seed=0)


def _net_fit(net, X, y):
    return net.fit(X, y, epochs=1, batch_size=4, seed=0)


X_ENTRY_POINTS = [_forward, _predict, _backward, _compute_loss, _train_step, _fit,
                  _net_fit]
Y_ENTRY_POINTS = [_backward, _compute_loss, _train_step, _fit, _net_fit]
ids = lambda f: f.__name__.lstrip("_")  # noqa: E731


def assert_refused(call, net, X, y, exc, name, *fragments):
    """``call(net, X, y)`` raises ``exc`` with a message naming ``name`` and containing
    every fragment (the expected and the actual); X, y, params and grads untouched."""
    before = [snapshot(X), snapshot(y), snapshot(net.params), snapshot(net.grads)]
    with pytest.raises(exc) as info:
        call(net, X, y)
    message = str(info.value)
    assert re.search(rf"\b{re.escape(name)}\b", message), \
        f"message does not name {name!r}: {message!r}"
    assert "expected" in message, f"message does not say what was expected: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"
    after = [snapshot(X), snapshot(y), snapshot(net.params), snapshot(net.grads)]
    for what, b, a in zip(["X", "y", "net.params", "net.grads"], before, after):
        assert a == b, f"{what} was modified by a refused call"


# -- X: shapes, dtypes, values ---------------------------------------------------------
def _bad_X_cases():
    rng = np.random.default_rng(3)
    X = rng.uniform(size=(BATCH, N_IN))
    nan_X = X.copy()
    nan_X[2, 3] = np.nan
    inf_X = X.copy()
    inf_X[0, 0] = np.inf
    ninf_X = X.copy()
    ninf_X[-1, -1] = -np.inf
    return [
        # (id, X, exception, fragments beyond the name "X")
        ("too_few_features", X[:, :N_IN - 1].copy(), ValueError,
         [str(N_IN), str((BATCH, N_IN - 1))]),
        ("too_many_features", np.zeros((BATCH, N_IN + 2)), ValueError,
         [str(N_IN), str((BATCH, N_IN + 2))]),
        ("one_dimensional", np.zeros(N_IN), ValueError, ["2-D", "1-D", str((N_IN,))]),
        ("three_dimensional", np.zeros((2, BATCH, N_IN)), ValueError, ["2-D", "3-D"]),
        ("scalar", np.float64(1.0), ValueError, ["2-D", "0-D"]),
        ("empty_batch", np.zeros((0, N_IN)), ValueError, ["non-empty", str((0, N_IN))]),
        ("empty_batch_int", np.zeros((0, N_IN), dtype=np.int64), ValueError,
         ["non-empty"]),
        ("bool", X > 0.5, TypeError, ["bool"]),
        ("complex", X.astype(np.complex128), TypeError, ["complex"]),
        ("object", X.astype(object), TypeError, ["object"]),
        ("string", X.astype(str), TypeError, ["<U"]),
        ("bytes", X.astype("S8"), TypeError, ["S8"]),
        ("datetime", np.zeros((BATCH, N_IN), dtype="datetime64[s]"), TypeError,
         ["datetime64"]),
        ("ragged_list", [[0.0] * N_IN, [0.0] * (N_IN - 1)], ValueError, ["rectangular"]),
        ("nan", nan_X, ValueError, ["finite", "NaN"]),
        ("inf", inf_X, ValueError, ["finite", "infinity"]),
        ("minus_inf", ninf_X, ValueError, ["finite", "infinity"]),
    ]


BAD_X = _bad_X_cases()


@pytest.mark.parametrize("call", X_ENTRY_POINTS, ids=ids)
@pytest.mark.parametrize("case_id, X, exc, fragments", BAD_X, ids=[c[0] for c in BAD_X])
def test_bad_X_is_refused(call, case_id, X, exc, fragments):
    assert_refused(call, make_net(), X, good_y("softmax_cross_entropy"), exc, "X",
                   *fragments)


@pytest.mark.parametrize("call", X_ENTRY_POINTS, ids=ids)
def test_X_too_large_for_float32_is_refused(call):
    """1e300 is finite in float64 but overflows float32: the message says so instead of
    claiming the caller passed infinity."""
    X = good_X(dtype=np.float64)
    X[1, 1] = 1e300
    assert_refused(call, make_net(), X, good_y("softmax_cross_entropy"), ValueError, "X",
                   "float32", "1e+300")


def test_X_too_large_for_float32_is_fine_for_float64():
    X = good_X(dtype=np.float64)
    X[1, 1] = 1e300
    out = make_net(dtype="float64").forward(X)
    assert out.shape == (BATCH, N_OUT)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "bce_with_logits"])
@pytest.mark.parametrize("call", X_ENTRY_POINTS, ids=ids)
def test_wrong_features_refused_for_every_loss(call, loss):
    X = np.zeros((BATCH, N_IN + 1), np.float32)
    assert_refused(call, make_net(loss), X, good_y(loss), ValueError, "X", str(N_IN),
                   str(X.shape))


# -- y: lengths, labels, targets --------------------------------------------------------
def _bad_y_cases():
    n = BATCH
    labels = np.arange(n) % N_OUT
    cases = [
        # (id, loss, y, exception, fragments beyond the name "y")
        ("labels_too_short", "softmax_cross_entropy", labels[:-1], ValueError,
         [str(n), str(n - 1)]),
        ("labels_too_long", "softmax_cross_entropy", np.arange(n + 2) % N_OUT, ValueError,
         [str(n), str(n + 2)]),
        ("labels_2d", "softmax_cross_entropy", labels.reshape(-1, 1), ValueError,
         ["1-D", str((n, 1))]),
        ("labels_scalar", "softmax_cross_entropy", np.int64(1), ValueError, ["1-D"]),
        ("label_negative", "softmax_cross_entropy", np.where(labels == 1, -1, labels),
         ValueError, [f"[0, {N_OUT})", "-1"]),
        ("label_too_large", "softmax_cross_entropy", np.where(labels == 1, N_OUT, labels),
         ValueError, [f"[0, {N_OUT})", str(N_OUT)]),
        ("label_huge_float", "softmax_cross_entropy", np.where(labels == 1, 1e20, labels),
         ValueError, [f"[0, {N_OUT})", "1e+20"]),
        ("label_huge_uint64", "softmax_cross_entropy",
         np.where(labels == 1, np.uint64(2**64 - 1), labels.astype(np.uint64)), ValueError,
         [f"[0, {N_OUT})", str(2**64 - 1)]),
        ("label_non_integral", "softmax_cross_entropy", labels + 0.5, (TypeError, ValueError),
         ["integer", "non-integral"]),
        ("label_nan", "softmax_cross_entropy", np.where(labels == 1, np.nan, labels),
         ValueError, ["finite", "NaN"]),
        ("label_inf", "softmax_cross_entropy", np.where(labels == 1, np.inf, labels),
         ValueError, ["finite", "infinity"]),
        ("labels_bool", "softmax_cross_entropy", labels > 0, TypeError, ["bool"]),
        ("labels_string", "softmax_cross_entropy", labels.astype(str), TypeError, ["<U"]),
        ("labels_object", "softmax_cross_entropy", labels.astype(object), TypeError,
         ["object"]),
        ("labels_complex", "softmax_cross_entropy", labels.astype(complex), TypeError,
         ["complex"]),
        ("labels_ragged", "softmax_cross_entropy", [[0, 1], [2]], ValueError,
         ["rectangular"]),
    ]
    for loss in ("mse", "bce_with_logits"):
        t = good_y(loss).astype(np.float64)
        nan_t, inf_t, ninf_t = t.copy(), t.copy(), t.copy()
        nan_t[1, 2] = np.nan
        inf_t[0, 0] = np.inf
        ninf_t[3, 1] = -np.inf
        cases += [
            (f"{loss}_too_few_rows", loss, t[:-1], ValueError, [str(n), str(n - 1)]),
            (f"{loss}_too_many_rows", loss, np.vstack([t, t]), ValueError,
             [str(n), str(2 * n)]),
            (f"{loss}_wrong_outputs", loss, t[:, :2], ValueError,
             [str((n, N_OUT)), str((n, 2))]),
            (f"{loss}_one_dimensional", loss, t[:, 0].copy(), ValueError,
             [str((n, N_OUT)), str((n,))]),
            (f"{loss}_nan", loss, nan_t, ValueError, ["finite", "NaN"]),
            (f"{loss}_inf", loss, inf_t, ValueError, ["finite", "infinity"]),
            (f"{loss}_minus_inf", loss, ninf_t, ValueError, ["finite", "infinity"]),
            (f"{loss}_complex", loss, t.astype(complex), TypeError, ["complex"]),
            (f"{loss}_bool", loss, t > 0.5, TypeError, ["bool"]),
            (f"{loss}_string", loss, t.astype(str), TypeError, ["<U"]),
        ]
    above, below = good_y("bce_with_logits"), good_y("bce_with_logits")
    above[2, 1] = 1.5
    below[4, 0] = -0.25
    cases += [
        ("bce_target_above_one", "bce_with_logits", above, ValueError,
         ["[0, 1]", "1.5"]),
        ("bce_target_below_zero", "bce_with_logits", below, ValueError,
         ["[0, 1]", "-0.25"]),
    ]
    return cases


BAD_Y = _bad_y_cases()


@pytest.mark.parametrize("call", Y_ENTRY_POINTS, ids=ids)
@pytest.mark.parametrize("case_id, loss, y, exc, fragments", BAD_Y,
                         ids=[c[0] for c in BAD_Y])
def test_bad_y_is_refused(call, case_id, loss, y, exc, fragments):
    assert_refused(call, make_net(loss), good_X(), y, exc, "y", *fragments)


@pytest.mark.parametrize("call", Y_ENTRY_POINTS, ids=ids)
def test_bce_single_output_targets(call):
    """With one output, bce targets may be (batch,); outside [0, 1] is still refused."""
    net = make_net("bce_with_logits", n_out=1)
    y = np.linspace(0, 1, BATCH)
    call(net, good_X(), y)   # accepted
    y_bad = y.copy()
    y_bad[0] = 2.0
    assert_refused(call, make_net("bce_with_logits", n_out=1), good_X(), y_bad,
                   ValueError, "y", "[0, 1]", "2.0")


@pytest.mark.parametrize("call", Y_ENTRY_POINTS, ids=ids)
def test_float_labels_that_are_integral_are_accepted(call):
    """Float labels holding whole numbers are labels, with the int64 labels' result."""
    X, y = good_X(), good_y("softmax_cross_entropy")
    a, b = make_net(), make_net()
    call(a, X, y)
    call(b, X, y.astype(np.float64))
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.grads, b.grads)


def test_fit_checks_validation_data():
    net = make_net()
    X_val = good_X()
    y_val = np.full(BATCH, N_OUT)   # out of range
    before = [snapshot(X_val), snapshot(y_val), snapshot(net.params)]
    with pytest.raises(ValueError, match=rf"\by\b.*\[0, {N_OUT}\)"):
        fastbp.fit(net, good_X(), good_y("softmax_cross_entropy"), epochs=1,
                   validation_data=(X_val, y_val))
    assert [snapshot(X_val), snapshot(y_val), snapshot(net.params)] == before


# -- integer X is converted -------------------------------------------------------------
@pytest.mark.parametrize("int_dtype", [np.int64, np.int32, np.uint8, np.int8])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_integer_X_gives_the_float_result(int_dtype, dtype):
    X_int = np.random.default_rng(4).integers(0, 17, (BATCH, N_IN)).astype(int_dtype)
    X_float = X_int.astype(dtype)
    y = good_y("softmax_cross_entropy")
    before = snapshot(X_int)
    a, b = make_net(dtype=dtype), make_net(dtype=dtype)
    np.testing.assert_array_equal(a.forward(X_int), b.forward(X_float))
    np.testing.assert_array_equal(a.predict(X_int), b.predict(X_float))
    assert a.compute_loss(X_int, y) == b.compute_loss(X_float, y)
    assert a.backward(X_int, y) == b.backward(X_float, y)
    np.testing.assert_array_equal(a.grads, b.grads)
    assert a.train_step(X_int, y, fastbp.SGD(a, lr=0.1)) == \
        b.train_step(X_float, y, fastbp.SGD(b, lr=0.1))
    np.testing.assert_array_equal(a.params, b.params)
    fastbp.fit(a, X_int, y, epochs=2, batch_size=4, seed=0)
    fastbp.fit(b, X_float, y, epochs=2, batch_size=4, seed=0)
    np.testing.assert_array_equal(a.params, b.params)
    assert snapshot(X_int) == before


def test_nested_list_X_is_converted():
    X = good_X(dtype=np.float64)
    np.testing.assert_array_equal(make_net().forward(X.tolist()), make_net().forward(X))


# -- non-contiguous X -------------------------------------------------------------------
def _non_contiguous_views(dtype):
    rng = np.random.default_rng(5)
    wide = rng.uniform(-1, 1, (BATCH, 2 * N_IN)).astype(dtype)
    tall = rng.uniform(-1, 1, (2 * BATCH, N_IN)).astype(dtype)
    base = rng.uniform(-1, 1, (BATCH, N_IN)).astype(dtype)
    return {
        "fortran": np.asfortranarray(base),
        "column_stride": wide[:, ::2],
        "row_stride": tall[::2],
        "negative_row_stride": base[::-1],
        "negative_column_stride": base[:, ::-1],
        "transposed": np.ascontiguousarray(base.T).T,
        "both_strided_negative": wide[::-1, ::-2],
    }


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", list(_non_contiguous_views(np.float32)))
def test_non_contiguous_X_equals_contiguous_copy(dtype, layout):
    X = _non_contiguous_views(dtype)[layout]
    assert X.shape == (BATCH, N_IN) and not X.flags.c_contiguous
    X_c = np.ascontiguousarray(X)
    before = snapshot(X)
    y = good_y("softmax_cross_entropy")
    y_strided = np.repeat(y, 2)[::2]       # labels may be strided too
    a, b = make_net(dtype=dtype), make_net(dtype=dtype)
    np.testing.assert_array_equal(a.forward(X), b.forward(X_c))
    np.testing.assert_array_equal(a.predict(X), b.predict(X_c))
    assert a.compute_loss(X, y_strided) == b.compute_loss(X_c, y)
    assert a.backward(X, y_strided) == b.backward(X_c, y)
    np.testing.assert_array_equal(a.grads, b.grads)
    assert a.train_step(X, y, fastbp.SGD(a, lr=0.1)) == \
        b.train_step(X_c, y, fastbp.SGD(b, lr=0.1))
    np.testing.assert_array_equal(a.params, b.params)
    assert snapshot(X) == before


@pytest.mark.parametrize("loss", ["mse", "bce_with_logits"])
def test_non_contiguous_targets_equal_contiguous_copy(loss):
    X = _non_contiguous_views(np.float32)["column_stride"]
    t = np.asfortranarray(good_y(loss))
    a, b = make_net(loss), make_net(loss)
    assert a.backward(X, t) == b.backward(np.ascontiguousarray(X), np.ascontiguousarray(t))
    np.testing.assert_array_equal(a.grads, b.grads)


# -- constructor arguments --------------------------------------------------------------
@pytest.mark.parametrize("sizes, exc, fragments", [
    ([5], ValueError, ["at least two", "[5]"]),
    ([], ValueError, ["at least two", "[]"]),
    ([5, 0], ValueError, ["positive", "0"]),
    ([5, 4, -3], ValueError, ["positive", "-3"]),
    ([5, 3.0], TypeError, ["integer", "3.0"]),
    ([5, 2.5, 3], TypeError, ["integer", "2.5"]),
    ([5, "3"], TypeError, ["integer", "'3'"]),
    ([5, True], TypeError, ["integer", "True"]),
    ([5, None], TypeError, ["integer", "None"]),
    (5, TypeError, ["sequence", "5"]),
    (None, TypeError, ["sequence", "None"]),
    ("53", TypeError, ["sequence", "'53'"]),
    # BLAS takes 32-bit dimensions: refused before anything is allocated
    ([2**31, 2], ValueError, ["2147483647", "2147483648"]),
    ([3, 2**40, 2], ValueError, ["2147483647", str(2**40)]),
], ids=repr)
def test_bad_sizes(sizes, exc, fragments):
    with pytest.raises(exc) as info:
        fastbp.MLP(sizes)
    message = str(info.value)
    assert re.search(r"\bsizes\b", message) and "expected" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


def test_batch_past_32_bits_is_refused_before_any_copy():
    net = fastbp.MLP([3, 2], seed=0)
    huge = np.broadcast_to(np.ones((1, 3), np.float32), (2**31, 3))   # no memory
    for call in (net.forward, lambda X: net.backward(X, np.zeros(2**31, np.int64))):
        with pytest.raises(ValueError, match=r"X: expected at most 2147483647 rows"):
            call(huge)


def test_numpy_integer_sizes_are_accepted():
    net = fastbp.MLP(np.array([N_IN, N_HIDDEN, N_OUT]), seed=0)
    assert net.sizes == (N_IN, N_HIDDEN, N_OUT)
    assert all(type(s) is int for s in net.sizes)


def test_softmax_needs_two_classes():
    with pytest.raises(ValueError, match=r"sizes.*2.*got 1"):
        fastbp.MLP([N_IN, 1], loss="softmax_cross_entropy")


@pytest.mark.parametrize("kwargs, name, bad, valid", [
    ({"activation": "tanhh"}, "activation", "'tanhh'", fastbp.ACTIVATIONS),
    ({"activation": "ReLU"}, "activation", "'ReLU'", fastbp.ACTIVATIONS),
    ({"activation": ["tanh", "swish"]}, "activation", "'swish'", fastbp.ACTIVATIONS),
    ({"activation": ["tanh", None]}, "activation", "None", fastbp.ACTIVATIONS),
    ({"output_activation": "softmax"}, "output_activation", "'softmax'",
     fastbp.ACTIVATIONS),
    ({"loss": "cross_entropy"}, "loss", "'cross_entropy'", fastbp.LOSSES),
    ({"loss": None}, "loss", "None", fastbp.LOSSES),
    ({"dtype": "float16"}, "dtype", "'float16'", ("float32", "float64")),
    ({"dtype": "int32"}, "dtype", "'int32'", ("float32", "float64")),
    ({"dtype": np.int64}, "dtype", "int64", ("float32", "float64")),
    ({"dtype": "nonsense"}, "dtype", "'nonsense'", ("float32", "float64")),
    ({"dtype": None}, "dtype", "None", ("float32", "float64")),
], ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_unknown_names_list_the_valid_ones(kwargs, name, bad, valid):
    with pytest.raises(ValueError) as info:
        fastbp.MLP([N_IN, N_HIDDEN, N_HIDDEN, N_OUT], **kwargs)
    message = str(info.value)
    assert re.search(rf"\b{name}\b", message) and "expected" in message, message
    assert bad in message, message
    for v in valid:
        assert v in message, f"valid name {v!r} missing from {message!r}"


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.dtype("float64"),
                                   "f4", "f8"])
def test_dtype_spellings_accepted(dtype):
    assert fastbp.MLP([N_IN, N_OUT], dtype=dtype).params.dtype == np.dtype(dtype)


@pytest.mark.parametrize("activation, n_given", [
    (["tanh"], 1), (["tanh", "relu", "relu"], 3), ([], 0)])
def test_wrong_length_activation_list(activation, n_given):
    with pytest.raises(ValueError) as info:
        fastbp.MLP([N_IN, N_HIDDEN, N_HIDDEN, N_OUT], activation=activation)
    message = str(info.value)
    assert re.search(r"\bactivation\b", message) and "expected" in message, message
    assert "2" in message and f"got {n_given}" in message, message


@pytest.mark.parametrize("activation", [5, None])
def test_non_iterable_activation_named(activation):
    with pytest.raises(TypeError, match=r"\bactivation\b.*expected"):
        fastbp.MLP([N_IN, N_HIDDEN, N_OUT], activation=activation)


# -- optimizer and training-loop arguments ----------------------------------------------
@pytest.mark.parametrize("lr, exc", [
    (0, ValueError), (0.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
    (float("inf"), ValueError), (-float("inf"), ValueError), ("0.1", TypeError),
    (None, TypeError), (True, TypeError), ([0.1], TypeError), (1 + 0j, TypeError),
], ids=repr)
def test_sgd_bad_lr(lr, exc):
    net = make_net()
    with pytest.raises(exc) as info:
        fastbp.SGD(net, lr=lr)
    message = str(info.value)
    assert re.search(r"\blr\b", message) and "expected" in message, message
    assert repr(lr) in message or str(lr) in message, message
    # the setter checks the same way and leaves the old value
    opt = fastbp.SGD(net, lr=0.5)
    with pytest.raises(exc, match=r"\blr\b"):
        opt.lr = lr
    assert opt.lr == 0.5


@pytest.mark.parametrize("lr", [1e-6, 0.1, 3, np.float32(0.25)])
def test_sgd_good_lr(lr):
    assert fastbp.SGD(make_net(), lr=lr).lr == pytest.approx(float(lr))


@pytest.mark.parametrize("kwargs, name", [
    ({"epochs": 0}, "epochs"), ({"epochs": -1}, "epochs"), ({"epochs": 1.5}, "epochs"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.0}, "batch_size"),
    ({"batch_size": None}, "batch_size"),
])
def test_fit_bad_loop_arguments(kwargs, name):
    net = make_net()
    before = snapshot(net.params)
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b.*expected.*got"):
        fastbp.fit(net, good_X(), good_y("softmax_cross_entropy"), **kwargs)
    assert snapshot(net.params) == before


def test_optimizer_of_another_network_is_refused():
    a, b = make_net(), make_net()
    before = snapshot(b.params)
    with pytest.raises(ValueError, match="optimizer"):
        b.train_step(good_X(), good_y("softmax_cross_entropy"), fastbp.SGD(a, lr=0.1))
    assert snapshot(b.params) == before
