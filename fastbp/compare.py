"""``python -m fastbp compare``: validate and time every kernel on CPU and GPU side by side.

For each kernel of fastbp.kernels.registry (activations, the fused linear layer and its
two epilogues, losses, SGD) and each device it validates, then times, and prints,
and writes as JSON: the largest relative error against the float64 reference (max
|got - ref| / max |ref| over every output), the median wall time of ``--repeat`` calls
after a warm-up, GFLOP/s (matrix products: 2*m*n*k per product; elementwise kernels:
one nominal flop per element), and for the products, where CuPy or PyTorch with CUDA
is present, our speed as a fraction of cuBLAS's for the same products in FP32 with
TF32 off (1.0 = parity; fastbp's times include the fused bias,
sigma, sigma' and db work, cuBLAS's are the bare products). GPU times, ours and
cuBLAS's alike, come from CUDA events around each call.

Each row passes when its error is within ``TOLERANCE`` for the dtype; a kernel that
fails its check or raises (the error goes in its row) makes the command exit 1 after the
whole table. Without a usable GPU it compares the CPU kernels with the reference and
says why no GPU was found. Under numba's CUDA simulator it validates the CUDA kernels on tiny sizes and
reports no GPU times (simulated time means nothing).
"""
import argparse
import json
import os
import statistics
import time

import numpy as np

from . import device as fdevice
from .concurrency import start_pool
from .kernels import codes, registry

SIM_MAX = 12   # largest size the simulator is given (it runs one OS thread per thread)
TOLERANCE = registry.TOLERANCE   # the registry's rule: max relative error that passes
GPU_INNER = 5  # calls per timed GPU sample (see median_gpu_seconds)


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(prog="python -m fastbp compare")
    parser.add_argument("--batch", type=int, default=None,
                        help="rows (default 4096 with a GPU, 256 without, 7 simulated)")
    parser.add_argument("--inputs", type=int, default=None, help="layer inputs (same defaults)")
    parser.add_argument("--outputs", type=int, default=None, help="layer outputs (same defaults)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--activation", default="tanh", choices=list(codes.ACTIVATIONS))
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per kernel (10)")
    parser.add_argument("--devices", default="cpu,cuda", help="cpu, cuda or cpu,cuda")
    parser.add_argument("--json", default="fastbp_compare.json", help="JSON output path")
    return parser


def _run_case(kernel, problem, device, repeat, timed, dtype, code, slope):
    """Validate ``kernel`` on ``problem`` (its first call, which compiles), then time it."""
    on_gpu = device == "cuda"
    arrays = registry.device_arrays(problem, device, dtype)
    value = kernel.call(device, arrays, code, slope)
    row = {"kernel": kernel.name, "max_rel_error": registry.max_error(problem, arrays, value),
           "median_s": None, "gflops": None}
    row["ok"] = registry.passes(row["max_rel_error"], dtype)
    if not timed:
        return row
    run = kernel.bound(device, arrays, code, slope)
    if on_gpu:
        from numba import cuda
        row["median_s"] = median_gpu_seconds(run, cuda_events, repeat, cuda.synchronize,
                                             inner=GPU_INNER)
    else:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        row["median_s"] = statistics.median(times)
    row["gflops"] = problem.flops / row["median_s"] / 1e9 if row["median_s"] > 0 else None
    return row


def vendor():
    """cuBLAS through PyTorch (TF32 switched off, so FP32 products are FP32) or CuPy
    (TF32 off unless CUPY_TF32=1): (description, to_device(host array) -> tensor taking
    @, sync(), events() -> (start, stop)); None when neither has a GPU here."""
    try:
        import torch
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")

            def events():
                return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            return (f"torch {torch.__version__}", lambda a: torch.as_tensor(a, device="cuda"),
                    torch.cuda.synchronize, events)
    except Exception:
        pass
    try:
        import cupy
        if os.environ.get("CUPY_TF32", "0") != "0":
            return None   # its products would be TF32: not an FP32 baseline
        cupy.cuda.runtime.getDeviceCount()

        def events():
            return cupy.cuda.Event(), cupy.cuda.Event()
        return (f"cupy {cupy.__version__}", cupy.asarray, cupy.cuda.Device().synchronize,
                events)
    except Exception:
        return None


def cuda_events():
    """A (start, stop) pair of numba CUDA events."""
    from numba import cuda
    return cuda.event(), cuda.event()


def median_gpu_seconds(run, events, repeat, sync, inner=1):
    """Median seconds per ``run()`` call between two recorded GPU events, over ``repeat``
    samples of ``inner`` back-to-back calls each, after one untimed call (compilation,
    handles). Several calls per sample hide the host's launch latency (tens of
    microseconds from Python), which would otherwise dominate short kernels.
    ``events()`` makes a (start, stop) pair of numba's, torch's or cupy's events;
    ``sync()`` waits for the device."""
    run()
    sync()
    times = []
    for _ in range(repeat):
        start, stop = events()
        start.record()
        for _ in range(inner):
            run()
        stop.record()
        stop.synchronize()
        if type(start).__module__.startswith("cupy"):
            import cupy
            ms = cupy.cuda.get_elapsed_time(start, stop)
        else:                        # numba's and torch's: start.elapsed_time(stop), in ms
            ms = start.elapsed_time(stop)
        times.append(ms / 1e3 / inner)
    return statistics.median(times)


def _vendor_products(name, inputs, repeat, lib):
    """Median seconds of the same matrix products in cuBLAS (``lib`` from vendor())."""
    if lib is None or name not in ("linear_forward", "linear_backward"):
        return None
    _, put, sync, events = lib
    a = {k: put(np.ascontiguousarray(v)) for k, v in inputs.items()}
    if name == "linear_forward":
        run = lambda: a["X"] @ a["W"].T   # noqa: E731
    else:
        run = lambda: (a["dA"].T @ a["X"], a["dA"] @ a["W"])   # noqa: E731
    return median_gpu_seconds(run, events, repeat, sync, inner=GPU_INNER)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run(args)


def run(args, print_fn=print):
    if args.json:   # fail before the timings, not after them
        from .persistence import check_writable
        check_writable(args.json)
    start_pool()   # before the first direct kernel call (concurrency.start_pool says why)
    devices = [fdevice.normalize(d) for d in args.devices.split(",") if d.strip()]
    usable, reason = fdevice.cuda_status() if "cuda" in devices else (False, "not requested")
    simulated = usable and fdevice.simulator_enabled()
    real_gpu = usable and not simulated
    default = 4096 if real_gpu else (7 if simulated else 256)
    batch, n_in, n_out = (v if v is not None else default
                          for v in (args.batch, args.inputs, args.outputs))
    notes = []
    if simulated and max(batch, n_in, n_out) > SIM_MAX:
        batch, n_in, n_out = (min(v, SIM_MAX) for v in (batch, n_in, n_out))
        notes.append(f"sizes capped at {SIM_MAX} under the simulator")
    if "cuda" in devices and not usable:
        notes.append(f"no GPU found: {reason}. Compared the CPU kernels with the reference only.")
    elif simulated:
        notes.append("CUDA simulator (NUMBA_ENABLE_CUDASIM=1): CUDA kernels validated, "
                     "not timed")
    elif real_gpu:
        notes.append(f"GPU: {reason}")
    code = codes.ACTIVATION_CODES[args.activation]
    slope = codes.DEFAULT_LEAKY_RELU_SLOPE
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    cases = [(k, k.problem(rng, (batch, n_in, n_out), dtype, code, slope))
             for k in registry.KERNELS]
    rows = []
    backends = []
    if "cpu" in devices:
        backends.append(("cpu", True))
    if "cuda" in devices and usable:
        fdevice.kernels("cuda")   # numba-cuda's numpy shim before kernels.cuda loads
        backends.append(("cuda", real_gpu))
    lib = vendor() if real_gpu else None
    if real_gpu:
        notes.append(f"cuBLAS FP32 baseline (no TF32): {lib[0]}" if lib else
                     "no cuBLAS baseline: neither PyTorch with CUDA nor CuPy is installed")
    for dev, timed in backends:
        for kernel, problem in cases:
            # One kernel that fails (to compile, say, under another numba) costs its row,
            # not the table: the error is reported there and in the exit status.
            try:
                row = _run_case(kernel, problem, dev, args.repeat, timed, dtype, code, slope)
                row["vs_cublas"] = None
                if dev == "cuda" and timed and row["median_s"]:
                    vendor_s = _vendor_products(kernel.name, problem.inputs, args.repeat, lib)
                    if vendor_s:
                        row["cublas_s"] = vendor_s
                        row["vs_cublas"] = vendor_s / row["median_s"]
            except Exception as exc:
                row = {"kernel": kernel.name, "max_rel_error": None, "median_s": None,
                       "gflops": None, "vs_cublas": None, "ok": False,
                       "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
            row["device"] = dev
            rows.append(row)
    header = (f"fastbp compare: batch {batch}, inputs {n_in}, outputs {n_out}, {args.dtype}, "
              f"activation {args.activation}, median of {args.repeat}"
              + (f" (GPU: each sample {GPU_INNER} back-to-back calls)" if real_gpu else ""))
    print_fn(header)
    for note in notes:
        print_fn(note)
    print_fn(f"{'kernel':24s}{'device':>7s}{'max rel err':>13s}{'median ms':>11s}"
             f"{'GFLOP/s':>10s}{'vs cuBLAS':>11s}  check (error <= {TOLERANCE[args.dtype]:g})")
    fmt = lambda v, f: "-" if v is None else format(v, f)   # noqa: E731
    for r in rows:
        if "error" in r:
            print_fn(f"{r['kernel']:24s}{r['device']:>7s}  FAILED: {r['error']}")
            continue
        print_fn(f"{r['kernel']:24s}{r['device']:>7s}{r['max_rel_error']:>13.2e}"
                 f"{fmt(r['median_s'] and r['median_s'] * 1e3, '11.3f'):>11s}"
                 f"{fmt(r['gflops'], '10.3g'):>10s}{fmt(r['vs_cublas'], '11.2f'):>11s}"
                 f"  {'ok' if r['ok'] else 'FAILED'}")
    result = {"batch": batch, "inputs": n_in, "outputs": n_out, "dtype": args.dtype,
              "activation": args.activation, "repeat": args.repeat, "notes": notes,
              "gpu": "real" if real_gpu else ("simulator" if simulated else None),
              "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print_fn(f"wrote {args.json}")
    failed = [f"{r['device']} {r['kernel']}" for r in rows if not r["ok"]]
    if failed:
        print_fn("failed: " + ", ".join(failed))
        return 1
    return 0
