"""The training-step yardstick: fastbp against the matrix-product floor and its peers.

One process, one run, every system on the same data. The floor and the peers are timed
first, before fastbp is imported (its thread pool would otherwise share the cores with
theirs), then fastbp. For each configuration below it prints the median milliseconds per training step (forward + loss + backward + plain
SGD; tanh hidden layers, softmax cross-entropy) of

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

Medians over rounds of repeated calls; compare ratios within one run only.
"""
import argparse
import contextlib
import os
import platform
import sys

import numpy as np

try:   # run as a script (python benchmarks/x.py) or imported by asv as benchmarks.x
    from .common import median_seconds
except ImportError:
    from common import median_seconds

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
    net = fastbp.MLP(sizes, activation="tanh", dtype=dtype, seed=0)
    opt = fastbp.SGD(net, lr=LR)
    lay = net.layout.compiled_args()
    acts, pres, dbuf = net._workspace.ensure(batch)
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
        passes.network_forward(net.params, *lay, Xc, acts, pres)

    def forward_backward():
        passes.network_backward(net.params, net.grads, *lay, 0, Xc, y, net._no_targets,
                                acts, pres, dbuf)
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


def run_peers(names, dtype, threads, budget_s):
    """Phase 1, before fastbp is imported: the floor for every config first, then the
    peers, every BLAS (numpy's, scipy's) limited to ``threads`` threads and the whole
    phase on ``threads`` cores (``on_cores``: JAX's XLA has no working thread limit).

    fastbp's thread pool (GNU OpenMP, started on import) and the peers' pools would
    share the cores; timing the peers before fastbp starts keeps fastbp's idle threads
    from slowing them, which would flatter fastbp's ratios. The floor goes first since
    the peers' pools stay alive after they ran.
    """
    from threadpoolctl import threadpool_limits
    _load_peer_blas()
    rows = {name: {} for name in names}
    with on_cores(threads), threadpool_limits(threads, user_api="blas"):
        for name in names:
            sizes, batch = CONFIGS[name]
            X, y = make_data(sizes, batch, dtype)
            rows[name]["floor"] = median_ms(floor_step(sizes, batch, dtype, X),
                                            budget_s * (4 if name == "large" else 1))
        for name in names:
            sizes, batch = CONFIGS[name]
            X, y = make_data(sizes, batch, dtype)
            budget = budget_s * (4 if name == "large" else 1)
            for peer, make in (("torch", lambda: torch_step(sizes, dtype, X, y, threads)),
                               ("jax", lambda: jax_step(sizes, dtype, X, y)),
                               ("sklearn", lambda: sklearn_step(sizes, dtype, X, y))):
                fn = make()
                rows[name][peer] = None if fn is None else median_ms(fn, budget)
    return rows


def run_fastbp(names, dtype, budget_s, peers):
    """Phase 2: fastbp's step (train_step, and per step of train_epoch), forward and
    forward+backward, and the floor again beside them (numpy's BLAS held to the
    thread count by fastbp.set_num_threads); prints each row. The floor used is the
    faster of its two timings."""
    for name in names:
        sizes, batch = CONFIGS[name]
        X, y = make_data(sizes, batch, dtype)
        budget = budget_s * (4 if name == "large" else 1)
        step, epoch, forward, forward_backward = fastbp_systems(sizes, batch, dtype, X, y)
        result = {"name": name, "sizes": sizes, "batch": batch, **peers[name],
                  "fastbp": median_ms(step, budget),
                  "epoch": median_ms(epoch, budget) / EPOCH_STEPS}
        result["floor"] = min(result["floor"],
                              median_ms(floor_step(sizes, batch, dtype, X), budget))
        t_fwd = median_ms(forward, budget)
        t_fb = median_ms(forward_backward, budget)
        result["bwd_fwd"] = (t_fb - t_fwd) / t_fwd
        print_row(result)


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CONFIGS), help="configs, comma-separated")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.0,
                        help="seconds of timing per system and config (x4 for large)")
    args = parser.parse_args(argv)
    names = args.only.split(",")
    dtypes = args.dtypes.split(",")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}; threads "
          f"{args.threads}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    peers = {dtype: run_peers(names, dtype, args.threads, args.budget) for dtype in dtypes}
    import fastbp
    fastbp.set_num_threads(args.threads)
    print("median ms per training step; ratios are fastbp / other (below 1: fastbp faster)")
    for dtype in dtypes:
        print(f"\n{dtype}\n{HEADER}")
        run_fastbp(names, dtype, args.budget, peers[dtype])
    return 0


if __name__ == "__main__":
    sys.exit(main())
