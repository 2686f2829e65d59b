"""Time to the first CUDA training step of a new process, with numba's cache cold and warm.

Two fresh processes share an empty cache folder (NUMBA_CACHE_DIR): the first compiles
every CUDA kernel of a 784-128-10 step (tanh, softmax cross-entropy, Adam) and stores
it, the second loads them (kernels/cuda/_jit.py). Each reports seconds from the start
of ``import fastbp`` to the first step's loss read on the host, in parts (the import,
the network's construction with its plan, the step), how long importing numba.cuda,
initialising the driver, then creating the CUDA context and the compile probe took
(fastbp.device.startup: all four happen during the construction, the last two side
by side, the probe on a thread of its own, so their seconds are part of the
construction's, not added to it), whether ml_dtypes was imported (numba-cuda imports
it where installed: 0.6 s of a 0.8 s numba.cuda import on this project's 2-core
machine with JAX installed, 0.2 s without), and how many kernels it compiled and
loaded.

    python benchmarks/cuda_first_step.py           # on a machine with a GPU
    python benchmarks/cuda_first_step.py --stub    # without one: numba-cuda compiles
        # for real, the driver is stubbed (benchmarks/cuda_host_overhead.py), so the
        # times are the host's side only (no module loading, no GPU work); creating
        # the context is modelled as --stub-context-seconds of waiting (default 0.41,
        # an H200's), which is what the construction can overlap
    python benchmarks/cuda_first_step.py --warm 3 --compare-serial
        # each warm process also run with the probe after the context
        # (FASTBP_CUDA_PROBE_THREAD=0): what running them side by side saves or costs
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

FIRST_STEP = r"""
import gc, json, sys, time
stub = sys.argv[1] == "stub"
if stub:
    sys.path.insert(0, sys.argv[2])
    import cuda_host_overhead
    cuda_host_overhead.stub_driver(context_seconds=float(sys.argv[3]))
import warnings
warnings.simplefilter("ignore")
t0 = time.perf_counter()
import numpy as np
import fastbp
t_import = time.perf_counter()
net = fastbp.MLP([784, 128, 10], activation="tanh", seed=0, device="cuda")
t_net = time.perf_counter()
opt = fastbp.Adam(net, lr=1e-3)
rng = np.random.default_rng(0)
X, y = rng.random((64, 784), dtype=np.float32), rng.integers(0, 10, 64)
loss = float(net.train_step(X, y, opt))
seconds = time.perf_counter() - t0
parts = {"import": t_import - t0, "MLP": t_net - t_import, "step": t0 + seconds - t_net}
startup = getattr(fastbp.device, "startup", {})   # fastbp._probe_beside's seconds
from numba.cuda.dispatcher import CUDADispatcher
hits = misses = 0
for k in gc.get_objects():
    if isinstance(k, CUDADispatcher):
        hits += sum(k.stats.cache_hits.values())
        misses += sum(k.stats.cache_misses.values())
print(json.dumps({"seconds": seconds, "compiled": misses, "loaded": hits, "parts": parts,
                  "import": startup.get("import"), "driver": startup.get("driver"),
                  "context": startup.get("context"),
                  "probe": startup.get("probe"), "ml_dtypes": "ml_dtypes" in sys.modules}))
"""


def first_step(cache, stub, context_seconds, serial=False):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    if serial:   # the probe after the context, in the same thread (fastbp.device)
        env["FASTBP_CUDA_PROBE_THREAD"] = "0"
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", FIRST_STEP, "stub" if stub else "gpu",
                           HERE, str(context_seconds)],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:
        sys.exit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stub", action="store_true",
                        help="no GPU: stub the CUDA driver (host-side times only)")
    parser.add_argument("--stub-context-seconds", type=float, default=0.41,
                        help="with --stub: seconds creating the CUDA context takes "
                             "(default 0.41, an H200's)")
    parser.add_argument("--warm", type=int, default=1,
                        help="processes to time with the warm cache (default 1)")
    parser.add_argument("--compare-serial", action="store_true",
                        help="time each warm process again with the probe run after "
                             "the context, not beside it (FASTBP_CUDA_PROBE_THREAD=0), "
                             "alternating the two")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    context = args.stub_context_seconds if args.stub else 0.0
    with tempfile.TemporaryDirectory() as cache:
        rows = {"cold": first_step(cache, args.stub, context)}
        for i in range(args.warm):
            name = "warm" if args.warm == 1 else f"warm {i + 1}"
            rows[name] = first_step(cache, args.stub, context)
            if args.compare_serial:
                rows[name + ", serial"] = first_step(cache, args.stub, context, True)
    where = (f"driver stubbed, host side only; context modelled as {context:.2f} s"
             if args.stub else "GPU")
    print(f"first CUDA step of a new process, 784-128-10 batch 64 ({where})")
    print("| cache | s to first loss | kernels compiled | kernels loaded | s: import fastbp"
          " / MLP(device='cuda') / first step and its loss | s within MLP: import "
          "numba.cuda / driver initialisation | then side by side: CUDA context / "
          "compile probe |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        parts = " / ".join(f"{v:.2f}" for v in r["parts"].values())
        imported, side = (" / ".join("-" if r.get(k) is None else f"{r[k]:.2f}"
                                     for k in keys)
                          for keys in (("import", "driver"), ("context", "probe")))
        print(f"| {name} | {r['seconds']:.2f} | {r['compiled']} | {r['loaded']} | {parts}"
              f" | {imported} | {side} |")
    if any(r.get("ml_dtypes") for r in rows.values()):
        print("ml_dtypes was imported (numba-cuda imports it where it is installed, for "
              "bfloat16): part of numba.cuda's import")
    if args.stub:
        print("(with --stub the stub imports numba.cuda before fastbp and has no driver "
              "to initialise: neither is in these times)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
