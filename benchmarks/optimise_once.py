"""Compile time and results, with and without kernels/cpu/_optimise_once.py.

    python benchmarks/optimise_once.py [--dtype float32 float64] [--json OUT]

Each way of compiling runs in a fresh process with an empty numba cache: numba's own
pipeline, which optimises every callee again at each level above it
(FASTBP_OPTIMISE_CALLEES_AGAIN=1), then fastbp's, which stops after two. The process
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

AGAIN_ENV = "FASTBP_OPTIMISE_CALLEES_AGAIN"
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


def run(again, dtypes):
    """One fresh process's JSON: numba's pipeline at every level when ``again``."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, FASTBP_SPECIALISED_SETS="0",
                   FASTBP_COMPILE_PROCESSES="1", **{AGAIN_ENV: "1" if again else "0"})
        out = subprocess.run([sys.executable, __file__, "--child", *dtypes], env=env,
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    numba_way = run(True, args.dtype)
    fastbp_way = run(False, args.dtype)
    differ = sorted(case for case, bits in numba_way["cases"].items()
                    if fastbp_way["cases"].get(case) != bits)
    print(f"{'way of compiling':40s} {'CPU s':>7s}")
    print(f"{'numba: every level optimises again':40s} {numba_way['cpu_s']:7.1f}")
    print(f"{'fastbp: each callee twice at most':40s} {fastbp_way['cpu_s']:7.1f}")
    print(f"ratio {fastbp_way['cpu_s'] / numba_way['cpu_s']:.2f}; "
          f"{len(numba_way['cases']) - len(differ)} of {len(numba_way['cases'])} cases "
          f"bit for bit the same")
    for case in differ:
        print("  differs:", case)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"numba": numba_way, "fastbp": fastbp_way, "differ": differ}, f)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
