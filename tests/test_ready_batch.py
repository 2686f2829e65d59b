"""validation.ReadyBatch: the fast check of a batch's form that train_step and backward
run before their compiled value check. It decides from strides, dtypes, flags and the
row width; anything it does not pass must go through the full checks, which convert it
or raise. These are the arrays whose strides alone look right."""
import numpy as np
import pytest

import fastbp
from fastbp import validation

SIZES = [5, 4, 3]


def _net(loss="softmax_cross_entropy"):
    return fastbp.MLP(SIZES, activation="tanh", loss=loss, seed=0)


def _form(net):
    return net._ready_batch


def test_kernel_form_batch_is_ready_and_returned_as_is():
    net = _net()
    X = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    y = np.arange(6, dtype=np.int64) % 3
    ready = _form(net)(X, y)
    assert ready is not None
    assert ready[0] is X and ready[1] is y and ready[2].size == 0


def test_column_block_with_the_strides_of_a_narrower_batch_is_not_ready():
    # X[:, :4] of a (6, 5) array has the strides (20, 4) of a (6, 5) batch, one
    # feature short: it must get the full check's error, not be read as 5 features
    net = _net()
    wide = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    X = wide[:, :4]
    y = np.zeros(6, np.int64)
    assert _form(net)(X, y) is None
    with pytest.raises(ValueError, match="expected 5 features per row"):
        net.train_step(X, y, fastbp.SGD(net))


def test_target_column_block_is_not_ready():
    net = _net("mse")
    X = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    wide = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    T = wide[:, :2]   # strides of (6, 3) targets, one output short
    assert _form(net)(X, T) is None
    with pytest.raises(ValueError, match=r"expected shape \(6, 3\)"):
        net.train_step(X, T, fastbp.SGD(net))


@pytest.mark.parametrize("make", [
    lambda X: X[::-1],                       # negative row stride
    lambda X: np.asfortranarray(X),          # column-major
    lambda X: X.astype(np.float64),          # another dtype
    lambda X: X[None, 0],                    # one row, row stride 0
], ids=["reversed", "fortran", "float64", "row-view"])
def test_other_forms_are_not_ready_and_train_as_converted(make):
    net, twin = _net(), _net()
    X = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    odd = make(X)
    y = np.arange(odd.shape[0], dtype=np.int64) % 3
    assert _form(net)(odd, y) is None
    converted = np.ascontiguousarray(odd, dtype=np.float32)
    assert net.train_step(odd, y, fastbp.SGD(net)) == \
        twin.train_step(converted, y, fastbp.SGD(twin))
    assert np.array_equal(net.params, twin.params)


def test_read_only_batch_is_not_ready_and_trains_unchanged():
    net, twin = _net(), _net()
    X = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    y = np.arange(6, dtype=np.int64) % 3
    X_ro, y_ro = X.copy(), y.copy()
    X_ro.flags.writeable = False
    y_ro.flags.writeable = False
    assert _form(net)(X_ro, y) is None and _form(net)(X, y_ro) is None
    assert net.train_step(X_ro, y_ro, fastbp.SGD(net)) == \
        twin.train_step(X, y, fastbp.SGD(twin))
    assert np.array_equal(net.params, twin.params)


def test_labels_of_another_integer_type_or_shape_are_not_ready():
    form = validation.ReadyBatch(5, 3, np.float32, True, np.zeros(0, np.int64),
                                 np.zeros((0, 3), np.float32))
    X = np.zeros((6, 5), np.float32)
    assert form(X, np.zeros(6, np.int32)) is None
    assert form(X, np.zeros((6, 1), np.int64)) is None
    assert form(X, np.zeros(5, np.int64)) is None
    assert form(X, np.zeros(12, np.int64)[::2]) is None
    assert form(X, np.zeros(6, np.int64)) is not None


def test_params_replaced_between_steps_are_the_ones_trained():
    # the step keeps its arguments between calls; a replaced params array must be used
    net, twin = _net(), _net()
    X = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    y = np.arange(6, dtype=np.int64) % 3
    opt, twin_opt = fastbp.SGD(net, lr=0.1), fastbp.SGD(twin, lr=0.1)
    net.train_step(X, y, opt)
    twin.train_step(X, y, twin_opt)
    net.params = net.params.copy()
    assert net.train_step(X, y, opt) == twin.train_step(X, y, twin_opt)
    assert np.array_equal(net.params, twin.params)


def _value_cases():
    """(X, labels, n_classes, targets, unit_interval) batches in the kernels' form, each
    valid or with one bad value, in both dtypes."""
    rng = np.random.default_rng(5)
    no_labels = np.zeros(0, np.int64)
    for dtype in (np.float32, np.float64):
        X = rng.standard_normal((7, 5)).astype(dtype)
        labels = rng.integers(0, 3, 7)
        T = rng.random((7, 3)).astype(dtype)
        no_targets = np.zeros((0, 3), dtype)
        yield X, labels, 3, no_targets, False
        yield X, no_labels, 3, T, False
        yield X, no_labels, 3, T, True
        for bad in (np.nan, np.inf, -np.inf):
            Xb = X.copy()
            Xb[3, 2] = bad
            yield Xb, labels, 3, no_targets, False
            Tb = T.copy()
            Tb[6, 0] = bad
            yield X, no_labels, 3, Tb, False
            yield X, no_labels, 3, Tb, True
        for label in (-1, 3, 2 ** 40):
            lb = labels.copy()
            lb[0] = label
            yield X, lb, 3, no_targets, False
        for target in (-0.25, 1.5, 1.0, 0.0):   # the edges of [0, 1] are inside
            Tb = T.copy()
            Tb[2, 1] = target
            yield X, no_labels, 3, Tb, True
            yield X, no_labels, 3, Tb, False
        big = np.full((2, 5), np.finfo(dtype).max, dtype)   # finite, at the limit
        big[0] = -big[0]
        yield big, labels[:2], 3, no_targets, False


def test_the_numpy_value_check_agrees_with_the_compiled_one():
    """validation.ready_values_ok (CUDA networks' host batches) answers as
    kernels/cpu/checks.batch_values_ok (the CPU's) on valid batches and on each kind of
    bad value."""
    from fastbp.kernels.cpu.checks import batch_values_ok
    answers = []
    for case in _value_cases():
        compiled = bool(batch_values_ok(*case))
        assert validation.ready_values_ok(*case) == compiled, case
        answers.append(compiled)
    assert True in answers and False in answers
