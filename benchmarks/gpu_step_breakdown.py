"""Where a CUDA training step's GPU time goes: each launch of its plan, timed alone.

For each configuration (the yardstick's; tanh, softmax cross-entropy, SGD, FP32, the
batch already on the GPU) it builds the network's step plan
(fastbp.kernels.cuda.plan.TrainStepPlan) with two ordinary ``train_step`` calls, then
times every launch the plan fires: ``--repeat`` back-to-back launches of that one
kernel between two CUDA events, divided by ``--repeat`` (the launches are independent
of each other's results for timing purposes; the update keeps updating). It prints per
launch the kernel, grid, block and microseconds, their sum, and the whole step timed
the same way (a chain of steps between events), so launch gaps show as the difference.

    python benchmarks/gpu_step_breakdown.py --only mnist,deep
    python benchmarks/gpu_step_breakdown.py --only deep --variant fixed

``--variant`` builds the plans with parts of kernels/cuda switched: "fused" with the
fused step of narrow networks (kernels/cuda/fused.py, off by default), "unfused"
without it, "fixed" without it and with every product on the default geometry (no
smaller tiles or split k, kernels/cuda/_launch.product_shape), "nographs" without the
CUDA graph of the step (kernels/cuda/plan.py; by default it is timed too). Needs a GPU
for meaningful numbers; under numba's CUDA simulator it runs the ``smoke`` network (a
check that the script works).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_yardstick import (CONFIGS, SMOKE, chosen_configs, cuda_or_exit,  # noqa: E402
                           fastbp_net)
from yardstick import make_data  # noqa: E402


def _event_us(fn, repeat):
    """Microseconds per call of ``fn`` over ``repeat`` calls between two CUDA events,
    median of three."""
    import time
    from numba import cuda
    from fastbp import device
    times = []
    for _ in range(3):
        if device.simulator_enabled():   # its events take no timing flag: host clock
            t0 = time.perf_counter()
            for _ in range(repeat):
                fn()
            cuda.synchronize()
            times.append(1e6 * (time.perf_counter() - t0) / repeat)
            continue
        start, end = cuda.event(timing=True), cuda.event(timing=True)
        start.record()
        for _ in range(repeat):
            fn()
        end.record()
        end.synchronize()
        times.append(1e3 * cuda.event_elapsed_time(start, end) / repeat)
    return float(np.median(times))


def _name(kernel):
    fn = getattr(kernel, "py_func", None) or getattr(kernel, "fn", None)
    return getattr(fn, "__name__", type(kernel).__name__)


VARIANTS = {"default": {}, "fused": dict(fused=True), "unfused": dict(fused=False),
            "fixed": dict(fused=False, adaptive=False), "nographs": dict(graphs=False)}


def breakdown(name, sizes, batch, repeat, variant):
    from numba import cuda
    from fastbp import cuda_plan
    from fastbp.kernels.cuda import launch_config
    from fastbp.kernels.cuda import plan as plan_module
    X, y = make_data(sizes, batch, "float32")
    dX, dy = cuda.to_device(X), cuda.to_device(y)
    with launch_config(**VARIANTS[variant]):   # the plan records its launches inside
        net, opt = fastbp_net(sizes, "cuda")
        for _ in range(3):   # plan built, then (config.graphs) the step's graph
            net.train_step(dX, dy, opt)
    cuda.synchronize()
    plan = cuda_plan.runner(net).plans[batch]
    launches = list(plan.passes) + list(plan.update) + [plan.record]
    rows = []
    for launch in launches:
        rows.append({"kernel": _name(launch.kernel),
                     "grid": [int(g) for g in np.atleast_1d(launch.grid)],
                     "block": int(np.prod(launch.block)), "us": _event_us(launch, repeat)})
    graph_us, whole = None, None
    if plan.graphs:   # the step (or its passes) replayed as one CUDA graph (plan.py)
        graph, version = next(iter(plan.graphs.values()))
        whole = version is not None
        stream = plan.passes[0]._stream
        graph_us = _event_us(lambda: graph.launch(stream), repeat)
    with launch_config(**VARIANTS[variant]):
        step_us = _event_us(lambda: net.train_step(dX, dy, opt), repeat)
    return {"config": name, "sizes": sizes, "batch": batch, "variant": variant,
            "launch_path": plan_module.launch_path(), "launches": rows,
            "sum_us": sum(r["us"] for r in rows), "graph_us": graph_us,
            "graph_is_whole_step": whole,
            "step_us": step_us}


def show(result):
    label = "-".join(str(s) for s in result["sizes"])
    print(f"\n{result['config']} ({label}, batch {result['batch']}, "
          f"{result['variant']} plan): "
          f"{len(result['launches'])} launches")
    print(f"{'kernel':28s} {'grid':>16s} {'block':>6s} {'us':>8s}")
    for r in result["launches"]:
        grid = "x".join(str(g) for g in r["grid"])
        print(f"{r['kernel'][:28]:28s} {grid:>16s} {r['block']:6d} {r['us']:8.2f}")
    print(f"{'sum of launches':52s} {result['sum_us']:8.2f}")
    if result["graph_us"] is not None:
        what = ("the step as one CUDA graph (all of the above)" if result["graph_is_whole_step"]
                else "the passes as one CUDA graph (all but the update, record)")
        print(f"{what:52s} {result['graph_us']:8.2f}")
    print(f"{'one step (train_step, chained)':52s} {result['step_us']:8.2f}")


def main(argv=None):
    from fastbp import device
    sim = device.simulator_enabled()
    known = dict(CONFIGS, **SMOKE)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="smoke" if sim else "tiny,mnist,medium,deep",
                        help=f"configs, comma-separated: {', '.join(known)}")
    parser.add_argument("--repeat", type=int, default=2 if sim else 50,
                        help="launches per timing")
    parser.add_argument("--variant", default="default", choices=list(VARIANTS),
                        help="the plan: default, fused, unfused or fixed (see the docstring)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    chosen = chosen_configs(parser, args.only)
    why = cuda_or_exit("gpu_step_breakdown")
    print(f"# {why}")
    results = []
    for name, (sizes, batch) in chosen:
        results.append(breakdown(name, sizes, batch, args.repeat, args.variant))
        show(results[-1])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": why, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
