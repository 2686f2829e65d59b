"""A training set that lives on the GPU, for ``fit`` on device="cuda": split and
shuffled on the device, never copied to the host.

``fit(net, X, y)`` with X and y exposing ``__cuda_array_interface__`` (numba device
arrays, CuPy arrays, PyTorch CUDA tensors; checked as fastbp.device_inputs says) keeps
the training rows where they are:

- each epoch's order is drawn on the host from fit's seeded generator, exactly as for
  host data (``rng.permutation(n)``), uploaded (n int64 values) and applied on the
  device by a row gather (kernels/cuda/rows.py) into epoch buffers allocated once per
  fit; so host and device data with the same seed train on the same minibatches;
- ``validation_split`` draws its rows as for host data and gathers both parts on the
  device;
- the validation rows (from ``validation_split`` or a device ``validation_data``) are
  copied to the host once per fit, where the validation score is computed as for host
  data. They are read, never trained on; the training rows are never copied.

The device holds the training set twice (the caller's arrays and the epoch buffers),
as the host does for host data. The caller's arrays are not modified. Values are
checked on the device by every step (fastbp.device_inputs); an invalid entry makes fit
restore the epoch's starting parameters and raise ValueError.
"""
import numpy as np

from . import device as _device


def _numba_view(a):
    """A numba device array for ``a`` (no copy): numba's own, or a view of any array
    exposing ``__cuda_array_interface__``."""
    if _device.is_device_array(a):
        return a
    from numba import cuda
    return cuda.as_cuda_array(a)


def to_host(a):
    """A numpy copy of the device array ``a`` (any ``__cuda_array_interface__``)."""
    return _numba_view(a).copy_to_host()


def _upload_rows(rows):
    return _device.to_device(np.ascontiguousarray(rows, dtype=np.int64))


def take(a, rows):
    """A new device array of the rows ``rows`` (host int64, each in [0, len(a))) of the
    device array ``a``, gathered on the device; an empty ``a`` (the unused labels or
    targets) is returned as it is."""
    if a.shape[0] == 0:
        return a
    from .kernels.cuda.rows import take_rows
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= a.shape[0]):
        raise ValueError(f"rows: expected indices in [0, {a.shape[0]}), got "
                         f"[{rows.min()}, {rows.max()}]")
    out = _device.empty((rows.size,) + tuple(a.shape[1:]), a.dtype, "cuda")
    take_rows(a, _upload_rows(rows), out)
    return out


class Shuffler:
    """Epoch buffers for device-resident (X, labels, targets): ``shuffled(order)``
    gathers the rows in ``order`` (a permutation of range(n), host int64) into them on
    the device and returns them; made once per fit."""

    def __init__(self, X, labels, targets):
        self.data = (X, labels, targets)
        n = X.shape[0]
        self.order = _device.empty(n, np.int64, "cuda")
        self.epoch = tuple(a if a.shape[0] == 0 else
                           _device.empty(a.shape, a.dtype, "cuda") for a in self.data)

    def shuffled(self, order):
        from .kernels.cuda.rows import take_rows
        _device.upload(self.order, order)
        for src, dst in zip(self.data, self.epoch):
            if src.shape[0]:
                take_rows(src, self.order, dst)
        return self.epoch
