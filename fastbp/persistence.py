"""Saving and loading networks: one .npz file, no pickle.

A model file is an uncompressed ``numpy.savez`` archive of plain arrays (numeric or
fixed-width unicode), read back with ``allow_pickle=False``:

    format              "fastbp-mlp"                      what the file is
    format_version      int64, FORMAT_VERSION              readers refuse newer files
    sizes               (L+1,) int64 layer widths, inputs first
    activations         (L,) unicode, one activation name per layer (output layer last)
    loss                unicode, one of fastbp.LOSSES
    dtype               unicode, "float32" or "float64"
    leaky_relu_slope    float64
    params              (n_params,) of ``dtype``: the network's flat parameter buffer

and, when an optimizer is saved with it:

    optimizer/<key>     one array per entry of ``optimizer.state_dict()`` (code,
                        name, hparams, state (k, n_params), steps)

Every entry is read and checked (names, shapes, dtypes, the parameter count the layout
implies, finiteness) before a network is built, so a truncated, corrupted (the zip
format's CRC-32 covers every byte of every entry), foreign or newer-version file raises
:class:`ModelFileError` and never yields a half-built network. Parameters go in and come
out bit for bit, so a loaded network predicts exactly what the saved one did.
"""
import os
import zipfile

import numpy as np

from . import validation
from .kernels import codes

FORMAT = "fastbp-mlp"
FORMAT_VERSION = 1

_NETWORK_KEYS = ("format", "format_version", "sizes", "activations", "loss", "dtype",
                 "leaky_relu_slope", "params")
_OPTIMIZER_PREFIX = "optimizer/"


class ModelFileError(ValueError):
    """A file that is not a readable fastbp model (truncated, corrupted, foreign, or
    written by a newer fastbp). Subclass of ValueError."""


def _host(array):
    """A numpy copy of a (possibly device-resident) array."""
    if hasattr(array, "copy_to_host"):
        return array.copy_to_host()
    return np.array(array, copy=True)


def _optimizer_state(optimizer):
    """The optimizer's ``state_dict()`` as a dict of "optimizer/<key>" numpy arrays."""
    state = dict(optimizer.state_dict())
    arrays = {}
    for key, value in state.items():
        arr = _host(value) if hasattr(value, "copy_to_host") else np.asarray(value)
        if arr.dtype.kind not in "biufU":
            raise TypeError(f"optimizer: state entry {key!r} is a {arr.dtype} value; only "
                            "numbers, strings and numeric arrays can be saved without pickle")
        arrays[_OPTIMIZER_PREFIX + str(key)] = arr
    return arrays


def network_to_arrays(net):
    """The network as the dict of plain arrays a model file holds (no optimizer)."""
    return {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION, np.int64),
        "sizes": np.asarray(net.sizes, np.int64),
        "activations": np.array(list(net.activations),
                                dtype=f"<U{max(map(len, codes.ACTIVATIONS))}"),
        "loss": np.array(net.loss),
        "dtype": np.array(np.dtype(net.dtype).name),
        "leaky_relu_slope": np.array(float(net.leaky_relu_slope), np.float64),
        "params": _host(net.params),
    }


def network_from_arrays(arrays, where="arrays", **mlp_kwargs):
    """An MLP from ``network_to_arrays`` output, every entry checked first
    (ModelFileError naming ``where`` otherwise)."""
    kwargs, params, _ = _check_network(where, arrays)
    return _build(where, kwargs, params, mlp_kwargs)


def save(net, path, optimizer=None):
    """Write ``net`` (and ``optimizer``'s state, when given) to the .npz file ``path``.

    ``path`` is used as given (numpy's habit of appending ".npz" is avoided). The file
    is written to a temporary name beside ``path`` and renamed into place, so an
    interrupted save never leaves a truncated file under ``path``.
    """
    if optimizer is not None and getattr(optimizer, "net", net) is not net:
        raise ValueError("optimizer: it was created for a different network")
    arrays = network_to_arrays(net)
    if optimizer is not None:
        arrays.update(_optimizer_state(optimizer))
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


EXPECTED = "expected a fastbp model written by `fastbp train --save` or `MLP.save`"


def unreadable_reason(path, exc):
    """Why numpy could not read the .npz file ``path`` (``exc``), without numpy's
    advice to load it unsafely: fastbp's files never hold pickled objects, and fastbp
    never unpickles any."""
    if not zipfile.is_zipfile(path):
        return "not a .npz archive"
    if "pickle" in str(exc).lower():
        return "it holds pickled Python objects, which fastbp never loads"
    return f"{type(exc).__name__}: {exc}"


def _read_all(path):
    """Every array of the archive, fully read (so CRC checks run on every byte)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError,
            NotImplementedError, UnicodeDecodeError, TypeError) as exc:
        raise ModelFileError(f"{path}: not a readable fastbp model file "
                             f"({unreadable_reason(path, exc)}); {EXPECTED}") from None


def _scalar(path, arrays, key, kind):
    value = arrays[key]
    if value.shape != () or value.dtype.kind not in kind:
        raise ModelFileError(f"{path}: entry {key!r} should be a single "
                             f"{'string' if kind == 'U' else 'number'}, got "
                             f"{value.dtype} of shape {value.shape}")
    return value[()]


def _check_network(path, arrays):
    """Validated keyword arguments of MLP and the parameter array, from the archive."""
    if "format" not in arrays or arrays["format"].dtype.kind != "U" \
            or arrays["format"].shape != () or str(arrays["format"][()]) != FORMAT:
        raise ModelFileError(f"{path}: not a fastbp model file (no '{FORMAT}' format "
                             f"marker); {EXPECTED}")
    if "format_version" not in arrays:
        raise ModelFileError(f"{path}: the format version is missing")
    version = _scalar(path, arrays, "format_version", "iu")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written in model format version {int(version)}, "
                             f"newer than this fastbp reads ({FORMAT_VERSION}); upgrade "
                             "fastbp to load it")
    if version < 1:
        raise ModelFileError(f"{path}: invalid model format version {int(version)}")
    missing = [key for key in _NETWORK_KEYS if key not in arrays]
    if missing:
        raise ModelFileError(f"{path}: missing entries {', '.join(missing)}")

    sizes = arrays["sizes"]
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or sizes.size < 2 \
            or (sizes <= 0).any():
        raise ModelFileError(f"{path}: 'sizes' should be at least two positive integers, "
                             f"got {sizes!r}")
    n_layers = sizes.size - 1
    acts = arrays["activations"]
    if acts.dtype.kind != "U" or acts.shape != (n_layers,):
        raise ModelFileError(f"{path}: 'activations' should be {n_layers} names, got "
                             f"{acts.dtype} of shape {acts.shape}")
    acts = [str(a) for a in acts]
    for a in acts:
        if a not in codes.ACTIVATIONS:
            raise ModelFileError(f"{path}: unknown activation {a!r}")
    loss = str(_scalar(path, arrays, "loss", "U"))
    if loss not in codes.LOSSES:
        raise ModelFileError(f"{path}: unknown loss {loss!r}")
    if loss == "softmax_cross_entropy" and sizes[-1] < 2:
        raise ModelFileError(f"{path}: softmax_cross_entropy with {int(sizes[-1])} output")
    dtype = str(_scalar(path, arrays, "dtype", "U"))
    if dtype not in validation.DTYPES:
        raise ModelFileError(f"{path}: unsupported dtype {dtype!r}")
    slope = float(_scalar(path, arrays, "leaky_relu_slope", "f"))
    if not (np.isfinite(slope) and slope > 0):
        raise ModelFileError(f"{path}: invalid leaky_relu_slope {slope!r}")

    n_params = int(np.sum(sizes[1:] * sizes[:-1]) + np.sum(sizes[1:]))
    params = arrays["params"]
    if params.dtype != np.dtype(dtype) or params.shape != (n_params,):
        raise ModelFileError(f"{path}: 'params' should be ({n_params},) {dtype} for sizes "
                             f"{sizes.tolist()}, got {params.dtype} of shape "
                             f"{params.shape}")
    if not np.isfinite(params).all():
        raise ModelFileError(f"{path}: 'params' holds NaN or infinity")
    kwargs = dict(sizes=[int(s) for s in sizes], activation=acts[:-1],
                  output_activation=acts[-1], loss=loss, dtype=dtype,
                  leaky_relu_slope=slope)
    return kwargs, params, n_params


def _check_optimizer(path, arrays, n_params, dtype):
    state = {key[len(_OPTIMIZER_PREFIX):]: value for key, value in arrays.items()
             if key.startswith(_OPTIMIZER_PREFIX)}
    for key, value in state.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ModelFileError(f"{path}: optimizer entry {key!r} holds NaN or infinity")
    if "state" in state:
        rows = state["state"]
        if rows.ndim != 2 or rows.shape[1] != n_params or rows.dtype != np.dtype(dtype):
            raise ModelFileError(f"{path}: optimizer 'state' should be (k, {n_params}) "
                                 f"{dtype}, got {rows.dtype} of shape {rows.shape}")
    # 0-d entries come back as Python scalars (str, int, float), arrays as arrays.
    return {key: (value[()].item() if value.ndim == 0 and value.dtype.kind != "U"
                  else str(value[()]) if value.ndim == 0 else value)
            for key, value in state.items()}


def _build(where, kwargs, params, mlp_kwargs):
    from .network import MLP
    try:
        net = MLP(seed=0, **kwargs, **mlp_kwargs)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{where}: invalid network description ({exc})") from None
    if hasattr(net.params, "copy_to_device"):   # a network on the GPU
        net.params.copy_to_device(params)
    else:
        net.params[...] = params
    return net


def load(path, with_optimizer=False, **mlp_kwargs):
    """The network saved in ``path`` by :meth:`fastbp.MLP.save` / :func:`save`.

    Returns an :class:`fastbp.MLP` whose parameters are bit-identical to the saved
    ones, so it predicts exactly what the saved network did. With
    ``with_optimizer=True`` returns ``(net, optimizer)``: the saved optimizer rebuilt
    for ``net`` (same kind, hyperparameters, state and step count, via
    ``fastbp.optim.optimizer_from_state_dict``), or None when the file holds none.
    Extra keyword arguments go to ``MLP`` (for example ``device=``).

    Raises :class:`ModelFileError` (a ValueError) for a file that is truncated,
    corrupted, not a fastbp model, or written in a newer format version, after
    checking every entry and before anything is returned; FileNotFoundError when there
    is no such file.

    Example::

        net.save("digits.npz", optimizer=opt)
        net2, opt2 = fastbp.load("digits.npz", with_optimizer=True)
    """
    path = os.fspath(path)
    arrays = _read_all(path)
    kwargs, params, n_params = _check_network(path, arrays)
    opt_state = None
    if any(key.startswith(_OPTIMIZER_PREFIX) for key in arrays):
        opt_state = _check_optimizer(path, arrays, n_params, kwargs["dtype"])
    net = _build(path, kwargs, params, mlp_kwargs)
    if not with_optimizer:
        return net
    if opt_state is None:
        return net, None
    from .optim import optimizer_from_state_dict
    try:
        optimizer = optimizer_from_state_dict(net, opt_state)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: invalid optimizer state ({type(exc).__name__}: "
                             f"{exc})") from None
    return net, optimizer
