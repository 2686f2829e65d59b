"""Where a network lives: device names, CUDA availability, host <-> device copies.

``device="cpu"`` (numpy arrays, the ``@njit`` kernels) or ``device="cuda"`` (numba.cuda
device arrays, the kernels in ``fastbp.kernels.cuda``). Nothing here imports numba.cuda
until a CUDA network is asked for, so ``import fastbp`` never needs CUDA.

Getting numpy copies of device arrays: ``fastbp.device.to_host(net.params)`` (or
``net.layers[0].W.copy_to_host()``, numba's own method); ``net.to("cpu")`` moves a
whole network back.
"""
import importlib.util
import os
import shutil
import threading
import time

import numpy as np

from . import aligned
from .validation import canonical

DEVICES = ("cpu", "cuda")

# The one install hint for the GPU path, used in every message and skip reason. It works
# from a clone (run in fastbp's folder); the NVIDIA driver comes from the system.
INSTALL_COMMAND = 'pip install -e ".[cuda]"'
INSTALL_HINT = f'GPU support: {INSTALL_COMMAND} in fastbp\'s folder (plus an NVIDIA driver)'


class CudaUnavailableError(RuntimeError):
    """device="cuda" was asked for where no GPU can be used; the message says why."""


def normalize(device):
    """"cpu" or "cuda" from a device name (case-insensitive); anything else is a
    ValueError, as the command line refuses it."""
    if not isinstance(device, str):
        raise TypeError(f"device: expected 'cpu' or 'cuda', got {type(device).__name__}")
    name = device.strip().lower()
    if name not in DEVICES:
        raise ValueError(f"device: expected one of {DEVICES}, got {device!r}")
    return name


def simulator_enabled():
    """True when numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1)."""
    try:
        import numba
        return bool(numba.config.ENABLE_CUDASIM)
    except Exception:   # pragma: no cover - numba is a dependency
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def cuda_package():
    """Which numba.cuda is importable: "numba-cuda" (the maintained package), "numba"
    (numba's deprecated built-in one) or None."""
    if importlib.util.find_spec("numba_cuda") is not None:
        return "numba-cuda"
    if importlib.util.find_spec("numba.cuda") is not None:
        return "numba"
    return None


def numpy_compat():
    """Restore ``numpy.row_stack`` (an alias of vstack) where numpy 2.5 removed it:
    numba-cuda up to 0.30.4 overloads it while loading its CUDA typing registry, so
    without it every kernel fails to compile (AttributeError deep inside numba). Called
    before numba.cuda is imported; a no-op on numpy versions that have it."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


_probe = None


def compile_probe():
    """(ok, reason): whether numba-cuda compiles a trivial kernel to PTX here (NVVM
    only, no GPU needed; about a second, once per process)."""
    global _probe
    if _probe is None:
        try:
            numpy_compat()
            from numba import cuda

            def probe(x):
                x[0] = x[0] + 1.0
            cuda.compile_ptx(probe, "void(float32[:])", cc=(7, 5))
            _probe = (True, "")
        except Exception as exc:
            _probe = (False, f"numba-cuda cannot compile kernels here ({_short(exc)}; "
                             f"{_versions()}): upgrade numba-cuda, or install numpy<2.5")
    return _probe


def _probe_beside(open_context):
    """(compile_probe's result, open_context's exception or None): the probe on a
    thread of its own while the calling thread runs ``open_context``.

    Why: a new process's first CUDA network waits for both. Creating the GPU's context
    is driver work that releases the GIL (on an H200, importing numba.cuda and creating
    the context took 0.41 s together: benchmarks/README.md "The GPU step on an H200,
    second session"); the probe is Python work (numba-cuda loads its typing and target
    registries, which the cached kernels need too; the whole construction took 0.29 s
    there). Run one after the other they add up; side by side the first step waits for
    about the longer one. Not quite: numba-cuda makes a dozen or more driver calls with
    Python between them, and each time it comes back from one it may wait for the GIL
    while the probe holds it (up to the interpreter's switch interval, 5 ms). A model
    of that with the driver stubbed still gained (benchmarks/README.md, "A new
    process's first CUDA step"); a GPU run times both ways
    (benchmarks/cuda_first_step.py --compare-serial), and FASTBP_CUDA_PROBE_THREAD=0
    runs them in turn.

    The context stays the calling thread's affair, created as numba-cuda creates it
    there (its per-thread state, cuda.core's included, is what it would be without
    fastbp); only the NVVM compile, which needs no GPU, moves. The first call opens the
    context even where the probe then fails (the two run at once); a later call, with
    the probe's failure known, opens none. Where the probe ran before in this process,
    or no thread can be started, the two run in turn. ``startup`` records the seconds
    each took the time the probe ran, for benchmarks/cuda_first_step.py."""
    first = _probe is None
    if not first and not _probe[0]:
        return _probe, None
    probing = None
    if first and os.environ.get("FASTBP_CUDA_PROBE_THREAD", "1").strip() != "0":
        probing = threading.Thread(target=_timed, args=("probe", compile_probe),
                                   name="fastbp-cuda-probe", daemon=True)
        try:
            probing.start()
        except Exception:   # no thread to be had: the probe runs after the context
            probing = None
    failed = None
    try:
        if first:
            _timed("context", open_context)
        else:
            open_context()
    except Exception as exc:   # said by the caller, after the probe's own verdict
        failed = exc
    if probing is not None:
        probing.join()
    elif first:
        _timed("probe", compile_probe)
    return compile_probe(), failed


# seconds of a process's CUDA start-up, for benchmarks/cuda_first_step.py, in order:
# "import" (numba.cuda) and "driver" (its initialisation), each at the first
# cuda_status call that is not the simulator's (about 0 where something did them
# before), then "context" and "probe" (where the probe ran: _probe_beside)
startup = {}


def _timed(name, work):
    """``work()``, its seconds recorded as ``startup[name]`` (also when it raises)."""
    begin = time.perf_counter()
    try:
        return work()
    finally:
        startup[name] = time.perf_counter() - begin


def _timed_once(name, work):
    """``_timed`` the first time ``name`` is timed in this process; later calls just
    return ``work()``."""
    if name in startup:
        return work()
    return _timed(name, work)


def _import_numba_cuda():
    import numba.cuda
    return numba.cuda


def _versions():
    import importlib.metadata as md
    found = []
    for name in ("numpy", "numba", "numba-cuda"):
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(found)


def cuda_status():
    """(usable, reason): whether CUDA kernels can run here, and why not (one short
    sentence; ``require`` adds the install hint)."""
    numpy_compat()
    if simulator_enabled():
        try:
            import numba.cuda  # noqa: F401
        except Exception as exc:
            return False, (f"numba's CUDA simulator is on but numba.cuda failed to import "
                           f"({_short(exc)})")
        return True, "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correct but slow"
    package = cuda_package()
    if package is None:
        return False, "numba-cuda is not installed"
    try:
        # timed for benchmarks/cuda_first_step.py: the first call pays the import
        # (on this project's 2-core machine 0.2 s without ml_dtypes, 0.8 s with it:
        # numba-cuda imports it where installed, e.g. beside JAX, for bfloat16)
        cuda = _timed_once("import", _import_numba_cuda)
    except Exception as exc:
        return False, f"numba.cuda failed to import ({_short(exc)})"
    try:
        # the driver's initialisation (cuInit) happens here, before the context
        if _timed_once("driver", cuda.is_available):
            (ok, reason), failed = _probe_beside(cuda.current_context)
            if not ok:
                return False, reason
            if failed is not None:
                return False, f"could not create a CUDA context ({_short(failed)})"
            return True, f"{_gpu_name(cuda)} via {package}"
    except Exception as exc:
        return False, f"the CUDA driver failed ({_short(exc)})"
    detail = _driver_error(cuda)
    if detail:
        if "cannot be found" in detail or "not found" in detail:
            return False, "no NVIDIA driver found"
        return False, f"the CUDA driver failed to initialise ({_short(detail)})"
    return False, ("the CUDA driver reports no usable GPU (none present, or none visible "
                   "through CUDA_VISIBLE_DEVICES)")


def _short(error, limit=80):
    """The first sentence of an error, at most ``limit`` characters."""
    text = _one_line(error if isinstance(error, str)
                     else f"{type(error).__name__}: {error}")
    text = text.split(". ")[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _gpu_name(cuda):
    try:
        name = cuda.get_current_device().name
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return "a CUDA GPU"


def _driver_error(cuda):
    try:
        from numba.cuda.cudadrv.driver import driver
        err = getattr(driver, "initialization_error", None)
        return str(err) if err else ""
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _one_line(text):
    return " ".join(str(text).split())


def nvidia_smi_lists_gpu():
    """True when ``nvidia-smi -L`` runs and lists at least one GPU."""
    import subprocess
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except Exception:
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def require(device):
    """Normalise ``device`` and, for "cuda", raise CudaUnavailableError unless usable."""
    device = normalize(device)
    if device == "cuda":
        usable, reason = cuda_status()
        if not usable:
            raise CudaUnavailableError(f'device="cuda" is not available: {reason}. '
                                       f'{INSTALL_HINT}; or use device="cpu"')
    return device


def kernels(device):
    """The kernel module of ``device``: fastbp.kernels.cpu or fastbp.kernels.cuda."""
    if device == "cuda":
        numpy_compat()
        from .kernels import cuda as cuda_kernels
        return cuda_kernels
    from .kernels import cpu as cpu_kernels
    return cpu_kernels


def is_device_array(a):
    """True for numba.cuda device arrays (and the simulator's stand-ins)."""
    # isinstance first: a failed hasattr costs an exception (0.2 us on every step)
    return not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host")


def on_device(a):
    """True for arrays that live on a GPU: numba.cuda device arrays and anything
    exposing ``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors)."""
    return is_device_array(a) or (hasattr(a, "__cuda_array_interface__")
                                  and not isinstance(a, np.ndarray))


def to_host(a):
    """A numpy copy of a device array; numpy arrays pass through unchanged."""
    return a.copy_to_host() if is_device_array(a) else a


def to_device(a):
    """A new device array holding a copy of the numpy array ``a``."""
    from numba import cuda
    return cuda.to_device(canonical(np.ascontiguousarray(a)))


def upload(dst, src):
    """Copy the host array ``src`` into the C-contiguous device array ``dst`` of the
    same size and dtype (converted and made contiguous first when needed). Unlike
    numba's ``copy_to_device`` it makes no device-array views (that costs three per
    call, tens of microseconds each): the launch plan's per-step input copy."""
    src = np.ascontiguousarray(src, dtype=dst.dtype)
    if src.nbytes != dst.nbytes:
        raise ValueError(f"upload: expected {dst.nbytes} bytes for a device array of "
                         f"shape {dst.shape}, got an array of shape {src.shape}")
    if _simulated():
        dst.copy_to_device(src.reshape(dst.shape))
        return
    from numba.cuda.cudadrv import driver
    driver.host_to_device(dst, src, src.nbytes)


def _simulated():
    """numba's simulator flag, read once (it cannot change after numba is imported)."""
    global _SIMULATED
    if _SIMULATED is None:
        _SIMULATED = simulator_enabled()
    return _SIMULATED


_SIMULATED = None


def download(dst, src):
    """Copy the device array ``src`` into the C-contiguous host array ``dst`` of the
    same size and dtype; like ``upload``, without numba's per-call views."""
    if src.nbytes != dst.nbytes or not dst.flags.c_contiguous:
        raise ValueError(f"download: expected a C-contiguous array of {src.nbytes} bytes, "
                         f"got shape {dst.shape} of {dst.dtype}")
    if _simulated():
        dst[...] = src.copy_to_host().reshape(dst.shape)
        return
    from numba.cuda.cudadrv import driver
    driver.device_to_host(dst, src, dst.nbytes)


_copy_stream = None   # fastbp's own stream for uploads (PinnedBatches), made on first use


def copy_stream():
    """The stream fastbp's asynchronous uploads run on: non-blocking, so its copies
    overlap the kernels queued on the default stream (a numba ``cuda.stream()`` would
    synchronise with the default stream and overlap nothing). One per process, made on
    first use; ordering against the kernels is by events (``PinnedBatches``)."""
    global _copy_stream
    if _copy_stream is None:
        from numba import cuda
        from numba.cuda.cudadrv import driver
        flags = driver.binding.CUstream_flags.CU_STREAM_NON_BLOCKING.value
        handle = driver.driver.cuStreamCreate(flags)
        _copy_stream = (handle, cuda.external_stream(int(handle)))   # handle kept: owned
    return _copy_stream[1]


class PinnedBatches:
    """Double-buffered, asynchronous uploads of host minibatches (``train_step`` on
    device="cuda" with host arrays), overlapping the step before.

    Two slots, used in turn, each a set of device buffers (X, labels, targets), the
    same set of page-locked (pinned) host buffers and two events. ``put`` copies the
    host arrays into its slot's pinned buffers (a host memcpy: the caller may reuse its
    arrays at once) and queues their copies to the slot's device buffers on fastbp's
    own copy stream (``copy_stream``), then makes the default stream, where the
    kernels run, wait for those copies. So the upload of step t+1's batch runs while
    step t computes, and the host does not wait for either.

    Ordering, by events only (no host synchronisation):

    - the copy into slot k waits for ``free[k]``, recorded on the default stream at
      the previous ``put``, i.e. after every step launched before it, including the
      last step that read slot k (two steps back), but not the step launched since,
      which reads the other slot and keeps running beside the copy;
    - the default stream waits for ``copied[k]`` before the step that follows ``put``;
    - before the slot's pinned buffers are refilled the host waits for ``copied[k]``
      of two steps back: the copy reads pinned memory until it has finished.

    Each slot's device buffers stay the same arrays, so a launch plan keeps one CUDA
    graph per slot. In numba's CUDA simulator the copies are synchronous.
    """

    SLOTS = 2

    def __init__(self, batch, n_in, n_out, dtype, has_labels, has_targets):
        from numba import cuda
        dtype = np.dtype(dtype)
        shapes = (((batch, n_in), dtype), (batch if has_labels else 0, np.int64),
                  ((batch if has_targets else 0, n_out), dtype))

        def pinned(shape, t):   # the driver refuses to pin 0 bytes (null pointer)
            size = int(np.prod(shape))
            return cuda.pinned_array(shape, t) if size else np.empty(shape, t)

        def event():   # the simulator's events take no timing flag (and time nothing)
            return cuda.event() if _simulated() else cuda.event(timing=False)

        self._slots = [(tuple(cuda.device_array(shape, t) for shape, t in shapes),
                        tuple(pinned(shape, t) for shape, t in shapes), event(), event())
                       for _ in range(self.SLOTS)]
        self._turn = 0
        self._copied = [False] * self.SLOTS   # copied[k] recorded (a copy in flight)
        self._freed = [False] * self.SLOTS    # free[k] recorded
        self._streams = None

    def put(self, X, labels, targets):
        """The device arrays (X, labels, targets), which will hold copies of the host
        arrays when the next kernel launched on the default stream runs (labels or
        targets empty where there are none); conversions as ``upload``'s."""
        k = self._turn
        other = (k + 1) % self.SLOTS
        self._turn = other
        devices, hosts, copied, free = self._slots[k]
        if self._copied[k]:
            copied.synchronize()   # the slot's copy of two steps back has finished
        if _simulated():
            for host, dev, src in zip(hosts, devices, (X, labels, targets)):
                if host.size:
                    host[...] = src
                    dev.copy_to_device(host)
            return devices
        from numba import cuda
        from numba.cuda.cudadrv import driver
        if self._streams is None:
            self._streams = (cuda.default_stream(), copy_stream())
        default, copies = self._streams
        # every step launched so far, the last one to read the other slot included
        self._slots[other][3].record(default)
        self._freed[other] = True
        if self._freed[k]:
            free.wait(copies)
        for host, dev, src in zip(hosts, devices, (X, labels, targets)):
            if host.size:
                host[...] = src
                driver.host_to_device(dev, host, host.nbytes, stream=copies)
        copied.record(copies)
        copied.wait(default)
        self._copied[k] = True
        return devices


def empty(shape, dtype, device):
    """An uninitialised array on ``device``."""
    if device == "cuda":
        from numba import cuda
        return cuda.device_array(shape, dtype=np.dtype(dtype))
    return aligned.empty(shape, dtype)   # on a cache line: fastbp/aligned.py


def zeros(shape, dtype, device):
    """A zero-filled array on ``device``."""
    if device == "cuda":
        return to_device(np.zeros(shape, dtype))
    return aligned.zeros(shape, dtype)


def move(a, device):
    """``a`` as an array on ``device``, copied only when it lives elsewhere (to the host
    into a buffer on a cache line, fastbp/aligned.py)."""
    if device == "cuda":
        return a if is_device_array(a) else to_device(a)
    if is_device_array(a):
        host = aligned.empty(a.shape, a.dtype)
        a.copy_to_host(host)
        return host
    return a


def copy_into(dst, src):
    """Copy ``src`` (numpy or device array, same shape) into ``dst`` (either kind)."""
    if is_device_array(dst):
        if is_device_array(src):
            dst.copy_to_device(src)
        else:
            dst.copy_to_device(canonical(np.ascontiguousarray(src, dtype=dst.dtype)))
    else:
        dst[...] = to_host(src)


class Staging:
    """Device buffers the host's minibatches are copied into (grown to the largest
    batch seen, reused after), plus float64 partial sums for the launch plan's gradient
    norm (fastbp.cuda_plan; the kernels' launchers keep their own)."""

    def __init__(self, n_in, n_out, dtype):
        self.n_in, self.n_out = n_in, n_out
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.X = self.labels = self.targets = None
        from .kernels.cuda import config
        self.partials = empty(max(config.max_reduce_blocks, 256), np.float64, "cuda")

    def put(self, X, labels, targets):
        """Device views holding copies of the host arrays (labels/targets may be empty)."""
        batch = X.shape[0]
        if is_device_array(X):   # already on the device: used as it is
            return X, move(labels, "cuda"), move(targets, "cuda")
        if batch > self.rows:
            self.X = empty(batch * self.n_in, self.dtype, "cuda")
            self.labels = empty(batch, np.int64, "cuda")
            self.targets = empty(batch * self.n_out, self.dtype, "cuda")
            self.rows = batch
        dX = self.X[:batch * self.n_in].reshape(batch, self.n_in)
        dX.copy_to_device(np.ascontiguousarray(X, dtype=self.dtype))
        d_labels = self.labels[:0]
        if labels.size:
            d_labels = self.labels[:batch]
            d_labels.copy_to_device(np.ascontiguousarray(labels, dtype=np.int64))
        d_targets = self.targets[:0].reshape(0, self.n_out)
        if targets.size:
            d_targets = self.targets[:batch * self.n_out].reshape(batch, self.n_out)
            d_targets.copy_to_device(np.ascontiguousarray(targets, dtype=self.dtype))
        return dX, d_labels, d_targets
