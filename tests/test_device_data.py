"""fit on device="cuda" with a training set that lives on the GPU (fastbp.device_data):
split and shuffled on the device, never copied to the host, trained on the same
minibatches as the same data given from the host. Runs in numba's CUDA simulator (or on
a GPU) on a tiny network."""
import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice

usable, why = fdevice.cuda_status()
pytestmark = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")


def _guarded(a):
    """A device copy of ``a`` that raises if anything copies it to the host."""
    from numba import cuda
    dev = cuda.to_device(a)
    if not fdevice.simulator_enabled():
        return dev   # a real device array: the simulator run makes the check

    class NoHostCopy(type(dev)):
        def copy_to_host(self, *args, **kwargs):
            raise AssertionError("the training set was copied to the host")

        def __array__(self, *args, **kwargs):
            raise AssertionError("the training set was converted to numpy")

    return NoHostCopy(dev._ary)


def _data(seed, n=11, loss="softmax_cross_entropy"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = rng.integers(0, 2, n) if loss == "softmax_cross_entropy" else \
        rng.standard_normal((n, 2))
    return X, y


def _pair(loss="softmax_cross_entropy"):
    return [fastbp.MLP([3, 4, 2], activation="tanh", loss=loss, dtype="float64", seed=4,
                       device="cuda") for _ in range(2)]


def _fit(net, X, y, **kw):
    opt = fastbp.Adam(net, lr=0.05)
    return fastbp.fit(net, X, y, epochs=3, batch_size=4, optimizer=opt, seed=7,
                      verbose=False, **kw)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse"])
def test_device_data_shuffled_on_the_device_train_as_host_data(loss):
    X, y = _data(1, loss=loss)
    host, dev = _pair(loss)
    dX, dy = _guarded(X), _guarded(y if loss == "mse" else y.astype(np.int64))
    h_host = _fit(host, X, y, validation_split=0.3)
    h_dev = _fit(dev, dX, dy, validation_split=0.3)
    assert h_dev == h_host   # same rows, same order, same kernels: the same numbers
    np.testing.assert_array_equal(fdevice.to_host(dev.params), fdevice.to_host(host.params))
    # the caller's arrays untouched (the simulator's guard keeps its host array in _ary)
    np.testing.assert_array_equal(getattr(dX, "_ary", None) if fdevice.simulator_enabled()
                                  else dX.copy_to_host(), X)
    # and the same epochs as the CPU, to float tolerance
    cpu = fastbp.MLP([3, 4, 2], activation="tanh", loss=loss, dtype="float64", seed=4)
    h_cpu = _fit(cpu, X, y, validation_split=0.3)
    for key in h_cpu:
        np.testing.assert_allclose(h_dev[key], h_cpu[key], rtol=1e-9, atol=1e-12)


def test_device_validation_data_and_no_shuffle():
    X, y = _data(2)
    X_val, y_val = _data(3, n=5)
    host, dev = _pair()
    h_host = _fit(host, X, y, validation_data=(X_val, y_val), shuffle=False)
    from numba import cuda
    # the validation rows are copied to the host once (scored there), the training rows never
    h_dev = _fit(dev, _guarded(X), _guarded(y.astype(np.int64)), shuffle=False,
                 validation_data=(cuda.to_device(X_val), cuda.to_device(y_val)))
    assert h_dev == h_host
    np.testing.assert_array_equal(fdevice.to_host(dev.params), fdevice.to_host(host.params))


def test_invalid_device_values_restore_the_epoch_and_raise():
    X, y = _data(4)
    bad = X.copy()
    bad[9, 1] = np.inf
    _, dev = _pair()
    from numba import cuda
    before = fdevice.to_host(dev.params)
    with pytest.raises(ValueError, match=r"X, y: 1 entries .* NaN or infinite.*restored"):
        _fit(dev, cuda.to_device(bad), cuda.to_device(y.astype(np.int64)))
    np.testing.assert_array_equal(fdevice.to_host(dev.params), before)


def test_device_data_are_checked_from_their_interface():
    from numba import cuda
    X, y = _data(5)
    _, dev = _pair()
    with pytest.raises(TypeError, match="X: expected a device array of float64"):
        _fit(dev, cuda.to_device(X.astype(np.float32)), cuda.to_device(y))
    with pytest.raises(ValueError, match=r"y: expected int64 class labels of shape \(11,\)"):
        _fit(dev, cuda.to_device(X), cuda.to_device(y[:5]))
    with pytest.raises(TypeError, match="y: expected a device array like X"):
        _fit(dev, cuda.to_device(X), y)


def test_take_rows_matches_numpy_take():
    from numba import cuda
    from fastbp.kernels.cuda.rows import take_rows
    rng = np.random.default_rng(8)
    src2, src1 = rng.standard_normal((9, 5)), rng.integers(0, 100, 9)
    order = rng.permutation(9)[:6]
    for src in (src2, src1):
        dst = cuda.device_array((6,) + src.shape[1:], dtype=src.dtype)
        take_rows(cuda.to_device(src), cuda.to_device(order), dst)
        np.testing.assert_array_equal(dst.copy_to_host(), np.take(src, order, axis=0))
    with pytest.raises(ValueError, match="take_rows: expected"):
        take_rows(cuda.to_device(src2), cuda.to_device(order),
                  cuda.device_array((5, 5)))
