"""Training inputs that already live on the GPU, checked without copying them.

On device="cuda", ``MLP.train_step`` and ``MLP.train_epoch`` take X and y as arrays
exposing ``__cuda_array_interface__`` (numba device arrays, CuPy arrays, PyTorch CUDA
tensors) and use them in place: nothing is copied to the host or converted. What the
host checks from the interface, before any launch (TypeError or ValueError naming the
argument, the expected and the actual):

    X  (batch, sizes[0]), batch >= 1, of the network's dtype, C-contiguous
    y  on the device too; int64 class labels (batch,) for softmax_cross_entropy, else
       targets (batch, sizes[-1]) of the network's dtype; C-contiguous

The values (X and targets finite, labels in [0, classes), bce_with_logits targets in
[0, 1]) are checked on the device by the step itself (kernels/cuda/plan.py
``_check_inputs``) and reported as ValueError when the step's loss is read
(fastbp.cuda_plan): the host never sees them. Which GPU an interface's pointer belongs
to is not checked (the interface does not say). Nothing the caller passed is modified.
"""
import numpy as np

from .device import on_device


def _interface(a):
    """(shape, dtype, strides or None) of a device array, from its interface."""
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is not None:
        strides = cai.get("strides")
        return (tuple(cai["shape"]), np.dtype(cai["typestr"]),
                None if strides is None else tuple(strides))
    # numba's CUDA simulator's arrays carry no interface: the same facts as attributes
    return tuple(a.shape), np.dtype(a.dtype), tuple(a.strides)


def _check_contiguous(name, shape, dtype, strides):
    if strides is None:
        return
    expected, step = [], dtype.itemsize
    for extent in reversed(shape):
        expected.append(step)
        step *= extent
    expected.reverse()
    if any(s != e for s, e, n in zip(strides, expected, shape) if n > 1):
        raise ValueError(f"{name}: expected a C-contiguous device array (strides "
                         f"{tuple(expected)} bytes), got strides {strides}; device arrays "
                         f"are used in place, never copied")


def checked(net, X, y, runner):
    """(X, labels, targets) for the launch plan from device-resident X and y, checked
    from their interfaces (module docstring); labels or targets, whichever the loss
    ignores, is the runner's empty stand-in."""
    if not on_device(y):
        raise TypeError(f"y: expected a device array like X (X lives on the GPU), got "
                        f"{type(y).__name__}")
    shape, dtype, strides = _interface(X)
    n_in = net.sizes[0]
    if len(shape) != 2 or shape[1] != n_in:
        raise ValueError(f"X: expected a device array of shape (batch, {n_in}), got "
                         f"shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"X: expected a non-empty batch, got shape {shape}")
    if dtype != net.dtype:
        raise TypeError(f"X: expected a device array of {net.dtype.name} (the network's "
                        f"dtype; device arrays are not converted), got {dtype.name}")
    _check_contiguous("X", shape, dtype, strides)
    batch = shape[0]
    y_shape, y_dtype, y_strides = _interface(y)
    if net.is_classifier:
        want_shape, want_dtype, kind = (batch,), np.dtype(np.int64), "int64 class labels"
    else:
        want_shape, want_dtype = (batch, net.sizes[-1]), net.dtype
        kind = f"{net.dtype.name} targets"
    if y_shape != want_shape:
        raise ValueError(f"y: expected {kind} of shape {want_shape} on the device (one row "
                         f"per row of X), got shape {y_shape}")
    if y_dtype != want_dtype:
        raise TypeError(f"y: expected {kind} on the device (device arrays are not "
                        f"converted), got {y_dtype.name}")
    _check_contiguous("y", y_shape, y_dtype, y_strides)
    if net.is_classifier:
        return X, y, runner.no_targets
    return X, runner.no_labels, y
