"""Host cost of a device="cuda" training step, measured on a machine WITHOUT a GPU.

Runs fastbp's real ``net.train_step`` on device="cuda" with only the CUDA *driver*
stubbed out: numba-cuda's device arrays (with fake device pointers), its dispatchers,
argument typing and marshalling, kernel compilation to LLVM IR, fastbp's launch plan
and everything above them run as on a GPU host; the driver calls at the bottom (module
load, the launch itself, copies, synchronisation) are recorded instead of executed. The
times are therefore a LOWER bound of the host cost of a step (no driver time).

Reported per steady-state step (the first six steps of a batch size build workspaces,
the launch plan and a CUDA graph per staging slot, and are not counted):

    host us      median wall time per step over ``--repeat`` rounds of ``--steps``
    launches     kernel launches that reached the (stubbed) driver
    views        new numba device-array objects created (views or allocations)
    H2D / D2H    host-to-device / device-to-host copies (a D2H copy blocks the host
                 until the GPU has finished everything before it)
    syncs        explicit synchronisations (stream or context)
    waits        waits for one event (device.PinnedBatches: a staging slot's copy of
                 two steps back, before its pinned buffer is refilled)
    captures     CUDA graphs captured (kernels/cuda/plan.py: 0 in a steady state;
                 ``--lr-decay`` changes the learning rate before every step)
    rebinds      prepared launches given new arguments (kernels/cuda/plan.py
                 PreparedLaunch.rebind: the passes' launches take each new batch's
                 inputs, unless the step replays its graph)

Usage (needs numba-cuda with its CUDA libraries, ``pip install -e ".[cuda]"``,
and NUMBA_ENABLE_CUDASIM unset; no GPU):

    python benchmarks/cuda_host_overhead.py                   # the four networks
    python benchmarks/cuda_host_overhead.py --json out.json   # also write the table
    python benchmarks/cuda_host_overhead.py --launch-paths    # numba-cuda's launch paths

``--launch-paths`` times one kernel launch by each of numba-cuda's ways of launching
(a configured dispatcher, a ``specialize``d one, the compiled kernel's ``launch``, and
pre-packed arguments handed straight to cuda.core's ``launch``): the measurement
behind the launch plan's choice (kernels/cuda/plan.py).
"""
import argparse
import collections
import contextlib
import ctypes
import json
import os
import statistics
import sys
import time

import numpy as np

NETWORKS = [("784-128-10", [784, 128, 10], 64),
            ("256x9-10", [256] * 10 + [10], 64),
            ("784-512-512-10", [784, 512, 512, 10], 128),
            ("1024-4096-4096-1024", [1024, 4096, 4096, 1024], 512)]

counts = collections.Counter()


class _FakeDevice:
    id = 0
    compute_capability = (9, 0)
    MULTIPROCESSOR_COUNT = 132   # an H100/H200's: the products split as they would there
    name = b"stubbed driver"


class _FakeModule:
    initialized = True


class _FakeCufunc:
    kernel = None          # handed to the stubbed launch, which ignores it
    name = "stub"
    module = _FakeModule()


class _FakeStream:
    handle = 0


class _FakeEvent:
    """An event: recording is free; waiting for one counts as a host wait."""

    def record(self, stream=0):
        counts["event records"] += 1

    def synchronize(self):
        counts["waits"] += 1

    def wait(self, stream=0):   # a stream waits for it: no host wait
        counts["stream waits"] += 1


class _FakeContext:
    """What numba-cuda asks of a context: allocation (fake addresses), the device."""
    device = _FakeDevice()
    _next = 0x7F0000000000

    def memalloc(self, size):
        from numba.cuda.cudadrv import driver as drv
        counts["allocations"] += 1
        ptr = _FakeContext._next
        _FakeContext._next += max(int(size), 1) + 256
        return drv.MemoryPointer(context=self, pointer=drv.binding.CUdeviceptr(ptr),
                                 size=size)

    def memhostalloc(self, size, mapped=False, portable=False, wc=False):
        from numba.cuda.cudadrv import driver as drv
        if not size:   # as on a GPU: pinning 0 bytes fails in numba-cuda
            raise ValueError("null buffer pointer (memhostalloc of 0 bytes)")
        buf = (ctypes.c_byte * int(size))()
        _FakeContext._keep.append(buf)
        return drv.PinnedMemory(self, ctypes.addressof(buf), size)

    _keep = []

    def synchronize(self):
        counts["syncs"] += 1

    def create_event(self, timing=True):
        return _FakeEvent()

    def get_default_stream(self):
        return _FakeStream()

    def get_memory_info(self):
        return (1 << 40, 1 << 40)


class _FakeGraph:
    """A captured step (kernels/cuda/plan.py _capture): one launch per replay, counted
    as a launch that reaches the driver (a cuGraphLaunch)."""

    def __init__(self, launches):
        self.nodes = len(launches)
        counts["captures"] += 1

    def launch(self, stream):
        counts["launches"] += 1
        counts["graph launches"] += 1


CONTEXT_CALLS = 16   # driver calls numba-cuda makes to create one GPU's context (about)


def stub_driver(context_seconds=0.0):
    """Replace the CUDA driver under numba-cuda by recorders (see the module docstring).
    Must run before fastbp creates any CUDA state; the simulator must be off.

    ``context_seconds``: a model of creating the GPU's context. The first
    ``current_context()`` call in a process makes ``CONTEXT_CALLS`` "driver calls",
    sleeps of context_seconds / CONTEXT_CALLS each (a sleep releases the GIL, as the
    driver's calls do), with a little Python between them (numba-cuda's own code,
    which needs the GIL back each time), so that benchmarks/cuda_first_step.py can
    show what overlaps it (fastbp.device._probe_beside) and what a thread holding the
    GIL meanwhile costs it; 0 (default): free, as before."""
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    import numba
    if numba.config.ENABLE_CUDASIM:
        sys.exit("NUMBA_ENABLE_CUDASIM is set: this benchmark needs the real numba-cuda")
    from numba import cuda
    from numba.cuda import api, codegen, dispatcher
    from numba.cuda.cudadrv import devicearray as da
    from numba.cuda.cudadrv import devices, driver as drv

    ctx = _FakeContext()
    devices._runtime.ensure_context = contextlib.nullcontext
    opened = []

    def current_context(devnum=None):
        if not opened:
            opened.append(True)
            if context_seconds:
                for _ in range(CONTEXT_CALLS):
                    time.sleep(context_seconds / CONTEXT_CALLS)
                    sum(range(2000))   # about 30 us of Python between two driver calls
        return ctx
    devices.get_context = cuda.current_context = api.current_context = current_context
    api.get_current_device = dispatcher.get_current_device = \
        cuda.get_current_device = lambda: current_context().device
    cuda.is_available = lambda: True
    codegen.CUDACodeLibrary.get_cufunc = lambda self: _FakeCufunc()

    def launch(stream, config, kernel, *args):
        counts["launches"] += 1
    dispatcher.launch = launch

    from fastbp import device
    device.copy_stream = _FakeStream   # PinnedBatches' own stream: only ever passed on
    from fastbp.kernels.cuda import plan
    if plan._graphs_unavailable is None:   # capture: a graph that counts its replays
        plan._capture = _FakeGraph
    rebind = getattr(plan, "PreparedLaunch", None) and plan.PreparedLaunch.rebind
    if rebind is not None:
        def counting_rebind(self, args):
            changed = rebind(self, args)
            counts["rebinds"] += bool(changed)
            return changed
        plan.PreparedLaunch.rebind = counting_rebind

    init = da.DeviceNDArrayBase.__init__

    def counting_init(self, *a, **k):
        counts["views"] += 1
        init(self, *a, **k)
    da.DeviceNDArrayBase.__init__ = counting_init

    def host_to_device(dst, src, size, stream=0):
        counts["H2D"] += 1

    def device_to_host(dst, src, size, stream=0):
        counts["D2H"] += 1
        if size:
            ctypes.memset(drv.host_pointer(dst), 0, size)   # a finite loss, zero counts
    drv.host_to_device = host_to_device
    drv.device_to_host = device_to_host
    drv.device_to_device = lambda dst, src, size, stream=0: counts.update(["D2D"])
    drv.device_memset = lambda dst, val, size, stream=0: counts.update(["memset"])
    drv.Stream.synchronize = lambda self: counts.update(["syncs"])
    cuda.synchronize = lambda: counts.update(["syncs"])
    return cuda


def measure(sizes, batch, steps, repeat, optimizer="sgd", lr_decay=None):
    """One network's steady-state counts per step and median host microseconds;
    ``lr_decay``: multiply the learning rate by it before every step (a schedule that
    changes the rate each step, as scikit-learn's "invscaling")."""
    import fastbp
    try:
        from fastbp import cuda_plan
    except ImportError:       # before the launch plan existed
        cuda_plan = None
    net = fastbp.MLP(sizes, activation="tanh", seed=0, device="cuda")
    opt = fastbp.make_optimizer(optimizer, net)
    rng = np.random.default_rng(0)
    X = rng.random((batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], batch)

    def step():
        if lr_decay is not None:
            opt.lr = opt.lr * lr_decay
        net.train_step(X, y, opt)
    # first steps: workspaces, plan, compilation, and a graph per staging slot (each
    # captured on its inputs' second use: steps 3 and 4)
    for _ in range(6):
        step()
    counts.clear()
    step()
    per_step = {k: counts[k] for k in ("launches", "views", "H2D", "D2H", "syncs", "waits",
                                       "captures", "rebinds")}
    per_step["plan launches"] = getattr(cuda_plan, "planned_launches", lambda n: None)(net)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t0) / steps * 1e6)
    per_step["host us"] = statistics.median(times)
    return per_step


def launch_paths(repeat=2000):
    """Microseconds per launch of one small kernel by each of numba-cuda's paths."""
    from numba import cuda
    from numba.cuda import dispatcher
    from numba.cuda.typing.typeof import Purpose, typeof

    @cuda.jit
    def axpy(x, y, a):
        i = cuda.grid(1)
        if i < x.shape[0]:
            y[i] = y[i] + a * x[i]

    x = cuda.device_array(1024, np.float32)
    y = cuda.device_array(1024, np.float32)
    configured = axpy[4, 256]
    configured(x, y, 2.0)
    spec = axpy.specialize(x, y, 2.0)[4, 256]
    kernel = axpy.overloads[tuple(typeof(v, Purpose.argument) for v in (x, y, 2.0))]
    packed = []
    for t, v in zip(kernel.argument_types, (x, y, 2.0)):
        kernel._prepare_args(t, v, 0, [], packed)
    from numba.cuda.cudadrv import driver as drv
    from cuda.core import LaunchConfig
    config = LaunchConfig(grid=(4, 1, 1), block=(256, 1, 1), shmem_size=0)
    stream = drv._to_core_stream(0)
    cufunc = kernel._codelibrary.get_cufunc().kernel
    paths = {
        "axpy[grid, block](x, y, a)": lambda: axpy[4, 256](x, y, 2.0),
        "configured(x, y, a), configured once": lambda: configured(x, y, 2.0),
        "specialize(...)[grid, block](x, y, a)": lambda: spec(x, y, 2.0),
        "compiled kernel.launch(args, ...)": lambda: kernel.launch((x, y, 2.0), (4, 1, 1),
                                                                    (256, 1, 1), 0, 0),
        "pre-packed args -> cuda.core launch": lambda: dispatcher.launch(stream, config,
                                                                         cufunc, *packed),
    }
    out = {}
    for name, fn in paths.items():
        fn()
        best = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeat):
                fn()
            best.append((time.perf_counter() - t0) / repeat * 1e6)
        out[name] = statistics.median(best)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per timed round")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--only", help="run only the networks whose name contains this")
    parser.add_argument("--optimizer", default="sgd", help="sgd, adam, adamw or rmsprop")
    parser.add_argument("--lr-decay", type=float,
                        help="multiply the learning rate by this before every step")
    parser.add_argument("--launch-paths", action="store_true",
                        help="time numba-cuda's launch paths instead")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    stub_driver()
    import warnings
    from numba.core.errors import NumbaPerformanceWarning
    warnings.simplefilter("ignore", NumbaPerformanceWarning)   # small grids, said once
    if args.launch_paths:
        rows = launch_paths()
        for name, us in rows.items():
            print(f"{name:42s} {us:7.2f} us per launch")
    else:
        rows = {}
        print(f"{'network, batch':28s} {'host us':>9s} {'launches':>8s} {'plan':>5s} "
              f"{'views':>6s} {'H2D':>4s} {'D2H':>4s} {'syncs':>5s} {'waits':>5s} "
              f"{'captures':>8s} {'rebinds':>7s}")
        for name, sizes, batch in NETWORKS:
            if args.only and args.only not in name:
                continue
            r = measure(sizes, batch, args.steps, args.repeat, args.optimizer,
                        args.lr_decay)
            rows[f"{name} b{batch}"] = r
            plan = "-" if r["plan launches"] is None else str(r["plan launches"])
            print(f"{name + ', ' + str(batch):28s} {r['host us']:9.1f} {r['launches']:8d} "
                  f"{plan:>5s} {r['views']:6d} {r['H2D']:4d} {r['D2H']:4d} {r['syncs']:5d} "
                  f"{r['waits']:5d} {r['captures']:8d} {r['rebinds']:7d}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
