"""Compile time and results, with and without kernels/cpu/_optimise_once.py (or
kernels/cpu/_inline_once.py).

    python benchmarks/optimise_once.py [--dtype float32 float64] [--json OUT]
        [--variable FASTBP_OPTIMISE_CALLEES_AGAIN | FASTBP_INLINE_AGAIN]

Each way of compiling runs in a fresh process with an empty numba cache: numba's own
(the variable set to 1: by default FASTBP_OPTIMISE_CALLEES_AGAIN, numba's pipeline,
which optimises every callee again at each level above it; FASTBP_INLINE_AGAIN, numba's
inliner, which builds an inlined function's IR again at every call site), then
fastbp's (the variable 0). The process
trains networks of every activation, loss and optimizer (momentum with Nesterov and
weight decay, AMSGrad, AdamW with gradient clipping, centered RMSprop with momentum)
on two shapes, through the passes every network shares (FASTBP_SPECIALISED_SETS=0,
compiled in that one process: FASTBP_COMPILE_PROCESSES=1): three train_step calls, a
train_epoch, predict, and hashes each case's losses, parameters and predictions. The
report gives each way's CPU seconds (compiling is nearly all of it) and the cases whose
bits differ. Takes 3-4 minutes on a 2-core machine for both dtypes.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

# each variable that restores numba's behaviour, and its two ways' names
WAYS = {
    "FASTBP_OPTIMISE_CALLEES_AGAIN": ("numba: every level optimises again",
                                      "fastbp: each callee twice at most"),
    "FASTBP_INLINE_AGAIN": ("numba: inlined IR built at every call",
                            "fastbp: inlined IR built once"),
}
SHAPES = (([13, 37, 29, 5], 33), ([257, 255, 253, 7], 100))


def _optimizers(fastbp):
    return {
        "sgd": lambda n: fastbp.SGD(n, lr=1e-3, momentum=0.9, nesterov=True,
                                    weight_decay=1e-3),
        "adam": lambda n: fastbp.Adam(n, lr=1e-3, amsgrad=True),
        "adamw": lambda n: fastbp.AdamW(n, lr=1e-3, max_grad_norm=0.5),
        "rmsprop": lambda n: fastbp.RMSprop(n, lr=1e-3, centered=True, momentum=0.5),
    }


def child(dtypes):
    """Train every case, print JSON {"cpu_s": ..., "cases": {case: hashes}}."""
    import numpy as np

    import fastbp

    def digest(array):
        return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]

    start = time.process_time()
    cases = {}
    for dtype in dtypes:
        for sizes, batch in SHAPES:
            for act in fastbp.ACTIVATIONS:
                for loss in fastbp.LOSSES:
                    for name, make in _optimizers(fastbp).items():
                        rng = np.random.default_rng(7)
                        net = fastbp.MLP(sizes, activation=act, loss=loss, dtype=dtype,
                                         seed=5)
                        opt = make(net)
                        X = rng.standard_normal((3 * batch + 5, sizes[0])).astype(dtype)
                        if loss == "softmax_cross_entropy":
                            y = rng.integers(0, sizes[-1], len(X))
                        else:
                            y = rng.random((len(X), sizes[-1])).astype(dtype)
                        losses = [net.train_step(X[:batch], y[:batch], opt)
                                  for _ in range(3)]
                        after_steps = digest(net.params)
                        try:
                            net.train_epoch(X, y, opt, batch_size=batch)
                        except fastbp.TrainingDiverged:   # restored: the bits still tell
                            pass
                        cases[f"{dtype} {sizes} {act} {loss} {name}"] = [
                            digest(np.array(losses)), after_steps, digest(net.params),
                            digest(net.predict(X))]
    json.dump({"cpu_s": time.process_time() - start, "cases": cases}, sys.stdout)


def run(again, dtypes, variable):
    """One fresh process's JSON: numba's own way when ``again`` (``variable`` 1)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, FASTBP_SPECIALISED_SETS="0",
                   FASTBP_COMPILE_PROCESSES="1", **{variable: "1" if again else "0"})
        out = subprocess.run([sys.executable, __file__, "--child", *dtypes], env=env,
                             capture_output=True, text=True)
    if out.returncode:   # a way that cannot compile: say why, not just that it failed
        raise SystemExit(f"{variable}={'1' if again else '0'}: the child failed "
                         f"(exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--variable", default="FASTBP_OPTIMISE_CALLEES_AGAIN",
                        choices=sorted(WAYS), help="which of fastbp's changes to "
                        "numba's compiler to compare with numba's own way")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    numba_way = run(True, args.dtype, args.variable)
    fastbp_way = run(False, args.dtype, args.variable)
    numba_name, fastbp_name = WAYS[args.variable]
    differ = sorted(case for case, bits in numba_way["cases"].items()
                    if fastbp_way["cases"].get(case) != bits)
    print(f"{'way of compiling':40s} {'CPU s':>7s}")
    print(f"{numba_name:40s} {numba_way['cpu_s']:7.1f}")
    print(f"{fastbp_name:40s} {fastbp_way['cpu_s']:7.1f}")
    print(f"ratio {fastbp_way['cpu_s'] / numba_way['cpu_s']:.2f}; "
          f"{len(numba_way['cases']) - len(differ)} of {len(numba_way['cases'])} cases "
          f"bit for bit the same")
    for case in differ:
        print("  differs:", case)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"variable": args.variable, "numba": numba_way,
                       "fastbp": fastbp_way, "differ": differ}, f)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
