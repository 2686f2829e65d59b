"""Checks at the API boundary. Kernels trust their callers; these functions make that
trust safe. Each raises TypeError or ValueError naming the argument, what was expected
and what came, and none modifies the array it is given.

Conversion policy (documented in the README): float and integer arrays are converted
(copied) to the network's dtype and to C order; boolean, complex, object and string
arrays are rejected, since no conversion of them is unambiguous.
"""
import numbers

import numpy as np


DTYPES = ("float32", "float64")

# The largest width or batch size the kernels can index: BLAS ?gemm takes every
# dimension and leading dimension as a 32-bit integer (kernels/cpu/blas.py), and CUDA
# grids are sized with 32-bit counts.
MAX_DIMENSION = 2**31 - 1


def _kind_name(arr):
    return f"{arr.dtype} array"


def _as_array(name, value):
    """np.asarray(value), with numpy's own errors (ragged nested lists, objects that
    refuse conversion) re-raised naming the argument."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except ValueError as exc:
        raise ValueError(f"{name}: expected a rectangular array, got a "
                         f"{type(value).__name__} numpy cannot convert ({exc})") from None
    except TypeError as exc:
        raise TypeError(f"{name}: expected an array, got a {type(value).__name__} "
                        f"numpy cannot convert ({exc})") from None


def _finite_cast(name, arr, dtype):
    """``arr`` (real float or integer) as a C-contiguous array of ``dtype``, rejecting
    NaN and infinity in ``arr`` and finite values too large for ``dtype`` (a float64
    1e300 becomes inf in float32: that is reported as such, not as "infinity")."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite values, got NaN or infinity")
    with np.errstate(over="ignore", invalid="ignore"):
        out = canonical(np.ascontiguousarray(arr, dtype=dtype))
    if arr.dtype.kind == "f" and arr.dtype.itemsize > out.dtype.itemsize \
            and not np.isfinite(out).all():
        limit = np.finfo(out.dtype).max
        raise ValueError(f"{name}: expected values within the range of {out.dtype} "
                         f"(|x| <= {limit:.3g}), got values up to "
                         f"{np.abs(arr).max():.3g}")
    return writeable(out)


def canonical(arr):
    """``arr`` (C-contiguous) with exactly the strides of a fresh C-ordered array.

    numpy flags an array C-contiguous whatever the stride of a size-1 axis:
    ``x[None, :]`` has row stride 0, ``X[3:2:-1]`` a negative one and a one-row
    Fortran array the item size. Kernels derive BLAS leading dimensions from the row
    stride, and OpenBLAS skips a product whose leading dimension is illegal (printing
    a warning, leaving the output as it was). Such arrays are therefore copied (they
    have a size-1 axis, so the copy is small).
    """
    item = arr.itemsize
    if arr.ndim == 2:   # the common cases, spelt out: this runs on every step
        expected = (item * arr.shape[1], item)
    elif arr.ndim == 1:
        expected = (item,)
    else:
        expected = tuple(item * int(np.prod(arr.shape[d + 1:])) for d in range(arr.ndim))
    if arr.strides != expected:
        return np.array(arr, order="C", copy=True)
    return arr


def writeable(arr):
    """``arr``, or a copy of it when it is read-only. The kernels never write inputs,
    but numba compiles a separate variant of every kernel for read-only arrays (tens of
    seconds); copying one batch, or an estimator's data set, is far cheaper."""
    return arr if arr.flags.writeable else arr.copy()


def as_float_matrix(name, value, n_features, dtype):
    """``value`` as a C-contiguous (batch, n_features) array of ``dtype``.

    Copies only when the dtype or memory order differs; never returns the caller's
    array if it would need changing, so kernels that write in place never touch it.
    """
    arr = _as_array(name, value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(
            f"{name}: expected a real float or integer array, got {_kind_name(arr)} "
            "(boolean, complex, object and string arrays are not converted)")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (batch, {n_features}), "
                         f"got {arr.ndim}-D with shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty batch, got shape {arr.shape}")
    if arr.shape[0] > MAX_DIMENSION:
        raise ValueError(f"{name}: expected at most {MAX_DIMENSION} rows (2**31 - 1, "
                         f"the largest batch the kernels can index), got {arr.shape[0]}")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name}: expected {n_features} features per row, "
                         f"got shape {arr.shape}")
    return _finite_cast(name, arr, dtype)


class ReadyBatch:
    """The exact form of a minibatch the kernels take, for one network.

    ``ready(X, y)`` gives (X, labels, targets) when X and y already have that form,
    else None. That form: numpy arrays (not subclasses), writeable, with canonical C
    strides (``canonical``); X (batch, n_features) of ``dtype`` with 1 <= batch <=
    MAX_DIMENSION; y (batch,) int64 labels when ``classifier`` (then targets is
    ``no_targets``), else (batch, n_outputs) targets of ``dtype`` (then labels is
    ``no_labels``). Such a batch needs no conversion, only the checks of its values
    (finite X and targets, labels in range), which the caller runs in one compiled
    pass (kernels/cpu/checks.py); anything else goes through ``as_float_matrix`` and
    ``class_labels`` / ``float_targets``, which convert it or raise.

    Looks at types, shapes, strides, dtypes and flags only, with the expected values
    worked out once here: about 0.85 us a call (1.0 us when worked out afresh on every
    call; a 64-64-10 network's step is about 30 us). Strides of two
    entries mean a 2-D array, of one a 1-D one; the row width is compared as well,
    since a column block of a wider array has the strides of a narrower one.
    """

    def __init__(self, n_features, n_outputs, dtype, classifier, no_labels, no_targets):
        self.dtype = np.dtype(dtype)
        item = self.dtype.itemsize
        self.n_features, self.n_outputs = n_features, n_outputs
        self.x_strides = (item * n_features, item)
        self.classifier = classifier
        self.y_dtype = np.dtype(np.int64) if classifier else self.dtype
        self.y_strides = (8,) if classifier else (item * n_outputs, item)
        self.no_labels, self.no_targets = no_labels, no_targets

    def __call__(self, X, y):
        if type(X) is not np.ndarray or type(y) is not np.ndarray:
            return None
        if (X.strides != self.x_strides or X.shape[1] != self.n_features
                or X.dtype != self.dtype or not X.flags.writeable):
            return None
        batch = X.shape[0]
        if (not 0 < batch <= MAX_DIMENSION or y.strides != self.y_strides
                or y.shape[0] != batch or y.dtype != self.y_dtype
                or not y.flags.writeable):
            return None
        if not self.classifier and y.shape[1] != self.n_outputs:
            return None
        if self.classifier:
            return X, y, self.no_targets
        return X, self.no_labels, y


def ready_values_ok(X, labels, n_classes, targets, unit_interval):
    """kernels/cpu/checks.py's ``batch_values_ok`` (same arguments, same answer) in
    numpy, for a batch in ReadyBatch's form: X finite, every label in [0, n_classes),
    targets finite (in [0, 1] when ``unit_interval``).

    For the CUDA networks' host batches: the compiled check is faster per call (a 64 x
    784 batch: about 4 us against 10), but its first call loads numba's CPU target,
    which a process that trains on the GPU would otherwise never load (0.35-0.45 s of a
    new process's first CUDA step on a 2-core machine)."""
    if not np.isfinite(X).all():
        return False
    if labels.shape[0] and not (labels.min() >= 0 and labels.max() < n_classes):
        return False
    if targets.shape[0]:
        if unit_interval:
            return bool(((targets >= 0.0) & (targets <= 1.0)).all())   # False for NaN
        return bool(np.isfinite(targets).all())
    return True


def class_labels(name, value, batch, n_classes):
    """``value`` as a (batch,) int64 array of labels in [0, n_classes)."""
    arr = _as_array(name, value)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError(f"{name}: expected finite class labels, got NaN or infinity")
        if not (arr == np.round(arr)).all():
            raise TypeError(f"{name}: expected integer class labels, got non-integral "
                            f"{arr.dtype} values")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got {_kind_name(arr)}")
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of {batch} class labels, "
                         f"got shape {arr.shape}")
    if arr.shape[0] != batch:
        raise ValueError(f"{name}: expected {batch} labels (one per row of X), "
                         f"got {arr.shape[0]}")
    # Range check before the int64 cast, so a label like 1e20 or 2**64 - 1 is reported
    # as itself rather than as whatever the cast wraps it to.
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        first = arr[bad][0]
        shown = int(first) if arr.dtype.kind in "iu" else float(first)
        raise ValueError(f"{name}: expected class labels in [0, {n_classes}), "
                         f"got {shown!r}")
    return writeable(canonical(np.ascontiguousarray(arr, dtype=np.int64)))


def float_targets(name, value, batch, n_outputs, dtype, unit_interval=False):
    """``value`` as a C-contiguous (batch, n_outputs) array of ``dtype``; a 1-D
    (batch,) array is accepted when n_outputs == 1. ``unit_interval`` requires [0, 1]."""
    arr = _as_array(name, value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a real float or integer array, "
                        f"got {_kind_name(arr)}")
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != n_outputs:
        raise ValueError(f"{name}: expected shape ({batch}, {n_outputs})"
                         + (f" or ({batch},)" if n_outputs == 1 else "")
                         + f", got {np.shape(value)}")
    if arr.shape[0] != batch:
        raise ValueError(f"{name}: expected {batch} rows (one per row of X), "
                         f"got {arr.shape[0]}")
    out = _finite_cast(name, arr, dtype)
    if unit_interval and ((out < 0) | (out > 1)).any():
        raise ValueError(f"{name}: expected targets in [0, 1] for bce_with_logits, "
                         f"got values in [{out.min()}, {out.max()}]")
    return out


def layer_sizes(value):
    """``value`` as a tuple of at least two positive ints."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"sizes: expected a sequence of layer widths like [784, 128, 10], "
                        f"got {value!r}")
    try:
        sizes = list(value)
    except TypeError:
        raise TypeError(f"sizes: expected a sequence of layer widths like [784, 128, 10], "
                        f"got {value!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least two entries (inputs and outputs), "
                         f"got {sizes!r}")
    for s in sizes:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral):
            raise TypeError(f"sizes: expected integer widths, got {s!r} in {sizes!r}")
        if s <= 0:
            raise ValueError(f"sizes: expected positive widths, got {s!r} in {sizes!r}")
        if s > MAX_DIMENSION:
            raise ValueError(f"sizes: expected widths of at most {MAX_DIMENSION} (2**31 - 1, "
                             f"the largest the kernels can index), got {s!r}")
    return tuple(int(s) for s in sizes)


def choice(name, value, valid):
    """``value`` if it is one of the names in ``valid``."""
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"{name}: expected one of {', '.join(valid)}; got {value!r}")
    return value


def dtype_name(value):
    """'float32' or 'float64' from a name, numpy dtype or type."""
    try:
        # np.dtype(None) is float64: None must not silently pick a dtype.
        name = None if value is None else np.dtype(value).name
    except (TypeError, ValueError):
        name = None
    if name not in DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}; got {value!r}")
    return name


def positive_float(name, value):
    """``value`` as a positive finite float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a positive number, got {value!r}")
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return value


def positive_int(name, value):
    """``value`` as a positive int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)
