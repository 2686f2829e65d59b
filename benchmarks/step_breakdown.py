"""Where one training step of a small network goes, per call: the Python checks and
glue around the compiled step, numba's dispatch of its arguments, and the compiled
step's own parts (forward, loss, backward, update).

    python benchmarks/step_breakdown.py                    # tiny, float32 and float64
    python benchmarks/step_breakdown.py --config mnist --threads 1

Each phase is a call timed in batches of repeats; the phases take turns within every
round and the figure is the 10th percentile over the rounds, in microseconds of this
process's CPU time (time.process_time): on a shared machine the wall clock counts the
other processes' turns, the CPU time much less. That suits serial work only: a step
with parallel layers also counts the pool's threads (busy-waiting included), so run
bigger configurations with ``--threads 1``. The compiled parts are timed by calling
the network's compiled passes in a compiled loop, which leaves out dispatch; "dispatch"
is a compiled function that does nothing, called with the step's arguments.

Rows: train_step (the public call), batch checks (MLP._batch: the form of the batch,
then the compiled value check), Python around the kernel (train_step less the kernel
call and the batch checks), kernel call (network_train_step called from Python),
dispatch, compiled step, and the compiled step's parts as differences of the passes
(forward; loss = forward + loss less forward; backward = forward + loss + backward
less forward + loss; update = step less forward + loss + backward). A difference is
only as good as the noise of the two figures it comes from: on a network the size of
"deep" the small rows (loss, Python around the kernel) drown in it, even below zero.
"""
import argparse
import sys
import time

import numpy as np

try:   # run as a script (python benchmarks/x.py) or imported as benchmarks.x
    from .yardstick import CONFIGS, make_data
except ImportError:
    from yardstick import CONFIGS, make_data


def _looped(kernel):
    """A compiled function calling ``kernel(*args)`` n times (args as a tuple)."""
    from numba import njit

    @njit
    def loop(n, args):
        for _ in range(n):
            kernel(*args)
    return loop


def _noop(n_args):
    """A compiled function of ``n_args`` parameters that does nothing: what dispatch
    (typing and unboxing the arguments, boxing the result) costs on its own."""
    from numba import njit
    names = ", ".join(f"a{i}" for i in range(n_args))
    scope = {}
    exec(f"def noop({names}):\n    return 0.0, 0", scope)   # a star-args one costs more
    return njit(scope["noop"])


def phases(sizes, batch, dtype):
    """{name: (function of one argument n that runs the phase n times)}; every phase
    has run once (compiled) when this returns."""
    import fastbp
    net = fastbp.MLP(sizes, activation="tanh", dtype=dtype, seed=0)
    opt = fastbp.SGD(net, lr=1e-6)   # small steps: the values stay in range
    X, y = make_data(sizes, batch, dtype)
    net.train_step(X, y, opt)
    from fastbp.plan import plan_for
    passes = net._kernels
    plan = plan_for(net, batch)   # the arguments train_step passes
    labels, targets = y, net._no_targets
    code, _, _, state, hparams, step = opt.compiled_args_for(net)
    forward = plan.forward_args(X)
    loss = plan.loss_args(X, labels, targets)
    backward = plan.backward_args(X, labels, targets)
    train = plan.train_step_args(X, labels, targets, (code, state, hparams, step))
    noop = _noop(len(train))

    def repeat(fn, *args):
        def run(n):
            for _ in range(n):
                fn(*args)
        return run
    table = {
        "train_step": repeat(net.train_step, X, y, opt),
        "batch checks": repeat(net._batch, X, y),
        "kernel call": repeat(passes.network_train_step, *train),
        "dispatch": repeat(noop, *train),
    }
    for name, kernel, args in (("compiled forward", passes.network_forward, forward),
                               ("compiled +loss", passes.network_loss, loss),
                               ("compiled +backward", passes.network_backward, backward),
                               ("compiled step", passes.network_train_step, train)):
        loop = _looped(kernel)
        table[name] = lambda n, loop=loop, args=args: loop(n, args)
    for run in table.values():
        run(1)
    return table


def calls_for(run, seconds):
    """How many calls of a phase take about ``seconds`` of CPU time (at least 1)."""
    n = 1
    while True:
        start = time.process_time()
        run(n)
        took = time.process_time() - start
        if took >= seconds / 10 or n >= 1 << 20:
            return max(1, int(n * seconds / max(took, 1e-9)))
        n *= 4


def measure(table, calls, rounds):
    """{name: 10th-percentile microseconds of CPU time per call}; ``calls``: {name:
    calls per round}."""
    samples = {name: [] for name in table}
    for _ in range(rounds):
        for name, run in table.items():
            start = time.process_time()
            run(calls[name])
            samples[name].append(1e6 * (time.process_time() - start) / calls[name])
    return {name: sorted(v)[len(v) // 10] for name, v in samples.items()}


def report(t):
    """The rows of the module doc, from measure's figures."""
    return [
        ("train_step", t["train_step"]),
        ("  batch checks", t["batch checks"]),
        ("  Python around the kernel", t["train_step"] - t["kernel call"]
         - t["batch checks"]),
        ("  kernel call", t["kernel call"]),
        ("    dispatch (no-op, same arguments)", t["dispatch"]),
        ("    compiled step", t["compiled step"]),
        ("      forward", t["compiled forward"]),
        ("      loss", t["compiled +loss"] - t["compiled forward"]),
        ("      backward", t["compiled +backward"] - t["compiled +loss"]),
        ("      update", t["compiled step"] - t["compiled +backward"]),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", choices=list(CONFIGS))
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--threads", type=int, default=None,
                        help="numba threads (default: fastbp's)")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--seconds", type=float, default=0.01,
                        help="CPU seconds of calls per phase and round")
    args = parser.parse_args(argv)
    import fastbp
    if args.threads:
        fastbp.set_num_threads(args.threads)
    sizes, batch = CONFIGS[args.config]
    for dtype in args.dtypes.split(","):
        table = phases(sizes, batch, dtype)
        calls = {name: calls_for(run, args.seconds) for name, run in table.items()}
        figures = measure(table, calls, args.rounds)
        print(f"\n{args.config} {sizes}, batch {batch}, {dtype}: us of CPU time per call "
              f"(10th percentile of {args.rounds} rounds of {args.seconds:g} s per phase)")
        for name, us in report(figures):
            print(f"{name:<40} {us:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
