"""Recomputation on a deep network: memory saved and time paid.

32 layers of 1024 (tanh), then a linear 1024 -> 10 output layer; batch 256, float32, softmax cross-entropy,
SGD. For each checkpoint setting it prints the activation workspace (the memory
checkpointing saves: outputs kept for backward, plus the recompute scratch), the peak
traced by tracemalloc during a step (numpy allocations, so the workspaces), and the median
time of a training step, with ratios to keeping everything.

    python benchmarks/checkpoint.py [--settings 1,2,4,6,8]
"""
import argparse
import statistics
import time
import tracemalloc

import numpy as np

import fastbp

SIZES = [1024] * 33 + [10]
BATCH = 256


def measure(k, X, y, repeats=5):
    net = fastbp.MLP(SIZES, activation="tanh", seed=0, checkpoint=k)
    opt = fastbp.SGD(net, lr=1e-3)
    tracemalloc.start()
    net.train_step(X, y, opt)            # allocates the workspaces
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        net.train_step(X, y, opt)
        times.append(time.perf_counter() - start)
    return net._workspace.nbytes(), peak, 1e3 * statistics.median(times), net.n_params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="1,2,4,6,8")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    rows = [(int(k), *measure(int(k), X, y)) for k in args.settings.split(",")]
    base_ws, base_ms = rows[0][1], rows[0][3]
    print(f"{len(SIZES) - 2} layers of {SIZES[1]} + output layer, batch {BATCH}, float32; "
          f"parameters {rows[0][4] * 4 / 2**20:.0f} MiB (+ the same for gradients)")
    print(f"{'checkpoint':>10} {'workspace MiB':>14} {'peak traced MiB':>16} {'ms/step':>9} "
          f"{'memory x':>9} {'time x':>7}")
    for k, ws, peak, ms, _ in rows:
        print(f"{k:>10} {ws / 2**20:14.1f} {peak / 2**20:16.1f} {ms:9.1f} "
              f"{ws / base_ws:9.2f} {ms / base_ms:7.2f}")


if __name__ == "__main__":
    main()
