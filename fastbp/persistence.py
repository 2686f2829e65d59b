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
implies, finiteness, the optimizer's settings through its constructor) before a network
is built, so a truncated, corrupted (the zip format's CRC-32 covers every byte of every
entry), foreign or newer-version file raises :class:`ModelFileError` and never yields a
half-built network. Parameters go in and come out bit for bit, so a loaded network
predicts exactly what the saved one did.

Crafted files are refused from what the zip directory and the .npy headers declare,
before any large read or allocation: encrypted or unknown entries, declared sizes that
the entry's bytes in the file cannot hold (deflate expands at most about 1032 times),
description entries over ``_MAX_SMALL_ENTRY`` bytes, and parameter or optimizer entries
whose declared shape or size differs from what the description implies. So reading a
file never takes more memory than about its own size (the network it describes) needs.

Saving is atomic: the archive is written to a fresh temporary file beside the target
(``.NAME.fastbp-tmp.HOST.PID.XXXXXXXX``), flushed and fsynced, then renamed over the
target, so a reader, a concurrent save or a crash never sees a partial file. The
temporary file is removed on every failure; one left by a killed process is removed by
the next save to the same target once that process is gone.
"""
import errno
import os
import re
import socket
import stat
import tempfile
import zipfile

import numpy as np
from numpy.lib import format as npy_format

from . import validation
from .kernels import codes

FORMAT = "fastbp-mlp"
FORMAT_VERSION = 1

_NETWORK_KEYS = ("format", "format_version", "sizes", "activations", "loss", "dtype",
                 "leaky_relu_slope", "params")
_OPTIMIZER_PREFIX = "optimizer/"
_OPTIMIZER_KEYS = ("code", "name", "hparams", "state", "steps")   # Optimizer.state_dict()
# The entries whose size the description fixes; every other entry is small.
_LARGE_ENTRIES = ("params", _OPTIMIZER_PREFIX + "state")
_MAX_SMALL_ENTRY = 1 << 20   # bytes; 'sizes' of 100,000 layers is 0.8 MB
_MAX_DEFLATE_RATIO = 1032    # deflate's largest expansion (258-byte matches in 2 bits)
_TEMP_MARK = ".fastbp-tmp."


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


def _check_finite(arrays):
    """ValueError when a float entry holds NaN or infinity: ``load`` refuses such
    files, so ``save`` must not write them."""
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            what = ("net.params" if key == "params"
                    else f"optimizer {key[len(_OPTIMIZER_PREFIX):]!r}")
            raise ValueError(f"{what}: expected finite values, got {bad} NaN or infinite "
                             f"of {value.size}; nothing was saved (the training diverged?)")


def _umask():
    """The process's umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _IMPORT_UMASK


# os.umask can only be read by setting it, which races with threads creating files;
# at import no fastbp thread exists yet. Used where /proc/self/status is missing.
_IMPORT_UMASK = os.umask(0o022)
os.umask(_IMPORT_UMASK)


def _temp_prefix(target):
    """``.NAME.fastbp-tmp.HOST.PID.``: hidden, tied to the target, and naming the
    writer, so that a later save can tell a dead writer's leftover from a live one."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return f".{os.path.basename(target)}{_TEMP_MARK}{host}.{os.getpid()}."


def _remove_dead_temps(target):
    """Remove temporary files of saves to ``target`` whose process (on this host) no
    longer exists: a save killed with SIGKILL leaves its temporary file behind. Files of
    live processes, of other hosts, or of unknown form are left alone. POSIX only
    (elsewhere os.kill cannot ask whether a process exists)."""
    if os.name != "posix":
        return
    folder = os.path.dirname(target)
    mark = f".{os.path.basename(target)}{_TEMP_MARK}"
    host = _temp_prefix(target)[len(mark):].split(".")[0]
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.startswith(mark):
            continue
        parts = name[len(mark):].split(".")
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid():
            continue   # another thread of this process may be writing it
        try:
            os.kill(pid, 0)
            continue   # alive (or not ours to signal): maybe still writing
        except ProcessLookupError:
            pass
        except OSError:
            continue
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            pass


def _target(path):
    """The file a save to ``path`` writes: symlinks resolved (a link is written
    through, not replaced)."""
    return os.path.realpath(os.fspath(path))


def _path_error(exc, path):
    """``exc`` (an OSError from the temporary file) re-raised naming ``path``."""
    return type(exc)(exc.errno, f"cannot write a file there ({exc.strerror})",
                     os.fspath(path))


def check_writable(path):
    """Raise OSError (naming ``path``) unless a file can be written at ``path`` (a
    model file saved, a plot drawn): its folder exists and a file can be created in it
    (tried, so permissions, read-only file systems and root are all accounted for), and
    ``path`` is not a folder. The command line calls this before training, not after."""
    target = _target(path)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, "is a directory, expected a file path",
                                os.fspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target),
                                   dir=os.path.dirname(target))
    except OSError as exc:
        raise _path_error(exc, path) from None
    os.close(fd)
    os.remove(tmp)


def save(net, path, optimizer=None):
    """Write ``net`` (and ``optimizer``'s state, when given) to the .npz file ``path``.

    ``path`` is used as given (numpy's habit of appending ".npz" is avoided); a symlink
    is written through. The save is atomic: the archive goes to a unique temporary file
    in the target's folder, is flushed and fsynced, and is renamed over the target, so
    ``path`` always holds either the old file or the whole new one, whatever other
    threads or processes write there at the same time; the temporary file is removed on
    every failure. An existing target keeps its permission bits; a new one gets the
    usual 0666 minus the umask.

    Raises ValueError when the parameters or the optimizer state hold NaN or infinity
    (``load`` would refuse the file), or when ``optimizer`` belongs to another
    network; OSError naming ``path`` when it cannot be written.
    """
    if optimizer is not None and getattr(optimizer, "net", net) is not net:
        raise ValueError("optimizer: it was created for a different network")
    arrays = network_to_arrays(net)
    if optimizer is not None:
        arrays.update(_optimizer_state(optimizer))
    _check_finite(arrays)
    target = _target(path)
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise _path_error(exc, path) from None
    mode = (stat.S_IMODE(existing.st_mode) if existing is not None
            else 0o666 & ~_umask())
    _remove_dead_temps(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target),
                                   dir=os.path.dirname(target))
    except OSError as exc:
        raise _path_error(exc, path) from None
    done = False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)   # mkstemp made it 0600
        os.replace(tmp, target)
        done = True
    except OSError as exc:
        raise _path_error(exc, path) from None
    finally:
        if not done:
            try:
                os.remove(tmp)
            except OSError:
                pass
    _sync_folder(os.path.dirname(target))


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


def _sync_folder(folder):
    """fsync the folder so the rename itself survives a power cut (POSIX; a no-op
    where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- reading -------------------------------------------------------------------------
def _bad(path, message):
    return ModelFileError(f"{path}: {message}")


def _entries(path, archive):
    """{key: ZipInfo} of the archive, after the checks that need no entry data."""
    file_size = os.fstat(archive.fp.fileno()).st_size if hasattr(archive.fp, "fileno") \
        else None
    if "format.npy" not in archive.namelist():
        raise _bad(path, f"not a fastbp model file (no '{FORMAT}' format marker); "
                         f"{EXPECTED}")
    entries = {}
    for info in archive.infolist():
        name = info.filename
        if info.flag_bits & 0x1:
            raise _bad(path, f"entry {name!r} is encrypted; fastbp model files never are")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _bad(path, f"entry {name!r} uses zip compression method "
                             f"{info.compress_type}; only stored and deflated are read")
        if not name.endswith(".npy"):
            raise _bad(path, f"unexpected entry {name!r} (not a .npy array)")
        key = name[:-4]
        known = key in _NETWORK_KEYS or (key.startswith(_OPTIMIZER_PREFIX) and
                                         key[len(_OPTIMIZER_PREFIX):] in _OPTIMIZER_KEYS)
        if not known:
            raise _bad(path, f"unexpected entry {name!r}")
        if key in entries:
            raise _bad(path, f"entry {name!r} appears twice")
        # What the file can hold: the entry's stored bytes must lie inside the file, and
        # deflate cannot expand them more than _MAX_DEFLATE_RATIO times.
        if file_size is not None and info.header_offset + info.compress_size > file_size:
            raise _bad(path, f"entry {name!r} declares {info.compress_size} stored bytes, "
                             f"more than the {file_size}-byte file holds (truncated?)")
        limit = (info.compress_size if info.compress_type == zipfile.ZIP_STORED
                 else _MAX_DEFLATE_RATIO * info.compress_size + 1024)
        if info.file_size > limit:
            raise _bad(path, f"entry {name!r} declares {info.file_size} bytes, more than "
                             f"its {info.compress_size} stored bytes can hold")
        if key not in _LARGE_ENTRIES and info.file_size > _MAX_SMALL_ENTRY:
            raise _bad(path, f"entry {name!r} declares {info.file_size} bytes; a "
                             f"description entry has at most {_MAX_SMALL_ENTRY}")
        entries[key] = info
    return entries


def _read_entry(path, archive, info, expect=None):
    """One .npy entry as an array, its header checked before its data is read.

    ``expect``: None, or (dtype, shape-check, what) where shape-check(shape) says
    whether the declared shape is the one the description implies (``what``, in
    words); either way the data must be exactly what the header declares, so nothing
    larger is ever allocated.
    """
    name = info.filename
    with archive.open(info) as f:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        if dtype.hasobject or dtype.kind not in "biufU":
            raise _bad(path, f"entry {name!r} holds {dtype} values; model files hold "
                             "only numbers and strings")
        count = 1
        for n in shape:
            count *= int(n)   # Python integers: no overflow
        nbytes = count * dtype.itemsize
        if expect is not None:
            want_dtype, shape_ok, what = expect
            if dtype != want_dtype or not shape_ok(shape):
                raise _bad(path, f"entry {name!r} declares {dtype} of shape {shape}; "
                                 f"the network description implies {want_dtype} of "
                                 f"shape {what}")
        if f.tell() + nbytes != info.file_size:
            raise _bad(path, f"entry {name!r} declares shape {shape} of {dtype} "
                             f"({nbytes} bytes), but holds {info.file_size - f.tell()}")
        data = f.read(nbytes)
        f.read(1)   # reach the end of the entry, where zipfile checks the CRC-32
    array = np.frombuffer(data, dtype=dtype, count=count)
    if fortran:
        return array.reshape(shape[::-1]).T.copy()
    return array.reshape(shape).copy()


def _open_model(path, read):
    """``read(archive, entries)`` on the zip archive at ``path``, with every format
    error turned into ModelFileError."""
    try:
        with zipfile.ZipFile(path) as archive:
            return read(archive, _entries(path, archive))
    except (FileNotFoundError, IsADirectoryError, PermissionError, ModelFileError):
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, OverflowError,
            NotImplementedError, UnicodeDecodeError, TypeError, RuntimeError) as exc:
        # (No MemoryError: the headers are checked first, so one can only come from a
        # network too large for this machine, which is not a fault of the file.)
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
    """Validated keyword arguments of MLP, the parameter array and the parameter count,
    from the arrays of a model file."""
    kwargs, n_params = _check_description(path, arrays)
    if "params" not in arrays:
        raise ModelFileError(f"{path}: missing entries params")
    params = _check_params(path, arrays["params"], n_params, kwargs["dtype"])
    return kwargs, params, n_params


def _check_description(path, arrays):
    """Validated keyword arguments of MLP and the parameter count they imply, from
    every entry but the parameters."""
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
    missing = [key for key in _NETWORK_KEYS if key not in arrays and key != "params"]
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

    widths = [int(s) for s in sizes]
    # Python integers: a crafted layout such as [3, 2**62 + 1] must not wrap around.
    n_params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    kwargs = dict(sizes=widths, activation=acts[:-1], output_activation=acts[-1],
                  loss=loss, dtype=dtype, leaky_relu_slope=slope)
    return kwargs, n_params


def _check_params(path, params, n_params, dtype):
    if params.dtype != np.dtype(dtype) or params.shape != (n_params,):
        raise ModelFileError(f"{path}: 'params' should be ({n_params},) {dtype} for the "
                             f"saved sizes, got {params.dtype} of shape {params.shape}")
    if not np.isfinite(params).all():
        raise ModelFileError(f"{path}: 'params' holds NaN or infinity")
    return params


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
    kwargs, params, n_params, opt_state = _open_model(path, _read_model)
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


def _read_model(archive, entries):
    """(MLP kwargs, params, n_params, optimizer state dict or None) from an open model
    archive: the description first, then the large entries, each only after its header
    matched the shape the description implies."""
    path = archive.filename
    arrays = {key: _read_entry(path, archive, info) for key, info in entries.items()
              if key not in _LARGE_ENTRIES}
    kwargs, n_params = _check_description(path, arrays)
    dtype = np.dtype(kwargs["dtype"])
    if "params" not in entries:
        raise ModelFileError(f"{path}: missing entries params")
    params = _read_entry(path, archive, entries["params"],
                         (dtype, lambda shape: shape == (n_params,), f"({n_params},)"))
    params = _check_params(path, params, n_params, dtype)
    state_key = _OPTIMIZER_PREFIX + "state"
    if state_key in entries:
        # (k, n_params) with k one of the optimizers' row counts (at most 3).
        arrays[state_key] = _read_entry(
            path, archive, entries[state_key],
            (dtype, lambda shape: len(shape) == 2 and shape[0] <= 3
             and shape[1] == n_params, f"(k, {n_params}) with k <= 3"))
    opt_state = None
    if any(key.startswith(_OPTIMIZER_PREFIX) for key in arrays):
        opt_state = _check_optimizer(path, arrays, n_params, kwargs["dtype"])
    return kwargs, params, n_params, opt_state
