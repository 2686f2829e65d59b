"""fastbp/aligned.py: fastbp's host buffers start on a 64-byte boundary, every time."""
import numpy as np
import pytest

import fastbp
from fastbp import aligned
from fastbp import device as fdevice


@pytest.mark.parametrize("shape", [0, 1, 7, 4810, (3, 5), (0, 4), (2, 0), (4, 1, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8])
def test_empty_and_zeros_are_on_a_cache_line(shape, dtype):
    for make in (aligned.empty, aligned.zeros):
        a = make(shape, dtype)
        assert a.shape == np.empty(shape).shape
        assert a.dtype == np.dtype(dtype)
        assert a.flags.c_contiguous and a.flags.writeable
        assert type(a) is np.ndarray
        if a.size:   # an empty one is numpy's own
            assert a.ctypes.data % aligned.ALIGNMENT == 0
        assert a.strides == np.empty(shape, dtype).strides
    assert not aligned.zeros(shape, dtype).any()


def test_many_allocations_all_land_on_boundaries():
    """numpy's own allocations land 16 bytes apart at random; these never do."""
    addresses = [aligned.empty(n, np.float32).ctypes.data % 64 for n in range(1, 200)]
    assert set(addresses) == {0}


def _offsets(net, optimizer):
    ws = net._workspace
    return [a.ctypes.data % 64 for a in (net.params, net.grads, ws.acts, ws.pres, ws.dbuf,
                                         optimizer.state) if a.size]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_networks_buffers_are_on_cache_lines(dtype):
    net = fastbp.MLP([5, 7, 3], dtype=dtype, seed=0)
    opt = fastbp.Adam(net)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((9, 5))
    y = rng.integers(0, 3, 9)
    net.train_step(X, y, opt)
    assert _offsets(net, opt) == [0] * 6
    net.train_step(rng.standard_normal((40, 5)), rng.integers(0, 3, 40), opt)  # grown
    assert _offsets(net, opt) == [0] * 6
    restored = fastbp.Adam(net)
    restored.load_state_dict(opt.state_dict())
    assert restored.state.ctypes.data % 64 == 0
    np.testing.assert_array_equal(restored.state, opt.state)


class _FakeDeviceArray:
    """Enough of a numba.cuda device array for device.move: copy_to_host(into)."""

    def __init__(self, values):
        self._values = values
        self.shape, self.dtype = values.shape, values.dtype

    def copy_to_host(self, ary=None):
        if ary is None:
            return self._values.copy()
        ary[...] = self._values
        return ary


def test_moving_a_device_array_to_the_host_lands_on_a_cache_line():
    values = np.arange(13, dtype=np.float32)
    host = fdevice.move(_FakeDeviceArray(values), "cpu")
    assert host.ctypes.data % 64 == 0
    np.testing.assert_array_equal(host, values)
    already = np.arange(3.0)
    assert fdevice.move(already, "cpu") is already   # host arrays are not copied
