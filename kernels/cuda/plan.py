"""Launch plans: a training step's kernel launches built once, launched many times.

A launcher of this package (network_forward, backprop, launch_loss, launch_update...)
slices its device arrays into per-layer views, picks grids and packs arguments every
time it runs; with numba device-array views costing tens of microseconds each, that
was most of a small network's step. ``TrainStepPlan`` runs those launchers once under
``_launch.recording()`` (so the plan follows exactly the same code, views, grids and
kernels as an unplanned step) and keeps each launch as a ``PreparedLaunch``; a step
then only fires them. Built once per (network buffers, batch size). The update's
hyperparameters (a learning rate that a schedule changes) are read on the device
(``DeviceScalars``, written before a step where they changed), and so is the step
number Adam needs (RingCursor). What still changes a step's launches: SGD momentum's
first step (an argument, re-packed in place, once), and switching clipping or momentum
on or off (another update kernel).

How a ``PreparedLaunch`` fires, measured by ``benchmarks/cuda_host_overhead.py
--launch-paths`` (numba-cuda 0.30.4, driver stubbed, one 3-argument kernel): a
configured dispatcher ``k[grid, block](*args)`` 54 us, ``specialize``d 38 us, the compiled
kernel's ``launch`` 31 us, pre-packed arguments handed to cuda.core's ``launch`` 0.5 us.
So with numba-cuda the plan packs the arguments once (``_Kernel._prepare_args``, the
packing numba-cuda itself does per launch) and calls cuda.core's ``launch`` directly
("pre-packed"). numba's simulator and its old built-in CUDA target have no such layer:
there the plan keeps the argument tuple and configures the kernel at each launch
("configured"),
still building no view per step.

On top of the pre-packed launches, a plan replays each step as a CUDA graph (captured
on a stream of fastbp's own through cuda.core's graph builder, which numba-cuda's
launch accepts), once the same inputs have come twice: one launch per step where the
launches were 4 to 60, and back-to-back kernels on the GPU without the launch path's
gaps (6-8 us each, measured on an H200). ``launch_path()`` says which path runs
("graph", "pre-packed" or "configured"); ``config.graphs`` (FASTBP_CUDA_GRAPHS=0)
turns graphs off, and a failed capture turns them off for the process, saying why
(``graphs_unavailable()``).

The step's loss and non-finite count stay on the device: ``_record_step`` (one thread)
sums the loss kernel's partial sums into ``ring[slot]``, copies the update's non-finite
counter into ``ring[capacity + slot]`` and zeroes the counter for the next step, the
slot read from and advanced in device memory (``RingCursor``) so the graph stays valid.
The host reads the ring when it wants the values (one copy for any number of steps).
"""
import threading

import numba
import numpy as np
from numba import cuda

from ..codes import HP_MAX_GRAD_NORM
from ._jit import kernel
from ._launch import SIMULATOR, blocks, config, recording
from ._launch import launch as launch_kernel
from . import fused
from .losses import launch_loss
from .network import _NO_DX, backprop, network_forward
from .optim import STEP, clip_scale_into, launch_update, new_counter, new_scale

try:   # numba-cuda's internals behind the pre-packed path (absent in the simulator)
    if SIMULATOR:
        raise ImportError("simulator")
    from numba.cuda import dispatcher as _dispatcher
    from numba.cuda.cudadrv import driver as _driver
    from numba.cuda.typing.typeof import Purpose, typeof
    from cuda.core import LaunchConfig
    _PACKED = hasattr(_dispatcher, "launch") and hasattr(_dispatcher._Kernel, "_prepare_args")
except ImportError:
    _PACKED = False

# Why CUDA graphs could not be used in this process (None: they can, so far). Set when
# cuda.core has no stream graph builder, or the first capture fails; the plans then
# launch one by one.
_graphs_unavailable = None if _PACKED else "launches are not pre-packed here"
if _PACKED:
    try:
        from cuda.core import Stream as _CoreStream
        _CoreStream.create_graph_builder   # cuda.core >= 0.3
    except (ImportError, AttributeError) as e:
        _graphs_unavailable = f"cuda.core has no graph builder ({e})"
# per thread (two threads' captures on one stream would collide): (numba-cuda's driver
# handle, cuda.core view), made on first use
_capture_streams = threading.local()


def launch_path():
    """How a plan launches a training step: "graph" (one CUDA graph replayed per step,
    numba-cuda with config.graphs on and capture working),
    "pre-packed" (arguments packed once, cuda.core's launch per kernel) or "configured"
    (simulator, numba's built-in CUDA: the kernel configured per launch, the argument
    tuple kept)."""
    if not _PACKED:
        return "configured"
    return "graph" if config.graphs and _graphs_unavailable is None else "pre-packed"


def graphs_unavailable():
    """Why plans do not replay CUDA graphs in this process, or None."""
    return _graphs_unavailable


def _where(a):
    """(device address, shape) of array ``a``: a numba device array, or any array with
    ``__cuda_array_interface__`` (CuPy, PyTorch), which the plans take as given."""
    try:
        return a.device_ctypes_pointer.value, tuple(a.shape)
    except AttributeError:
        interface = a.__cuda_array_interface__
        return interface["data"][0], tuple(interface["shape"])


def _capture(launches):
    """An executable CUDA graph of ``launches`` (PreparedLaunch, pre-packed), captured
    on a stream of fastbp's own, one per thread (non-blocking: capture may not touch
    the legacy default stream, which every other launch of fastbp uses)."""
    stream = getattr(_capture_streams, "stream", None)
    if stream is None:
        flags = _driver.binding.CUstream_flags.CU_STREAM_NON_BLOCKING.value
        handle = _driver.driver.cuStreamCreate(flags)
        stream = _capture_streams.stream = (handle, _CoreStream.from_handle(int(handle)))
    builder = stream[1].create_graph_builder()
    builder.begin_building("relaxed")
    try:
        for p in launches:
            _dispatcher.launch(builder, p._config, p._cufunc, *p._packed)
    finally:
        builder.end_building()
    return builder.complete()


def _dim3(d):
    d = (d,) if isinstance(d, int) else tuple(d)
    return d + (1,) * (3 - len(d))


class PreparedLaunch:
    """One kernel launch with its grid, block and arguments fixed; call it to launch.

    ``rebind(args)`` swaps in new arguments of the same types: entries that are the
    same objects (or equal scalars) as before cost nothing, a changed scalar is
    re-packed alone, a changed array too (remembered per array object, so alternating
    between a few arrays, as an epoch's minibatch views do, packs each once).
    """

    __slots__ = ("kernel", "grid", "block", "args", "_compiled",
                 "_packed", "_spans", "_config", "_stream", "_cufunc", "_seen")
    SEEN = 64   # packed arrays remembered per launch (an epoch's views; callers' inputs)

    def __init__(self, kernel, grid, block, args):
        self.kernel, self.grid, self.block = kernel, grid, block
        self.args = tuple(args)
        self._seen = {}
        self._compiled = None
        if _PACKED:
            self._pack()

    def _pack(self):
        types_ = tuple(typeof(a, Purpose.argument) for a in self.args)
        compiled = self.kernel.compile(types_)
        if compiled.debug or getattr(compiled, "cooperative", False) or \
                getattr(compiled, "extensions", None):
            return   # error checks / extensions need numba-cuda's own launch
        packed, spans, retr = [], [], []
        for t, v in zip(compiled.argument_types, self.args):
            start = len(packed)
            compiled._prepare_args(t, v, 0, retr, packed)
            spans.append((start, len(packed)))
        if retr:     # a host array was passed: numba-cuda would copy it each launch
            return
        kwargs = {"grid": _dim3(self.grid), "block": _dim3(self.block), "shmem_size": 0}
        if getattr(_dispatcher, "CUDA_CORE_GE_1_0", True):
            kwargs["is_cooperative"] = False
        else:
            kwargs["cooperative_launch"] = False
        self._config = LaunchConfig(**kwargs)
        self._stream = _driver._to_core_stream(0)
        self._cufunc = compiled._codelibrary.get_cufunc().kernel
        self._packed, self._spans, self._compiled = packed, spans, compiled

    def __call__(self):
        if self._compiled is not None:
            _dispatcher.launch(self._stream, self._config, self._cufunc, *self._packed)
        else:
            # configured at each launch, not once: numba's simulator configures the
            # kernel object itself (FakeCUDAKernel.__getitem__ sets its grid and returns
            # it), so a kept configuration launched with the grid of the kernel's last
            # configuration, another product's: a 4-5-3 network's second-layer dW (3 x
            # 5, a 2 x 1 grid) ran on its first layer's (5 x 4, 1 x 2) and left a column
            # block unwritten
            self.kernel[self.grid, self.block](*self.args)

    def rebind(self, args):
        """Launch with ``args`` from now on (same kernel, same argument types); True
        when any argument changed (a CUDA graph holding the old ones is stale)."""
        old = self.args
        changed = False
        if self._compiled is None:
            self.args = tuple(args)
            return any(a is not b for a, b in zip(old, self.args))
        for i, new in enumerate(args):
            was = old[i]
            if new is was or (type(new) is type(was) and not hasattr(new, "shape")
                              and new == was):
                continue
            changed = True
            t = self._compiled.argument_types[i]
            start, end = self._spans[i]
            if hasattr(new, "shape"):
                key = (i, id(new))
                hit = self._seen.get(key)
                if hit is None or hit[0] is not new:
                    if typeof(new, Purpose.argument) != t:   # another layout or dtype
                        self.__init__(self.kernel, self.grid, self.block, args)
                        return True
                    part = []
                    self._compiled._prepare_args(t, new, 0, [], part)
                    if len(self._seen) >= self.SEEN:
                        self._seen.clear()
                    hit = self._seen[key] = (new, part)
                self._packed[start:end] = hit[1]
            else:
                part = []
                self._compiled._prepare_args(t, new, 0, [], part)
                self._packed[start:end] = part
        self.args = tuple(args)
        return changed


@kernel
def _store_scalars(hp, a, b, c, d, e, f):
    """hp[:6] = (a, b, c, d, e, f), one thread: DeviceScalars' write (its SIZE is
    these six)."""
    if cuda.grid(1) == 0:
        hp[0] = a
        hp[1] = b
        hp[2] = c
        hp[3] = d
        hp[4] = e
        hp[5] = f


class DeviceScalars:
    """The scalar hyperparameters an update kernel reads (learning rate, momentum,
    betas...: optim.launch_update sets them, in the kernel's order) in a six-element
    float64 device array, ``array``, which is the launch's argument: a learning rate
    that a schedule changes then changes no argument, and a CUDA graph holding the
    update stays valid.

    ``set(values)`` takes the next update's values; ``flush()`` writes them when they
    differ from the last written, with one one-thread launch (``_store_scalars``,
    pre-packed like a plan's) queued on the stream the updates run on: the steps
    queued before it read the values they were queued with."""

    SIZE = 6

    def __init__(self):
        self.array = cuda.to_device(np.zeros(self.SIZE, np.float64))
        self.pending = self.written = None
        self._write = None

    def set(self, values):
        values = tuple(float(v) for v in values)
        if len(values) > self.SIZE:
            raise ValueError(f"values: expected at most {self.SIZE}, got {len(values)}")
        self.pending = values + (0.0,) * (self.SIZE - len(values))

    def flush(self):
        """Write the pending values if they changed; True when a write was queued."""
        values = self.pending
        if values is None or values == self.written:
            return False
        args = (self.array, *values)
        if self._write is None:
            self._write = PreparedLaunch(_store_scalars, 1, 1, args)
        else:
            self._write.rebind(args)
        self._write()
        self.written = values
        return True


@kernel
def _record_step(partials, nblocks, nonfinite, bad, ring, cursor, capacity):
    """With slot = cursor[0]: ring[slot] = sum(partials[:nblocks]) (the step's mean
    loss), ring[capacity + slot] = nonfinite[0] (parameters its update left NaN or
    infinite), ring[2 * capacity + slot] = bad[0] (invalid input entries,
    _check_inputs); counters zeroed, cursor[0] moved to the next slot (0 after the
    last) and the step number cursor[STEP] to the next step."""
    if cuda.grid(1) == 0:
        slot = cursor[0]
        cursor[0] = slot + 1 if slot + 1 < capacity else 0
        cursor[STEP] += 1
        total = 0.0
        for i in range(nblocks):
            total += partials[i]
        ring[slot] = total
        ring[capacity + slot] = numba.float64(nonfinite[0])
        ring[2 * capacity + slot] = numba.float64(bad[0])
        nonfinite[0] = 0
        bad[0] = 0


@kernel
def _check_inputs(X, labels, targets, n_classes, unit_interval, bad):
    """Add to bad[0] one per entry of X or targets that is NaN or infinite (or, with
    unit_interval, a target outside [0, 1]) and per label outside [0, n_classes): the
    host's input checks, for inputs that live on the device."""
    start = cuda.grid(1)
    stride = cuda.gridDim.x * cuda.blockDim.x
    n = X.shape[1]
    for idx in range(start, X.shape[0] * n, stride):
        i = idx // n
        v = X[i, idx - i * n]
        if not (v - v == 0.0):
            cuda.atomic.add(bad, 0, 1)
    for i in range(start, labels.shape[0], stride):
        if labels[i] < 0 or labels[i] >= n_classes:
            cuda.atomic.add(bad, 0, 1)
    m = targets.shape[1]
    for idx in range(start, targets.shape[0] * m, stride):
        i = idx // m
        t = targets[i, idx - i * m]
        if not (t - t == 0.0) or (unit_interval and (t < 0.0 or t > 1.0)):
            cuda.atomic.add(bad, 0, 1)


@kernel
def _move_cursor(cursor, slot, step):
    if cuda.grid(1) == 0:
        cursor[0] = slot
        cursor[STEP] = step


class RingCursor:
    """The ring slot the next recorded step writes and its optimizer step number (what
    Adam's bias corrections need), held on the device in ``array`` ([slot, step]) and
    advanced by ``_record_step`` itself, so that no argument of a step's launches
    changes from one step to the next and a CUDA graph of the whole step stays valid.
    ``at`` is the (slot, step) the device will hold once the queued steps have run; a
    step meant for another (a new ring, an epoch's first step, an update launched
    outside the plan in between) moves it first (one small launch)."""

    def __init__(self):
        self.array = cuda.to_device(np.zeros(2, np.int64))
        self.at = (0, 0)

    def move_to(self, slot, capacity, step):
        """Make the next step record into ``slot`` as step ``step``; afterwards the
        next slot and step."""
        if self.at != (slot, step):
            launch_kernel(_move_cursor, 1, 1, (self.array, slot, step))
        self.at = (slot + 1 if slot + 1 < capacity else 0, step + 1)


def count_invalid(X, labels, targets, n_classes, unit_interval, bad):
    """How many entries of the device arrays X, labels and targets (either may be
    empty) ``_check_inputs`` finds invalid: one launch over all of them and one 4-byte
    read; ``bad`` is a zeroed int32 counter (optim.new_counter), left at 0."""
    total = max(X.shape[0] * X.shape[1], labels.shape[0],
                targets.shape[0] * targets.shape[1])
    grid = min(blocks(total, config.block), config.max_reduce_blocks)
    launch_kernel(_check_inputs, grid, config.block,
                  (X, labels, targets, n_classes, bool(unit_interval), bad))
    count = int(bad.copy_to_host()[0])
    if count:
        bad.copy_to_device(np.zeros(1, np.int32))
    return count


class TrainStepPlan:
    """The launches of one training step for fixed buffers and batch size.

    params, grads (n,), the layout's host arrays, loss_code, X (batch, in), labels
    (batch,) int64 or empty, targets (batch, out) or empty, acts, pres, dbuf: as
    network.network_train_step takes them; ``partials`` float64 (>= the loss's
    blocks) receives the loss kernel's partial sums; ``nonfinite`` the update's int32
    counter. ``run`` launches forward, loss, backward, the update and ``_record_step``
    into the float64 ``ring`` (2 * capacity); it reads nothing back.

    With ``config.graphs`` a step is captured as a CUDA graph per inputs (X, labels,
    targets) seen twice and replayed: one launch instead of 4-60. Forward, loss and
    backward depend on nothing but the buffers and the inputs; the record finds its
    ring slot and Adam its step number on the device (RingCursor), the update its
    hyperparameters (DeviceScalars, written before the step where a schedule changed
    them); the tail's launch arguments are compared with the graph's each step, and
    where they changed (SGD momentum's first step; another optimizer kernel, when
    clipping or momentum is switched on) the graph holds the passes alone that step
    (``_fire``).
    """
    MAX_GRAPHS = 1024   # per plan: an epoch's minibatches each get one

    def __init__(self, params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                 pre_cum, loss_code, X, labels, targets, acts, pres, dbuf, partials,
                 nonfinite, bad):
        self.buffers = (params, grads, acts, pres, dbuf, partials, nonfinite, bad)
        batch = X.shape[0]
        # a narrow network's forward, loss and backward as one kernel (fused.py)
        self.fused = fused.eligible(sizes, params.dtype, batch, partials.shape[0])
        with recording() as recorded:
            if self.fused:
                self._fused = fused.FusedBuffers(sizes, w_off, b_off, act_codes, slopes,
                                                 batch, params.shape[0], params.dtype)
                self.loss_blocks = fused.launch_step(self._fused, params, grads, sizes,
                                                     loss_code, X, labels, targets,
                                                     partials)
            else:
                out = network_forward(params, sizes, w_off, b_off, act_codes, slopes,
                                      act_cum, pre_cum, X, acts, pres)
                n_out = out.shape[1]
                dZ = dbuf[:batch * n_out].reshape(batch, n_out)
                self.loss_blocks = launch_loss(loss_code, out, labels, targets, dZ,
                                               partials)
                backprop(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                         pre_cum, X, acts, pres, dbuf, _NO_DX)
        self.passes = [PreparedLaunch(*r) for r in recorded]
        self.inputs = (X, labels, targets)
        self._passes_bound = True   # the passes' launches hold self.inputs
        # where each input appears: (launch, argument position, which input)
        self._uses = [(p, i, w) for p in self.passes for i, a in enumerate(p.args)
                      for w, x in enumerate(self.inputs) if a is x]
        self.update = []   # the clipping factor's launches (if any), then the update's
        self._tail_inputs = None   # what self.update was recorded from (_bind_tail)
        self.scalars = DeviceScalars()   # the update's hyperparameters, on the device
        self.unit_scale, self.clip_scale = new_scale(1.0), new_scale(1.0)
        self.clipping = False   # whether the last step clipped (two launches more)
        self.record = None
        self.check = None
        # CUDA graphs, one per inputs seen twice (config.graphs; _fire): the device
        # addresses and shapes of (X, labels, targets) -> (the executable graph, the
        # tail version it holds or None: the passes alone)
        self.graphs = {}
        self._seen_once = set()
        self._graphable = all(p._compiled is not None for p in self.passes)
        self._tail_version = 0   # bumped whenever the update's or record's launches change

    def uses(self, params, grads, acts, pres, dbuf, partials, nonfinite, bad):
        """True when the plan was built over exactly these buffers."""
        return all(a is b for a, b in zip(self.buffers, (params, grads, acts, pres, dbuf,
                                                         partials, nonfinite, bad)))

    def bind_inputs(self, X, labels, targets):
        """Use this batch (device arrays of the planned shapes) from now on. The passes'
        launches take it when next launched one by one or captured
        (``_bind_passes``): a step replayed from a graph of these inputs needs nothing
        re-packed (host batches alternate between two staging slots, so every step
        has new inputs: re-packing five launches' arguments took about a sixth of a
        784-128-10 step's host time)."""
        new = (X, labels, targets)
        if all(a is b for a, b in zip(new, self.inputs)):
            return
        self.inputs = new
        self._passes_bound = False

    def _bind_passes(self):
        """Give the passes' launches the bound inputs (``bind_inputs``)."""
        if self._passes_bound:
            return
        new = self.inputs
        for launch in {id(p): p for p, _, _ in self._uses}.values():
            args = list(launch.args)
            for p, i, w in self._uses:
                if p is launch:
                    args[i] = new[w]
            launch.rebind(args)
        self._passes_bound = True

    def _fire(self, tail_changed):
        """Launch forward, loss, backward (the passes) and the update and record (the
        tail) from this plan's CUDA graph for the bound inputs; False (nothing
        launched) where graphs are off or these inputs come for the first time (a
        one-off batch pays no capture). A graph holds the whole step while the tail's
        arguments stay as they were when it was captured (every optimizer, Adam
        included: its step number and every update's hyperparameters are on the
        device), else (momentum's first step, another update kernel) the passes
        alone, the tail then launched one by one; a stale one is captured again."""
        global _graphs_unavailable
        if not (config.graphs and _graphs_unavailable is None and self._graphable):
            return False
        tail = self.update + [self.record]
        whole = not tail_changed and all(p._compiled is not None for p in tail)
        # keyed by where the inputs are, not by the array objects: a new view of the
        # same memory (a slice made afresh each step) replays the same graph, which
        # reads whatever that memory holds when it runs; a key that ids would make
        # could come back for another array once the first is freed
        key = tuple(_where(a) for a in self.inputs)
        entry = self.graphs.get(key)   # (graph, tail version or None: the passes alone)
        if entry is None:
            if key not in self._seen_once:
                if len(self._seen_once) >= 4 * self.MAX_GRAPHS:
                    self._seen_once.clear()
                self._seen_once.add(key)
                return False
            if len(self.graphs) >= self.MAX_GRAPHS:
                return False
        elif entry[1] != (self._tail_version if whole else None):
            entry = None                    # stale: captured with another tail
        if entry is None:
            self._bind_passes()
            try:
                graph = _capture(self.passes + tail if whole else self.passes)
            except Exception as e:   # noqa: BLE001 - any capture failure: launch plainly
                _graphs_unavailable = f"graph capture failed: {type(e).__name__}: {e}"
                return False
            entry = self.graphs[key] = (graph, self._tail_version if whole else None)
        entry[0].launch(self.passes[0]._stream)
        if not whole:
            for launch in tail:
                launch()
        return True

    def count(self, checked=False):
        """Launches per step: the passes, the update and the record (and the input
        check of device-resident inputs when ``checked``, and the clipping factor's two
        when the last step clipped)."""
        return len(self.passes) + 2 + bool(checked) + 2 * self.clipping

    def _update_launches(self, opt_code, rows, hparams, step, steps, clip_partials):
        """The update's launches, recorded (not run): the clipping factor's two when
        clipping (after backward: the factor of *this* step's gradient), then the
        update's (``steps``: the RingCursor's array, where Adam reads the step)."""
        params, grads, _, _, _, _, nonfinite, _ = self.buffers
        max_norm = float(hparams[HP_MAX_GRAD_NORM])
        self.clipping = max_norm > 0.0
        with recording() as recorded:
            if self.clipping:
                clip_scale_into(grads, max_norm, clip_partials, self.clip_scale)
            launch_update(opt_code, params, grads, rows, hparams, step, steps,
                          self.clip_scale if self.clipping else self.unit_scale, nonfinite,
                          self.scalars)
        return recorded

    def compile(self, opt_code, rows, hparams, step, ring, cursor, capacity, clip_partials,
                check=None):
        """Compile (or load from the disk cache) the kernels ``run`` launches after
        the passes (which the plan compiled when it was built), launching none: the
        update's (and the clipping factor's), the record's, and with ``check`` the
        input check's. Arguments as ``run``'s. Only where launches are pre-packed
        (``launch_path()``): elsewhere kernels compile at their first launch."""
        if not _PACKED:
            return
        params, grads, _, _, _, partials, nonfinite, bad = self.buffers
        launches = self._update_launches(opt_code, rows, hparams, step, cursor.array,
                                         clip_partials)
        # recording set this plan's DeviceScalars to these arguments' values: the next
        # step records its own again, whatever it was recorded from before
        self._tail_inputs = None
        launches.append((_record_step, 1, 1, (partials, self.loss_blocks, nonfinite, bad,
                                              ring, cursor.array, capacity)))
        launches.append((_move_cursor, 1, 1, (cursor.array, 0, 1)))
        launches.append((_store_scalars, 1, 1,
                         (self.scalars.array,) + (0.0,) * DeviceScalars.SIZE))
        if check is not None:
            X, labels, targets = self.inputs
            launches.append((_check_inputs, 1, config.block,
                             (X, labels, targets, check[0], check[1], bad)))
        for kernel, _, _, args in launches:
            kernel.compile(tuple(typeof(a, Purpose.argument) for a in args))

    def _bind_tail(self, opt_code, rows, hparams, step, ring, cursor, capacity,
                   clip_partials):
        """Prepare this step's update and record launches; True when any of them
        differs from the last step's (kernel, grid or argument).

        The update's launches are recorded again (optim.launch_update, which also sets
        the plan's DeviceScalars) only when what they are made from changed since the
        last step: the optimizer, its hyperparameters' values, whether this is the
        first step (SGD momentum's argument), the state rows, the step counter and the
        clipping scratch (``_tail_inputs``). Recording them took about a tenth of a
        784-128-10 step's host time; a step with the same inputs records the same."""
        params, grads, _, _, _, partials, nonfinite, bad = self.buffers
        inputs = (opt_code, hparams.tobytes(), step == 1, tuple(rows), cursor.array,
                  clip_partials)
        changed = False
        if not _same_tail_inputs(inputs, self._tail_inputs):
            # cleared first, set once self.update is rebuilt: an error on the way (a
            # kernel compiled for a new launch, an interrupt) leaves it recorded again
            # at the next step, not skipped with a half-rebuilt update
            self._tail_inputs = None
            recorded = self._update_launches(opt_code, rows, hparams, step, cursor.array,
                                             clip_partials)
            changed = len(recorded) != len(self.update)
            del self.update[len(recorded):]
            for k, (kernel, grid, block, args) in enumerate(recorded):
                if k == len(self.update):
                    self.update.append(PreparedLaunch(kernel, grid, block, args))
                elif self.update[k].kernel is not kernel or self.update[k].grid != grid:
                    self.update[k] = PreparedLaunch(kernel, grid, block, args)
                else:
                    changed |= self.update[k].rebind(args)
                    continue
                changed = True
            self._tail_inputs = inputs
        args = (partials, self.loss_blocks, nonfinite, bad, ring, cursor.array, capacity)
        if self.record is None:
            self.record = PreparedLaunch(_record_step, 1, 1, args)
            changed = True
        else:
            changed |= self.record.rebind(args)
        if changed:
            self._tail_version += 1
        return changed

    def run(self, opt_code, rows, hparams, step, ring, cursor, slot, capacity, check=None,
            clip_partials=None):
        """Launch one step; its loss, non-finite count and invalid-input count land in
        ring[slot + k * capacity], k = 0, 1, 2 (``cursor``: the ring's RingCursor).
        ``rows``: the optimizer state's rows (device views kept by the caller);
        ``check``: None, or (n_classes, unit_interval) to check the inputs first
        (``_check_inputs``).

        With gradient clipping (hparams' max_grad_norm > 0) the update's factor needs
        the norm of this step's gradient: after backward, two launches compute it on
        the device (optim.clip_scale_into), through ``clip_partials`` (float64, not the
        loss's partial sums, which the record step still needs); nothing is read back."""
        bad = self.buffers[7]
        if check is not None:
            X, labels, targets = self.inputs
            args = (X, labels, targets, check[0], check[1], bad)
            if self.check is None:
                total = max(X.shape[0] * X.shape[1], labels.shape[0],
                            targets.shape[0] * targets.shape[1])
                grid = min(blocks(total, config.block), config.max_reduce_blocks)
                self.check = PreparedLaunch(_check_inputs, grid, config.block, args)
            else:
                self.check.rebind(args)
            self.check()
        cursor.move_to(slot, capacity, step)
        changed = self._bind_tail(opt_code, rows, hparams, step, ring, cursor, capacity,
                                  clip_partials)
        self.scalars.flush()   # the update's hyperparameters, where they changed
        if not self._fire(changed):
            self._bind_passes()
            for launch in self.passes + self.update + [self.record]:
                launch()


def _same_tail_inputs(a, b):
    """Whether two ``_bind_tail`` inputs tuples (opt_code, hyperparameter bytes, first
    step, state rows, step counter, clipping scratch) are the same: equal values, the
    same device arrays (objects, not equal contents: a launch reads what they hold
    when it runs)."""
    if b is None or a[:3] != b[:3] or len(a[3]) != len(b[3]):
        return False
    return (all(x is y for x, y in zip(a[3], b[3])) and a[4] is b[4] and a[5] is b[5])


def keep_plan(plans, key, plan):
    """``plans[key] = plan``, first dropping the plans built on other parameter,
    gradient or activation buffers (a workspace grown for a larger batch, buffers
    moved): they would keep those buffers on the GPU. Returns ``plan``."""
    held = plan.buffers[:3]
    for stale in [k for k, p in plans.items()
                  if any(a is not b for a, b in zip(p.buffers[:3], held))]:
        del plans[stale]
    plans[key] = plan
    return plan


def _download(host, device):
    """Copy the device array into the host array of the same size: numba's
    ``copy_to_host(host)`` would make a device-array view to check the shapes, tens of
    microseconds on a GPU (the simulator has no driver to call instead)."""
    if SIMULATOR:
        host[...] = device.copy_to_host()
        return
    from numba.cuda.cudadrv import driver
    driver.device_to_host(host, device, host.nbytes)


class EpochState:
    """What ``train_epoch`` keeps between calls for one parameter buffer: the step plans
    (per batch size), the minibatch views of the last data set, the loss ring and the
    scratch the plans write. Held by the params device array itself (``_of``), so it
    lives exactly as long as the network's buffers: a fit of many epochs plans once."""

    def __init__(self):
        self.partials = cuda.device_array(max(config.max_reduce_blocks, 256), np.float64)
        self.clip_partials = cuda.device_array(max(config.max_reduce_blocks, 256),
                                               np.float64)
        self.counter, self.bad = new_counter(), new_counter()
        self.cursor = RingCursor()
        self.plans = {}
        self.ring = self.host_ring = None
        self.capacity = 0
        self._batches = (None, None)   # (key with the data it was made from, views)
        self._rows = (None, [])

    @staticmethod
    def of(params):
        state = getattr(params, "_fastbp_epoch_state", None)
        if state is None:
            state = params._fastbp_epoch_state = EpochState()
        return state

    def plan(self, params, grads, layout, loss_code, X, labels, targets, acts, pres, dbuf):
        """The step plan for this batch size over these buffers, bound to (X, labels,
        targets)."""
        key = (X.shape[0], loss_code, id(layout[0]), id(layout[3]))
        plan = self.plans.get(key)
        if plan is None or not plan.uses(params, grads, acts, pres, dbuf, self.partials,
                                         self.counter, self.bad):
            plan = keep_plan(self.plans, key, TrainStepPlan(
                params, grads, *layout, loss_code, X, labels, targets, acts, pres, dbuf,
                self.partials, self.counter, self.bad))
        else:
            plan.bind_inputs(X, labels, targets)
        return plan

    def batches(self, X, labels, targets, batch_size):
        """[(X_i, labels_i, targets_i)]: minibatch views, made once per data set and
        batch size (an empty labels or targets is passed whole, as on the CPU)."""
        data = (X, labels, targets)
        key = (id(X), id(labels), id(targets), X.shape[0], batch_size)
        if self._batches[0] is None or self._batches[0][0] != key or \
                any(a is not b for a, b in zip(self._batches[0][1], data)):
            n = X.shape[0]
            views = [(X[a:a + batch_size],
                      labels[a:a + batch_size] if labels.shape[0] else labels,
                      targets[a:a + batch_size] if targets.shape[0] else targets)
                     for a in range(0, n, batch_size)]
            self._batches = ((key, data), views)
        return self._batches[1]

    def rows(self, opt_state):
        """The optimizer state's rows as device views, made once per state array."""
        if self._rows[0] is not opt_state:
            self._rows = (opt_state, [opt_state[r] for r in range(opt_state.shape[0])])
        return self._rows[1]

    def ensure_ring(self, steps):
        if steps > self.capacity:
            self.ring = cuda.device_array(3 * steps, np.float64)
            self.host_ring = np.zeros(3 * steps, np.float64)
            self.capacity = steps


def train_epoch(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
                loss_code, X, labels, targets, batch_size, acts, pres, dbuf, opt_code,
                opt_state, opt_hparams, first_step, losses):
    """network.network_train_epoch (its docstring): every step launched from its plan
    into its slot of the loss ring, which comes back in one copy at the end."""
    state = EpochState.of(params)
    layout = (sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum)
    batches = state.batches(X, labels, targets, batch_size)
    n = len(batches)
    state.ensure_ring(n)
    rows = state.rows(opt_state)
    for i, (X_i, labels_i, targets_i) in enumerate(batches):
        plan = state.plan(params, grads, layout, loss_code, X_i, labels_i, targets_i,
                          acts, pres, dbuf)
        plan.run(opt_code, rows, opt_hparams, first_step + i, state.ring, state.cursor, i,
                 state.capacity, None, state.clip_partials)
    _download(state.host_ring, state.ring)   # waits for the steps; one copy
    ring, c = state.host_ring, state.capacity
    losses[:n] = ring[:n]
    counts = ring[c:c + n]
    diverged = np.flatnonzero((counts > 0) | ~np.isfinite(ring[:n]))
    if diverged.size:
        i = int(diverged[0])
        return i + 1, int(counts[i])
    return n, 0
