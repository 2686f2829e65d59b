"""fastbp's thread pool beside numpy's OpenBLAS pool on the same cores.

A training step right after a multithreaded numpy product, and a numpy product right
after a step, against each alone.

OpenBLAS's idle threads spin for 2**OPENBLAS_THREAD_TIMEOUT CPU cycles after each
multithreaded call (2**28 by default, about 0.1 s), and GNU OpenMP's (numba's pool)
for GOMP_SPINCOUNT spins (fastbp/__init__.py sets 10000). On a machine with as many
cores as threads, a pool that is still spinning holds a core the other pool needs. This
script measures that, in three child processes of ``--threads`` threads each:

    numpy first, default timeout   numpy imported before fastbp, the variable unset
                                   (numpy's OpenBLAS keeps its 2**28 cycles)
    numpy first, timeout 20        OPENBLAS_THREAD_TIMEOUT=20 in the environment
    fastbp first                   fastbp imported before numpy, the variable unset
                                   (fastbp sets it to 20 before numpy loads OpenBLAS)

    python benchmarks/pools_beside.py [--config deep] [--threads 2] [--repeats 3]

Each child prints the timeout numpy's OpenBLAS read (its ``openblas_thread_timeout``:
0 for unset, i.e. OpenBLAS's default of 28; "?" where it has no such function) and,
median ms over 40 calls per repeat, the step alone, the step right after a 256 x 256
float32 numpy product, that product alone, and the product right after a step. Wall
time, so run it on an otherwise idle machine.
"""
import argparse
import json
import os
import subprocess
import sys

try:   # run as a script (python benchmarks/x.py) or imported as benchmarks.x
    from .yardstick import CONFIGS
except ImportError:
    from yardstick import CONFIGS

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {here!r})
first, config, threads, repeats = {first!r}, {config!r}, {threads}, {repeats}
if first == "fastbp":
    import fastbp   # sets OPENBLAS_THREAD_TIMEOUT before numpy loads its OpenBLAS
import numpy as np  # "numpy first": numpy's OpenBLAS reads the environment as given
import fastbp
from fastbp.threads import numpy_openblas_thread_timeout
read = numpy_openblas_thread_timeout()
from yardstick import CONFIGS, fastbp_systems, make_data
fastbp.set_num_threads(threads)
sizes, batch = CONFIGS[config]
X, y = make_data(sizes, batch, np.float32)
step = fastbp_systems(sizes, batch, np.float32, X, y)[0]
A = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
C = np.empty_like(A)

def product():
    np.dot(A, A, out=C)

def median_ms(timed, before=None, n=40):
    times = []
    for _ in range(n):
        if before is not None:
            before()
        t = time.perf_counter()
        timed()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))

step(); product()
rows = []
for _ in range(repeats):
    rows.append([median_ms(step), median_ms(step, product), median_ms(product),
                 median_ms(product, step)])
print("RESULT " + json.dumps({{"rows": rows, "timeout": read}}))
"""

VARIANTS = (("numpy first, default timeout", "numpy", None),
            ("numpy first, timeout 20", "numpy", "20"),
            ("fastbp first", "fastbp", None))


def run_child(first, timeout, config, threads, repeats):
    env = dict(os.environ)
    env.pop("OPENBLAS_THREAD_TIMEOUT", None)
    if timeout is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = timeout
    code = CHILD.format(here=HERE, first=first, config=config, threads=threads,
                        repeats=repeats)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"child process ({first} first) failed:\n{done.stderr[-3000:]}")
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="deep", choices=list(CONFIGS),
                        help="yardstick config (default deep)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for fastbp and numpy (default 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rows of medians per child (default 3)")
    args = parser.parse_args(argv)
    print(f"{args.config}, float32, {args.threads} threads; median ms of 40 calls")
    print(f"{'child':30s} {'read':>4s} {'step':>9s} {'after np':>9s} {'np':>9s} "
          f"{'np after':>9s}")
    for label, first, timeout in VARIANTS:
        result = run_child(first, timeout, args.config, args.threads, args.repeats)
        read = "?" if result["timeout"] is None else str(result["timeout"])
        for row in result["rows"]:
            print(f"{label:30s} {read:>4s} " + " ".join(f"{v:9.3f}" for v in row))


if __name__ == "__main__":
    main()
