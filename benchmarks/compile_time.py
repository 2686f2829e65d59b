"""Cold compile time of each CPU kernel: numba compiling it from nothing.

Each kernel is timed in a fresh Python process with an empty numba cache folder
(NUMBA_CACHE_DIR), from just before its first call to just after it, so the time is
everything that call compiles: the kernel and every kernel it calls. The network
passes are called through fastbp.MLP (a float32 [64, 256, 10] relu network, softmax
cross-entropy, Adam: what ``python -m fastbp train`` builds); the single-layer kernels
and the loss and optimizer kernels directly. "train" is the whole first call sequence
of ``fastbp.fit`` with validation data (train step, loss, forward), as the command
line runs it.

    python benchmarks/compile_time.py                  # every kernel, float32
    python benchmarks/compile_time.py --only train,forward --dtype float64

One process per kernel, one after the other (a cold training pass compiles in two
processes, as in ``fit``; FASTBP_COMPILE_PROCESSES=1 times one); the machine's other
load shows in the times, so compare rows measured in one run.
"""
import argparse
import os
import subprocess
import sys
import tempfile

SETUP = r"""
import sys, time
import numpy as np
import fastbp
from fastbp.kernels import codes, cpu
dtype = np.dtype(sys.argv[2])
rng = np.random.default_rng(0)
f = lambda *shape: rng.standard_normal(shape).astype(dtype)
net = fastbp.MLP([64, 256, 10], activation="relu", dtype=dtype.name, seed=0)
opt = fastbp.Adam(net)
X, y = f(100, 64), rng.integers(0, 10, 100)
relu, slope = codes.RELU, 0.01
S, A, dA, dS = f(32, 256), f(32, 256), f(32, 256), f(32, 256)
W, b, Xl, dX, dW, db = f(256, 64), f(256), f(32, 64), f(32, 64), f(256, 64), f(256)
Z, dZ, labels = f(32, 10), f(32, 10), rng.integers(0, 10, 32)
p, g, state, hp = f(1000), f(1000), np.zeros((2, 1000), dtype), np.zeros(7)
hp[codes.HP_LR] = 1e-3
"""

KERNELS = {
    # name: the first call, timed
    "train": "net.fit(X, y, epochs=1, optimizer=opt, validation_data=(X, y), "
             "verbose=False)",
    "train_step": "net.train_step(X[:32], y[:32], opt)",
    # the passes of every activation (ALL), which a process gets once it has met more
    # activation sets than kernels/cpu/network.py's SPECIALISED_SETS (the test suite)
    # (tanh: the setup's relu network already has passes of its own)
    "train_step_all": ("from fastbp.kernels.cpu import network as N; N.SPECIALISED_SETS = 0; "
                       "n = fastbp.MLP([64, 256, 10], activation='tanh', dtype=dtype.name, "
                       "seed=0); n.train_step(X[:32], y[:32], fastbp.Adam(n))"),
    "train_epoch": "net.train_epoch(X, y, opt, 32)",
    "backward": "net.backward(X, y)",
    "forward": "net.forward(X)",
    "linear_forward": "cpu.linear_forward(Xl, W, b, relu, slope, S, A)",
    "linear_backward": "cpu.linear_backward(dA, A, S, Xl, W, relu, slope, dS, dX, dW, db, "
                       "True)",
    "activation_forward": "cpu.activation_forward(S, A, relu, slope)",
    "activation_backward": "cpu.activation_backward(dA, A, S, dS, relu, slope)",
    "loss_forward_backward": "cpu.loss_forward_backward(codes.SOFTMAX_CROSS_ENTROPY, Z, "
                             "labels, Z[:0], dZ)",
    "optimizer_update": "cpu.optimizer_update(codes.ADAM, p, g, state, hp, 1)",
}

CHILD = SETUP + r"""
kernel = sys.argv[1]
code = compile(KERNELS[kernel], kernel, "exec")
start = time.perf_counter()
exec(code)
print(time.perf_counter() - start)
"""


def cold_seconds(kernel, dtype):
    """Seconds of the first call of ``kernel`` in a fresh process, empty cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run(
            [sys.executable, "-c", f"KERNELS = {KERNELS!r}\n" + CHILD, kernel, dtype],
            env=env, check=True, capture_output=True, text=True,
            cwd=cache)   # not the repository root: import the installed fastbp
    return float(out.stdout.split()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(KERNELS),
                        help="kernels, comma-separated (default: all)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = [n for n in names if n not in KERNELS]
    if unknown:
        parser.error(f"unknown kernel {unknown[0]!r}; choose from {', '.join(KERNELS)}")
    print(f"| kernel ({args.dtype}) | cold compile, s |")
    print("|---|---|")
    for name in names:
        print(f"| {name} | {cold_seconds(name, args.dtype):.1f} |", flush=True)


if __name__ == "__main__":
    main()
