"""Start-up cost: compiling the kernels cold, and import-to-first-step with a warm cache.

Each measurement is a fresh Python process that imports fastbp, builds a 784-128-10 tanh
network and runs one float32 training step (softmax cross-entropy, SGD), timed from
before ``import fastbp`` to after the step. "cold" uses an empty numba cache folder
(NUMBA_CACHE_DIR), so every kernel the step needs is compiled; "warm" reuses it.

    python benchmarks/startup.py [--repeats 3]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import time
start = time.perf_counter()
import numpy as np
import fastbp
imported = time.perf_counter()
net = fastbp.MLP([784, 128, 10], activation="tanh", seed=0)
rng = np.random.default_rng(0)
X = rng.standard_normal((64, 784)).astype(np.float32)
y = rng.integers(0, 10, 64)
net.train_step(X, y, fastbp.SGD(net, lr=0.01))
done = time.perf_counter()
print(imported - start, done - start)
"""


def run(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cold, warm = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            cold.append(run(cache))
            warm.append(run(cache))
    for name, rows in (("cold cache", cold), ("warm cache", warm)):
        print(f"{name}: import {statistics.median(r[0] for r in rows):.2f} s, "
              f"import to first finished step {statistics.median(r[1] for r in rows):.2f} s"
              f" (median of {len(rows)})")


if __name__ == "__main__":
    main()
