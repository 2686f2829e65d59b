"""The training-step yardstick: fastbp against the matrix-product floor and its peers.

Every system on the same data. For each configuration below it prints the median
milliseconds per training step (forward + loss + backward + plain SGD; tanh hidden
layers, softmax cross-entropy) of

    fastbp   net.train_step(X, y, SGD): the public API, input checks included
    epoch    per step of net.train_epoch: 32 such steps in one compiled call
    floor    the three matrix products per layer alone (numpy, preallocated outputs):
             S = X W^T, dW = dS^T X, dX = dS W (fastbp skips the first layer's dX)
    torch    PyTorch eager, same thread count (when installed)
    jax      the whole step under jax.jit (when installed), on as many cores as the
             thread count (``on_cores``)
    sklearn  MLPClassifier.partial_fit on one minibatch (when installed), its BLAS
             held to the same thread count, as the floor's

and fastbp's ratio to each, plus fastbp's backward/forward time ratio.

    python benchmarks/yardstick.py                  # float32 and float64, 2 threads
    python benchmarks/yardstick.py --only tiny,mnist --dtypes float32 --threads 1

How a run times them. This process imports neither fastbp nor its peers: it starts
worker processes (this script with ``--_worker``), a peers worker (the floor, then
PyTorch, JAX, scikit-learn; fastbp never imported there, since its thread pool would
share the cores with theirs) and a fastbp worker (fastbp, and the floor again beside
it) in each of ``--rounds`` rounds, in the order peers, fastbp, fastbp, peers, peers,
fastbp, ... (so a steady drift in the machine's speed favours neither), for one
configuration at a time: its samples of both kinds then lie seconds apart (a minute
or two for large), not one whole worker for every configuration apart (minutes).
Each worker times every system with budget / rounds seconds and reports its samples
(common.round_seconds); the table holds each system's median over all its samples,
every round pooled, and the floor is the faster of its two pooled medians (beside the
peers, beside fastbp). The rounds are there because this project's shared 2-vCPU
machines have slow stretches, seconds to minutes long, where everything runs 1.5-2x
slower: when the peers and fastbp were timed once each, minutes apart, a stretch over
one of them alone moved a ratio by as much (deep float32: fastbp 3.98 ms in one run,
2.02 in the next). After each table a line per configuration gives how many samples
each median pools, the spread of fastbp's train_step samples (75th / 25th percentile)
and its median in each round, so a stretch shows.

Compare ratios within one run only.
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys

import numpy as np

try:   # run as a script (python benchmarks/x.py) or imported by asv as benchmarks.x
    from .common import median_seconds, round_seconds
except ImportError:
    from common import median_seconds, round_seconds

CONFIGS = {
    # name: (sizes, batch)
    "tiny": ([64, 64, 10], 32),
    "mnist": ([784, 128, 10], 64),
    "medium": ([784, 512, 512, 10], 128),
    "deep": ([256] * 10 + [10], 64),     # input 256, nine hidden layers of 256, 10 out
    "large": ([1024, 4096, 4096, 1024], 512),
}
LR = 0.01
EPOCH_STEPS = 32   # steps per train_epoch call in the "epoch" column
PEERS = ("torch", "jax", "sklearn")
# Samples per system and config that a run aims for (what median_seconds takes in one
# process), spread over its rounds and rounded up per worker (worker_samples): with 3
# rounds, 3 per worker, so 9 in all, each budget / 9 long (budget / 7 with one round);
# the time per system is the same.
SAMPLES = 7


def median_ms(fn, budget_s=1.0, rounds=7):
    """Median milliseconds of one call of ``fn`` (common.median_seconds)."""
    return 1e3 * median_seconds(fn, budget_s, rounds)


def make_data(sizes, batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch)
    return X, y


def fastbp_systems(sizes, batch, dtype, X, y):
    import fastbp
    from fastbp.kernels import cpu
    from fastbp.plan import plan_for
    net = fastbp.MLP(sizes, activation="tanh", dtype=dtype, seed=0)
    opt = fastbp.SGD(net, lr=LR)
    plan = plan_for(net, batch)   # the arguments train_step passes
    Xc = np.ascontiguousarray(X, dtype=dtype)

    def step():
        net.train_step(X, y, opt)

    # train_epoch: EPOCH_STEPS steps in one compiled call, timed per step
    X_epoch = np.ascontiguousarray(np.tile(X, (EPOCH_STEPS, 1)), dtype=dtype)
    y_epoch = np.tile(y, EPOCH_STEPS)

    def epoch():
        net.train_epoch(X_epoch, y_epoch, opt, batch_size=batch)

    passes = cpu.network_passes(net.layout.act_codes)   # this network's kernels

    def forward():
        passes.network_forward(*plan.forward_args(Xc))

    def forward_backward():
        passes.network_backward(*plan.backward_args(Xc, y, net._no_targets))
    return step, epoch, forward, forward_backward


def floor_step(sizes, batch, dtype, X):
    rng = np.random.default_rng(1)
    Ws = [rng.standard_normal((o, i)).astype(dtype) for i, o in zip(sizes[:-1], sizes[1:])]
    ins = [X] + [rng.standard_normal((batch, o)).astype(dtype) for o in sizes[1:-1]]
    outs = [np.empty((batch, o), dtype) for o in sizes[1:]]
    dSs = [rng.standard_normal((batch, o)).astype(dtype) for o in sizes[1:]]
    dWs = [np.empty_like(W) for W in Ws]
    dXs = [np.empty((batch, i), dtype) for i in sizes[:-1]]

    def step():
        for l, W in enumerate(Ws):
            np.dot(ins[l], W.T, out=outs[l])
        for l in range(len(Ws) - 1, -1, -1):
            np.dot(dSs[l].T, ins[l], out=dWs[l])
            np.dot(dSs[l], Ws[l], out=dXs[l])
    return step


def torch_step(sizes, dtype, X, y, threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tdtype = torch.float32 if dtype == "float32" else torch.float64
    layers = []
    for l, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(i, o, dtype=tdtype))
        if l < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    lossf = torch.nn.CrossEntropyLoss()
    tX, ty = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=False)
        lossf(model(tX), ty).backward()
        opt.step()
    return step


def jax_step(sizes, dtype, X, y):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    params = [(jnp.asarray(rng.standard_normal((o, i)).astype(dtype) * 0.1),
               jnp.zeros(o, dtype)) for i, o in zip(sizes[:-1], sizes[1:])]

    def loss_fn(params, X, y):
        a = X
        for l, (W, b) in enumerate(params):
            a = a @ W.T + b
            if l < len(params) - 1:
                a = jnp.tanh(a)
        logp = jax.nn.log_softmax(a)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def update(params, X, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, X, y)
        return loss, jax.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)

    jX, jy = jnp.asarray(X), jnp.asarray(y)
    state = {"params": params}

    def step():
        loss, state["params"] = update(state["params"], jX, jy)
        loss.block_until_ready()
    return step


def sklearn_step(sizes, dtype, X, y):
    try:
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        return None
    import warnings
    clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="tanh",
                        solver="sgd", learning_rate_init=LR, momentum=0.0, alpha=0.0,
                        batch_size=X.shape[0], random_state=0)
    classes = np.arange(sizes[-1])
    Xs = X.astype(dtype)
    warnings.simplefilter("ignore")

    def step():
        clf.partial_fit(Xs, y, classes=classes)
    return step


@contextlib.contextmanager
def on_cores(threads):
    """Run the block on ``threads`` of this process's cores, where it has more (Linux;
    elsewhere unchanged). Threads started inside it keep that affinity. JAX's XLA runs
    its CPU work on a pool as large as the machine whatever its flags say (with
    ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` it still used
    1.86 cores here), which at ``--threads 1`` gave JAX two threads against the others'
    one; pinned, it gets one core (medium float32: 3.0 ms free, 5.2 ms pinned)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if threads >= len(cores):
        yield
        return
    os.sched_setaffinity(0, cores[:threads])
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


def _load_peer_blas():
    """Import the peers that bring a BLAS of their own (scikit-learn calls scipy's, a
    copy apart from numpy's), so that threadpoolctl, which limits only the libraries
    loaded when its limit starts, holds them too."""
    for module in ("scipy.linalg", "sklearn.neural_network", "torch"):
        try:
            __import__(module)
        except ImportError:
            pass


def worker_samples(rounds):
    """Samples each worker takes per system: SAMPLES spread over the rounds, at least
    one each (--rounds 1: 7, 2: 4, 3: 3)."""
    return -(-SAMPLES // rounds)


def run_peers(names, dtype, threads, budget_s, samples=SAMPLES):
    """A peers worker, fastbp not imported: the floor for every config first, then the
    peers, every BLAS (numpy's, scipy's) limited to ``threads`` threads and the whole
    phase on ``threads`` cores (``on_cores``: JAX's XLA has no working thread limit).
    Returns {config: {"floor"|peer: [seconds per call, one per sample] or None}}, None
    for a peer that is not installed.

    fastbp's thread pool (GNU OpenMP, started on import) and the peers' pools would
    share the cores; timing the peers where fastbp never starts keeps fastbp's idle
    threads from slowing them, which would flatter fastbp's ratios. The floor goes first
    since the peers' pools stay alive after they ran.
    """
    from threadpoolctl import threadpool_limits
    _load_peer_blas()
    rows = {name: {} for name in names}
    with on_cores(threads), threadpool_limits(threads, user_api="blas"):
        for name in names:
            sizes, batch = CONFIGS[name]
            X, y = make_data(sizes, batch, dtype)
            rows[name]["floor"] = round_seconds(floor_step(sizes, batch, dtype, X),
                                                budget_s * (4 if name == "large" else 1),
                                                samples)
        for name in names:
            sizes, batch = CONFIGS[name]
            X, y = make_data(sizes, batch, dtype)
            budget = budget_s * (4 if name == "large" else 1)
            for peer, make in (("torch", lambda: torch_step(sizes, dtype, X, y, threads)),
                               ("jax", lambda: jax_step(sizes, dtype, X, y)),
                               ("sklearn", lambda: sklearn_step(sizes, dtype, X, y))):
                fn = make()
                rows[name][peer] = None if fn is None else round_seconds(fn, budget, samples)
    return rows


def run_fastbp(names, dtype, budget_s, samples=SAMPLES):
    """A fastbp worker (after fastbp.set_num_threads, which also holds numpy's BLAS to
    the thread count): fastbp's step (train_step, and per step of train_epoch), the
    floor again beside them, forward and forward+backward. Returns {config: {system:
    [seconds per call (per step for "epoch"), one per sample]}}."""
    rows = {}
    for name in names:
        sizes, batch = CONFIGS[name]
        X, y = make_data(sizes, batch, dtype)
        budget = budget_s * (4 if name == "large" else 1)
        step, epoch, forward, forward_backward = fastbp_systems(sizes, batch, dtype, X, y)
        rows[name] = {
            "fastbp": round_seconds(step, budget, samples),
            "epoch": [t / EPOCH_STEPS for t in round_seconds(epoch, budget, samples)],
            "floor": round_seconds(floor_step(sizes, batch, dtype, X), budget, samples),
            "forward": round_seconds(forward, budget, samples),
            "forward_backward": round_seconds(forward_backward, budget, samples)}
    return rows


RESULT_TAG = "yardstick-samples: "   # the worker's stdout line that carries its JSON


def worker(kind, names, dtypes, threads, budget_s, samples):
    """The body of ``--_worker kind``: time one kind's systems, print the samples as
    RESULT_TAG + JSON {dtype: {config: {system: [seconds] or null}}}."""
    if kind == "peers":
        result = {dtype: run_peers(names, dtype, threads, budget_s, samples)
                  for dtype in dtypes}
    else:
        import fastbp
        fastbp.set_num_threads(threads)
        result = {dtype: run_fastbp(names, dtype, budget_s, samples) for dtype in dtypes}
    print(RESULT_TAG + json.dumps(result), flush=True)


def products_library():
    """A line saying which BLAS libraries multiply fastbp's products here (asked of a
    fresh process: the parent imports no fastbp, whose thread pool would hold cores)."""
    code = ("from fastbp.kernels.cpu import blas\n"
            "print(\"fastbp's products:\", blas.describe())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or f"fastbp's products: unknown ({done.stderr.strip()[-300:]})"


class WorkerError(RuntimeError):
    """A worker process failed or reported nothing; the message holds its stderr."""


def worker_command(kind, names, dtypes, threads, budget_s, samples):
    return [sys.executable, os.path.abspath(__file__), "--_worker", kind,
            "--only", ",".join(names), "--dtypes", ",".join(dtypes),
            "--threads", str(threads), "--budget", repr(budget_s),
            "--_samples", str(samples)]


def run_worker(argv):
    """Run one worker to its end and return its samples. Its stderr (warnings) is
    passed on; a worker that fails, or prints no result line, raises WorkerError with
    its stderr, so a run stops rather than printing a table with holes."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    results = [line[len(RESULT_TAG):] for line in lines if line.startswith(RESULT_TAG)]
    if proc.returncode != 0 or len(results) != 1:
        raise WorkerError(f"yardstick worker {' '.join(argv[2:])} exited with "
                          f"{proc.returncode} and {len(results)} result lines; "
                          f"its stderr:\n{proc.stderr}"
                          + (f"\nits stdout:\n{proc.stdout}" if not results else ""))
    sys.stderr.write(proc.stderr)
    for line in lines:
        if not line.startswith(RESULT_TAG):
            print(line, file=sys.stderr)   # nothing else belongs in the table
    return json.loads(results[0])


def collect(names, dtypes, threads, budget_s, rounds, run=None):
    """For each config in turn, run ``rounds`` rounds of a peers worker and a fastbp
    worker for that config alone, each timing every system with budget_s / rounds, in
    the order peers, fastbp, fastbp, peers, peers, fastbp, ...: a drift of the
    machine's speed over the config's rounds then falls on both kinds alike, where
    alternating strictly would always time fastbp later. One config at a time keeps
    its peers' and fastbp's samples seconds apart, not minutes: with workers that
    timed every config, a config's two kinds were timed one whole worker apart (two
    to five minutes at the defaults), long enough for a slow stretch to cover one
    kind's samples of it and not the other's. Returns {"peers"|"fastbp": {dtype:
    {config: {system: [each worker's samples list, in order] or None}}}}; ``run``
    (default run_worker) takes a worker's argv and returns its samples."""
    run = run or run_worker
    pooled = {"peers": {}, "fastbp": {}}
    for config in names:
        for r in range(rounds):
            for kind in ("peers", "fastbp") if r % 2 == 0 else ("fastbp", "peers"):
                _pool(pooled[kind], run(worker_command(
                    kind, [config], dtypes, threads, budget_s / rounds,
                    worker_samples(rounds))))
    return pooled


def _pool(pooled, result):
    """Add one worker's samples (``result``: {dtype: {config: {system: [seconds] or
    None}}}) to its kind's ``pooled`` samples, as a list of its own per system."""
    for dtype, configs in result.items():
        for name, systems in configs.items():
            row = pooled.setdefault(dtype, {}).setdefault(name, {})
            for system, samples in systems.items():
                if samples is None:   # a peer not installed
                    row.setdefault(system, None)
                else:
                    row[system] = (row.get(system) or []) + [samples]


def _pooled(runs):
    return [t for samples in runs or () for t in samples]


def _median_ms(runs):
    samples = _pooled(runs)
    return 1e3 * statistics.median(samples) if samples else None


def summarize(name, peers, mine):
    """One config's table row (print_row's dict) from collect's pooled samples,
    ``peers`` and ``mine`` (fastbp's) for that dtype and config: each system's median
    in ms over all its samples, every round pooled (not a median of the rounds'
    medians), the floor the faster of its median beside the peers and beside fastbp.
    Also, for note_line: "samples" (how many each median pools), "spread" (75th / 25th
    percentile of fastbp's train_step samples) and "round_medians" (their median in
    each fastbp worker)."""
    sizes, batch = CONFIGS[name]
    row = {"name": name, "sizes": sizes, "batch": batch,
           **{peer: _median_ms(peers.get(peer)) for peer in PEERS},
           "fastbp": _median_ms(mine["fastbp"]), "epoch": _median_ms(mine["epoch"]),
           "floor": min(_median_ms(peers["floor"]), _median_ms(mine["floor"]))}
    t_fwd, t_fb = _median_ms(mine["forward"]), _median_ms(mine["forward_backward"])
    row["bwd_fwd"] = (t_fb - t_fwd) / t_fwd
    row["samples"] = {**{system: len(_pooled(runs)) for system, runs in mine.items()
                         if system != "floor"},
                      **{peer: len(_pooled(peers.get(peer))) for peer in PEERS
                         if peers.get(peer) is not None},
                      "floor": (len(_pooled(peers["floor"])), len(_pooled(mine["floor"])))}
    step = _pooled(mine["fastbp"])
    if len(step) >= 2:
        q1, _, q3 = statistics.quantiles(step, n=4, method="inclusive")
        row["spread"] = q3 / q1
    else:
        row["spread"] = None
    row["round_medians"] = [1e3 * statistics.median(samples) for samples in mine["fastbp"]]
    return row


NOTE_HEADER = ("samples pooled per median (floor: beside the peers + beside fastbp); "
               "fastbp train_step's spread (p75/p25) and median per round, ms:")


def note_line(r):
    """The line under the table for row ``r``: how many samples its medians pool (one
    number when every system has as many) and the spread of fastbp's step."""
    counts = {system: n for system, n in r["samples"].items() if system != "floor"}
    n = (str(next(iter(counts.values()))) if len(set(counts.values())) == 1
         else ", ".join(f"{system} {n}" for system, n in counts.items()))
    spread = f"{r['spread']:.3f}" if r["spread"] is not None else "-"
    return (f"{r['name']:<8} {n} samples (floor {r['samples']['floor'][0]} + "
            f"{r['samples']['floor'][1]}); p75/p25 {spread}; per round "
            + " ".join(f"{t:.3f}" for t in r["round_medians"]))


HEADER = (f"{'config':<8} {'batch':>5} {'fastbp':>9} {'epoch':>9} {'floor':>9} {'torch':>9} "
          f"{'jax':>9} {'sklearn':>9} | {'/floor':>6} {'ep/flr':>6} {'/torch':>6} {'/jax':>6} "
          f"{'/sklearn':>8} {'bwd/fwd':>7}")


def print_row(r):
    def ms(v):
        return f"{v:9.3f}" if v is not None else f"{'-':>9}"

    def ratio(peer, width=6, mine="fastbp"):
        v = r[peer]
        return f"{r[mine] / v:{width}.3f}" if v else f"{'-':>{width}}"
    print(f"{r['name']:<8} {r['batch']:>5} {ms(r['fastbp'])} {ms(r['epoch'])} {ms(r['floor'])} "
          f"{ms(r['torch'])} {ms(r['jax'])} {ms(r['sklearn'])} | {ratio('floor')} "
          f"{ratio('floor', mine='epoch')} {ratio('torch')} {ratio('jax')} "
          f"{ratio('sklearn', 8)} {r['bwd_fwd']:7.2f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="The peers and fastbp are timed in separate worker processes "
               "(peers, fastbp, fastbp, peers, ...) for --rounds rounds, one config "
               "at a time; each system's "
               "samples from every round are pooled and their median printed. See the "
               "module docstring.")
    parser.add_argument("--only", default=",".join(CONFIGS),
                        help=f"configs, comma-separated (of {', '.join(CONFIGS)})")
    parser.add_argument("--dtypes", default="float32,float64",
                        help="comma-separated (default float32,float64)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads (and, for the peers, cores) every system gets "
                             "(default 2)")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds of timing per system and config in the whole run, "
                             "split over the rounds (x4 for large; default 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of one peers and one fastbp worker process per "
                             "config, in the order peers, fastbp, fastbp, peers, ..., "
                             "whose samples are pooled (default 3; 1: one of each)")
    # Internal: run as one worker process (started by the run's parent) and print its
    # samples; --budget is then the worker's own, --_samples its samples per system.
    parser.add_argument("--_worker", choices=("peers", "fastbp"), help=argparse.SUPPRESS)
    parser.add_argument("--_samples", type=int, default=SAMPLES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = args.only.split(",")
    dtypes = args.dtypes.split(",")
    unknown = [n for n in names if n not in CONFIGS] + [
        d for d in dtypes if d not in ("float32", "float64")]
    if unknown:
        parser.error(f"unknown config or dtype: {', '.join(unknown)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args._worker:
        worker(args._worker, names, dtypes, args.threads, args.budget, args._samples)
        return 0
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}; threads "
          f"{args.threads}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
          f"rounds {args.rounds}", flush=True)
    print(products_library(), flush=True)
    pooled = collect(names, dtypes, args.threads, args.budget, args.rounds)
    print("median ms per training step; ratios are fastbp / other (below 1: fastbp faster)")
    for dtype in dtypes:
        print(f"\n{dtype}\n{HEADER}")
        rows = [summarize(name, pooled["peers"][dtype][name], pooled["fastbp"][dtype][name])
                for name in names]
        for row in rows:
            print_row(row)
        print(NOTE_HEADER)
        for row in rows:
            print(note_line(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
