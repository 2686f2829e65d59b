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
(fastbp.cuda_plan): the host never sees them. Nothing the caller passed is modified.

X and y must also live on the network's GPU (ValueError naming the argument and both
GPUs, before any launch): a kernel handed another GPU's pointer would fault or read
garbage. The interface does not say which GPU its pointer belongs to, so the driver is
asked (cuPointerGetAttribute, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL), once per array
per call; numba's own device arrays carry their context, and are asked nothing.
"""
import numpy as np

from .device import on_device


def pointer_device(pointer):
    """The ordinal of the GPU whose memory holds the device address ``pointer``
    (the CUDA driver's CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL), or None where it cannot
    be asked: numba's CUDA simulator, which has no driver and one GPU. ValueError when
    the driver knows no device memory at that address."""
    from numba.cuda.cudadrv import driver
    if not hasattr(driver, "binding"):   # the simulator's stand-in module
        return None
    attribute = driver.binding.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
    try:
        return int(driver.driver.cuPointerGetAttribute(
            attribute, driver.binding.CUdeviceptr(pointer)))
    except driver.CudaAPIError as exc:
        raise ValueError(f"expected device memory, but the CUDA driver knows none at "
                         f"{pointer:#x} ({exc})") from None


def device_of(a):
    """The ordinal of the GPU that holds the device array ``a``, or None when it
    cannot be told (the simulator's arrays; an empty interface, whose pointer is 0)."""
    data = getattr(a, "gpu_data", None)   # numba-cuda's arrays know their context
    context = getattr(data, "context", None)
    if context is not None:
        return context.device.id
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is None or not cai["data"][0]:
        return None
    return pointer_device(cai["data"][0])


def _network_device(net):
    """The ordinal of the GPU holding the network's parameters (the current GPU's in
    the simulator, whose arrays do not say)."""
    found = device_of(net.params)
    if found is None:
        from numba import cuda
        context = cuda.current_context()
        found = getattr(context.device, "id", getattr(context, "id", 0))
    return found


def _check_device(name, a, expected):
    try:
        found = device_of(a)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if found is not None and found != expected:
        raise ValueError(f"{name}: expected a device array on GPU {expected} (where the "
                         f"network lives), got one on GPU {found}; device arrays are "
                         f"used in place, never copied between GPUs")


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
    gpu = _network_device(net)
    _check_device("X", X, gpu)
    _check_device("y", y, gpu)
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
