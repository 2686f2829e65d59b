"""Checks of fastbp.distributed run by every rank of one ``mpiexec -n 2`` launch
(tests/test_distributed.py starts it and asserts on what the ranks write).

    mpiexec -n 2 python tests/distributed_checks.py OUTDIR

Each rank writes OUTDIR/rank<r>.json: {check name: {"ok": bool, "detail": str,
"figure": float or null}}. One launch runs every check because each rank is a fresh
process paying numba's import and cache load (seconds on a 2-core machine). The checks
use the networks and compiled passes the rest of the suite compiles (float64 tanh and
float32 relu, small sizes, the general passes), so the ranks load warm cached kernels.

Reference: one process (here: each rank on its own, with a plain optimizer) training a
copy of the network on the whole batch; the ranks train on their shards of it with a
DistributedOptimizer, and must end with the reference's parameters, step by step.
"""
import contextlib
import io
import json
import os
import sys
import traceback
import warnings

import numpy as np

import fastbp
from fastbp import distributed as D
from fastbp.kernels.cpu import network as cpu_network

# The general compiled passes (for every activation set), which the test suite's own
# process compiles: a fresh process would otherwise specialise passes for its first
# activation sets, and both ranks would compile those at once on a cold cache.
cpu_network.SPECIALISED_SETS = 0

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":   # the suite's CUDA checks
    import cuda_simulator   # beside this script (sys.path[0])
    cuda_simulator.speed_up()   # the simulator as in the test processes (root conftest.py)

RANK, SIZE = D.rank_and_size()
RESULTS = {}
# float tolerance of the parity checks (max |distributed - one process| / max |one process|)
RTOL = {"float64": 1e-12, "float32": 1e-5}
NETS = {"float64": dict(sizes=[5, 17, 3], activation="tanh", dtype="float64"),
        "float32": dict(sizes=[5, 17, 3], activation="relu", dtype="float32")}
OPTIMIZERS = {
    "sgd": lambda net, clip: fastbp.SGD(net, lr=0.1, max_grad_norm=clip),
    "sgd_nesterov": lambda net, clip: fastbp.SGD(net, lr=0.05, momentum=0.9, nesterov=True,
                                                 weight_decay=1e-3, max_grad_norm=clip),
    "adam_amsgrad": lambda net, clip: fastbp.Adam(net, lr=0.01, weight_decay=1e-3,
                                                  amsgrad=True, max_grad_norm=clip),
    "adamw": lambda net, clip: fastbp.AdamW(net, lr=0.01, max_grad_norm=clip),
    "rmsprop_centered": lambda net, clip: fastbp.RMSprop(net, lr=0.01, momentum=0.5,
                                                         centered=True, max_grad_norm=clip),
}
CLIP = 0.05   # below the gradients' global norm here (checked), so clipping acts


def check(name):
    """Run the decorated function as check ``name``; it returns (ok, detail[, figure]),
    ok None for a check that could not run here (detail says why)."""
    def run(fn):
        try:
            ok, detail, *figure = fn()
            RESULTS[name] = {"ok": None if ok is None else bool(ok), "detail": str(detail),
                             "figure": float(figure[0]) if figure else None}
        except Exception:
            RESULTS[name] = {"ok": False, "detail": traceback.format_exc(), "figure": None}
        return fn
    return run


def data(rows, n_in=5, n_out=3, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, n_in)).astype(dtype),
            rng.integers(0, n_out, rows))


def pair(dtype, seed=0, **kw):
    """(replica on this rank, one-process reference): the same network, distinct buffers."""
    spec = dict(NETS[dtype], **kw)
    return fastbp.MLP(seed=seed, **spec), fastbp.MLP(seed=seed, **spec)


def relative(a, b):
    b = np.asarray(b, np.float64)
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def same_on_all_ranks(array):
    arrays = D._team(None).allgather(np.asarray(array).tobytes())
    return all(a == arrays[0] for a in arrays)


def interleave_batches(X, y, batch):
    """This rank's rows of every global batch of ``batch`` rows, in batch order (what
    N ranks see when each takes its shard of each batch)."""
    parts = [D.shard(X[a:a + batch], y[a:a + batch]) for a in range(0, len(X), batch)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# Overlapped steps (bucket_bytes): a three-layer network whose layers make 2-3 buckets
# of 200 bytes (float64: [layer 2], [layer 1], [layer 0]; float32: [2, 1], [0]).
OVERLAP = dict(sizes=[5, 17, 9, 3], bucket_bytes=200)


def overlapped(net, opt):
    """The buckets an overlapped step of ``net`` with ``opt`` uses (None: one
    all-reduce of the whole buffer)."""
    return opt._buckets(net)[0]


def step_parity(dtype, make, clip, overlap):
    """4 steps of N ranks on shards of global batches of 12 rows against one process
    on the whole batches: (ok, detail, worst relative parameter error)."""
    if overlap:
        net, ref = pair(dtype, seed=1, sizes=OVERLAP["sizes"])
        opt = D.DistributedOptimizer(make(net, clip), bucket_bytes=OVERLAP["bucket_bytes"])
    else:
        net, ref = pair(dtype, seed=1)
        opt = D.DistributedOptimizer(make(net, clip))
    ref_opt = make(ref, clip)
    X, y = data(48, dtype=dtype, seed=2)
    worst, worst_loss, norms = 0.0, 0.0, []
    for a in range(0, 48, 12):   # 4 steps, global batch 12, 6 rows a rank
        Xs, ys = D.shard(X[a:a + 12], y[a:a + 12])
        loss = D.average(net.train_step(Xs, ys, opt))
        ref_loss = ref.train_step(X[a:a + 12], y[a:a + 12], ref_opt)
        norms.append(float(np.linalg.norm(ref.grads.astype(np.float64))))
        worst = max(worst, relative(net.params, ref.params))
        worst_loss = max(worst_loss, abs(loss - ref_loss) / abs(ref_loss))
    clipped = clip is None or min(norms) > clip
    buckets = overlapped(net, opt)
    path_ok = (buckets is not None and len(buckets) >= 2) if overlap else buckets is None
    ok = (worst <= RTOL[dtype] and worst_loss <= RTOL[dtype] and clipped and path_ok
          and same_on_all_ranks(net.params))
    return ok, (f"params rel. error {worst:.3g}, mean loss {worst_loss:.3g} "
                f"(tolerance {RTOL[dtype]:g}); gradient norms {min(norms):.3g}-"
                f"{max(norms):.3g}, clip {clip}; buckets {buckets}"), worst


# -- step parity: every optimizer, with and without clipping, both dtypes, without and
# with the all-reduce overlapped with backward ----------------------------------------
for dtype in ("float64", "float32"):
    for opt_name, make in OPTIMIZERS.items():
        for clip in (None, CLIP):
            for overlap in (False, True):
                check(f"train_step_parity[{dtype}-{opt_name}-clip={clip}"
                      f"{'-overlap' if overlap else ''}]")(
                    lambda: step_parity(dtype, make, clip, overlap))


def cuda_parity(path, cuda_aware):
    """Two steps of a GPU network (a simulated one without a GPU) on shards against
    one CPU process: (ok, detail, params rel. error); ``path`` the gpu_path wanted."""
    from fastbp import device
    usable, why = device.cuda_status()
    if not usable:
        return None, f"no CUDA device or simulator: {why}"
    net = fastbp.MLP(seed=23, device="cuda", **NETS["float64"])
    ref = fastbp.MLP(seed=23, **NETS["float64"])
    opt = D.DistributedOptimizer(fastbp.SGD(net, lr=0.1, momentum=0.9, max_grad_norm=CLIP),
                                 cuda_aware=cuda_aware)
    ref_opt = fastbp.SGD(ref, lr=0.1, momentum=0.9, max_grad_norm=CLIP)
    X, y = data(12, seed=24)
    for a in (0, 6):   # tiny: the simulator runs one OS thread per CUDA thread
        net.train_step(*D.shard(X[a:a + 6], y[a:a + 6]), opt)
        ref.train_step(X[a:a + 6], y[a:a + 6], ref_opt)
    err = relative(device.to_host(net.params), ref.params)
    staged = opt._pinned is not None   # the pinned host buffer exists only if used
    return (err <= 1e-12 and opt.gpu_path == path
            and staged == (path == "host-staging")), \
        (f"{why}; path {opt.gpu_path} ({opt.cuda_aware_source}); params rel. error "
         f"{err:.3g}"), err


@check("cuda_network_host_staging_parity[float64-sgd-momentum-clip]")
def _():
    return cuda_parity("host-staging", cuda_aware=False)


@check("cuda_network_cuda_aware_parity[float64-sgd-momentum-clip]")
def _():
    # The device buffer goes to MPI_Allreduce in place (its __cuda_array_interface__;
    # in the simulator a stand-in pointing at the simulated device memory), divided on
    # the device: forced through the environment override, as for an MPI library that
    # cannot be asked (MPICH's wheel is not CUDA-aware).
    os.environ[D.CUDA_AWARE_ENV] = "1"
    try:
        return cuda_parity("cuda-aware", cuda_aware=None)
    finally:
        del os.environ[D.CUDA_AWARE_ENV]


@check("cuda_aware_detection")
def _():
    aware, how = D.cuda_aware_mpi()
    # MPICH and Open MPI answer MPIX_Query_cuda_support() at run time
    asked = how == f"MPIX_Query_cuda_support() = {int(aware)}"
    forced = []
    for value in ("1", "0", "maybe"):
        os.environ[D.CUDA_AWARE_ENV] = value
        try:
            forced.append(D.cuda_aware_mpi()[0])
        except ValueError as exc:
            forced.append(D.CUDA_AWARE_ENV in str(exc) and "maybe" in str(exc))
        finally:
            del os.environ[D.CUDA_AWARE_ENV]
    return asked and forced == [True, False, True], f"{aware}, {how}; forced {forced}"


@check("optimizer_step_parity[float64-adam-clip]")
def _():
    net, ref = pair("float64", seed=3)
    opt = D.DistributedOptimizer(fastbp.Adam(net, lr=0.01, max_grad_norm=CLIP))
    ref_opt = fastbp.Adam(ref, lr=0.01, max_grad_norm=CLIP)
    X, y = data(36, seed=4)
    worst = 0.0
    for a in range(0, 36, 12):
        net.backward(*D.shard(X[a:a + 12], y[a:a + 12]))
        opt.step()
        ref.backward(X[a:a + 12], y[a:a + 12])
        ref_opt.step()
        worst = max(worst, relative(net.params, ref.params))
    return worst <= RTOL["float64"], f"params rel. error {worst:.3g}", worst


def epoch_parity(overlap):
    kw = dict(sizes=OVERLAP["sizes"]) if overlap else {}
    net, ref = pair("float64", seed=5, **kw)
    opt = D.DistributedOptimizer(OPTIMIZERS["sgd_nesterov"](net, CLIP),
                                 bucket_bytes=OVERLAP["bucket_bytes"] if overlap else 0)
    ref_opt = OPTIMIZERS["sgd_nesterov"](ref, CLIP)
    X, y = data(40, seed=6)
    Xr, yr = interleave_batches(X, y, 8)
    losses = D.average(net.train_epoch(Xr, yr, opt, batch_size=8 // SIZE))
    ref_losses = ref.train_epoch(X, y, ref_opt, batch_size=8)
    err = relative(net.params, ref.params)
    err_loss = relative(losses, ref_losses)
    # what fit compiles first for such a step (fastbp.warmup)
    passes = D.step_passes(opt, ("train_step", "loss"))
    ok = (err <= 1e-12 and err_loss <= 1e-12 and opt.steps == ref_opt.steps == 5
          and (overlapped(net, opt) is not None) == overlap
          and passes == (("loss", "layer_backward", "layer_input_grad", "update")
                         if overlap else ("backward", "update", "loss")))
    return ok, (f"params {err:.3g}, losses {err_loss:.3g}, steps {opt.steps}, "
                f"passes {passes}"), err


check("train_epoch_parity[float64-sgd_nesterov-clip]")(lambda: epoch_parity(False))
check("train_epoch_parity[float64-sgd_nesterov-clip-overlap]")(lambda: epoch_parity(True))


@check("fit_parity[float64-adam-no-shuffle]")
def _():
    net, ref = pair("float64", seed=7)
    X, y = data(48, seed=8)
    Xv, yv = data(20, seed=9)
    Xr, yr = interleave_batches(X, y, 8)
    lines = []
    h = fastbp.fit(net, Xr, yr, epochs=3, batch_size=8 // SIZE, shuffle=False,
                   optimizer=D.DistributedOptimizer(fastbp.Adam(net, lr=0.01)),
                   validation_data=D.shard(Xv, yv), verbose=True, print_fn=lines.append)
    # validation shards: the ranks' metrics, averaged by rows, are those of the rows
    # they cover (the first SIZE * (20 // SIZE))
    n_val = SIZE * (20 // SIZE)
    ref_h = fastbp.fit(ref, X, y, epochs=3, batch_size=8, shuffle=False,
                       optimizer=fastbp.Adam(ref, lr=0.01),
                       validation_data=(Xv[:n_val], yv[:n_val]), verbose=False)
    err = relative(net.params, ref.params)
    errs = {k: relative(h[k], ref_h[k]) for k in ("loss", "val_loss", "val_accuracy")}
    printed_ok = (len(lines) == 3) if RANK == 0 else (lines == [])
    ok = err <= 1e-12 and max(errs.values()) <= 1e-12 and printed_ok
    return ok, f"params {err:.3g}, history {errs}, lines printed {len(lines)}", err


@check("fit_agrees[shuffle-early-stopping-different-val-shards]")
def _():
    net = fastbp.MLP(seed=RANK, **NETS["float64"])
    D.broadcast_parameters(net)
    X, y = data(64, seed=10)
    Xv, yv = data(30, seed=11)   # random labels: the validation loss soon rises
    lines = []
    opt = D.DistributedOptimizer(fastbp.Adam(net, lr=0.05))
    h = fastbp.fit(net, *D.shard(X, y), epochs=30, batch_size=4, seed=None if RANK else 3,
                   optimizer=opt, validation_data=D.shard(Xv, yv), early_stopping=2,
                   verbose=True, print_fn=lines.append)
    summary = (h.epochs_run, h.best_epoch, h.stop_reason, tuple(h["val_loss"]),
               tuple(h["loss"]))
    every = D._team(None).allgather(summary)
    ok = (all(s == every[0] for s in every) and same_on_all_ranks(net.params)
          and h.stop_reason == "early_stopping" and h.epochs_run < 30
          and ((len(lines) == h.epochs_run) if RANK == 0 else lines == []))
    return ok, f"epochs_run {h.epochs_run}, best {h.best_epoch}, {h.stop_reason}"


@check("common_seed_is_rank0s")
def _():
    team = D._team(None)
    team.begin_fit()
    seed = team.common_seed(None if RANK else 12345)
    team._fit_setup = None
    seeds = team.allgather(seed)
    return seeds == [12345] * SIZE, f"seeds {seeds}"


@check("fit_callback_stop_on_one_rank")
def _():
    net, _ = pair("float64", seed=13)
    X, y = data(32, seed=14)
    h = fastbp.fit(net, *D.shard(X, y), epochs=5, batch_size=4, seed=0, verbose=False,
                   optimizer=D.DistributedOptimizer(fastbp.SGD(net, lr=0.1)),
                   callbacks=lambda epoch, logs: RANK == SIZE - 1 and epoch == 2)
    return (h.epochs_run == 2 and h.stop_reason == "callback"), \
        f"epochs_run {h.epochs_run}, {h.stop_reason}"


def mse_net_and_data():
    """An mse network and data whose targets on the last rank hold 1e200 in the 3rd
    minibatch (rows 8-11): that rank's loss overflows to infinity while its
    gradient stays finite, so only the poisoned all-reduce can tell the others."""
    net = fastbp.MLP([5, 17, 2], activation="tanh", loss="mse", dtype="float64", seed=15)
    X, _ = data(24, seed=16)
    T = np.random.default_rng(17).standard_normal((24, 2))
    if RANK == SIZE - 1:
        T[9, 0] = 1e200
    return net, X, T


@check("divergence_on_one_rank_fit_raise")
def _():
    net, X, T = mse_net_and_data()
    start = net.params.copy()
    opt = D.DistributedOptimizer(fastbp.SGD(net, lr=0.01))
    try:
        fastbp.fit(net, X, T, epochs=2, batch_size=4, shuffle=False, optimizer=opt,
                   verbose=False)
    except fastbp.TrainingDiverged as exc:
        where = (exc.epoch, exc.batch)
        every = D._team(None).allgather(where)
        ok = (every == [(1, 3)] * SIZE and np.array_equal(net.params, start)
              and same_on_all_ranks(net.params))
        return ok, f"raised at (epoch, batch) {every} on the ranks; {exc}"
    return False, "fit did not raise"


@check("divergence_on_one_rank_fit_stop")
def _():
    net, X, T = mse_net_and_data()
    opt = D.DistributedOptimizer(fastbp.SGD(net, lr=0.01))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        h = fastbp.fit(net, X, T, epochs=2, batch_size=4, shuffle=False, optimizer=opt,
                       verbose=False, on_nonfinite="stop")
    every = D._team(None).allgather((h.diverged_at, h.stop_reason, h.epochs_run))
    return every == [((1, 3), "nonfinite", 0)] * SIZE, f"{every}"


def divergence_in_train_step(bucket_bytes):
    net, X, T = mse_net_and_data()
    opt = D.DistributedOptimizer(fastbp.SGD(net, lr=0.01), bucket_bytes=bucket_bytes)
    raised = None
    for a in range(0, 24, 4):
        try:
            net.train_step(X[a:a + 4], T[a:a + 4], opt)
        except fastbp.TrainingDiverged:
            raised = a // 4 + 1
            break
    every = D._team(None).allgather(raised)
    buckets = overlapped(net, opt)
    return (every == [3] * SIZE and (buckets is not None) == bool(bucket_bytes)), \
        f"step that raised, per rank: {every}; buckets {buckets}"


check("divergence_on_one_rank_train_step")(lambda: divergence_in_train_step(0))
check("divergence_on_one_rank_train_step-overlap")(lambda: divergence_in_train_step(1))


@check("fit_bad_input_on_one_rank_stops_all")
def _():
    net, _ = pair("float64", seed=18)
    X, y = data(16, seed=19)
    if RANK == SIZE - 1:
        X = X[:, :4]   # wrong number of features on one rank only
    try:
        fastbp.fit(net, X, y, epochs=1, batch_size=4, verbose=False,
                   optimizer=D.DistributedOptimizer(fastbp.SGD(net)))
    except ValueError as exc:
        ok = RANK == SIZE - 1 and "X" in str(exc)
        return ok, f"this rank raised its own error: {exc}"
    except D.AgreedError as exc:
        ok = RANK != SIZE - 1 and f"rank {SIZE - 1}" in str(exc) and "X" in str(exc)
        return ok, f"raised: {exc}"
    return False, "fit did not raise"


@check("fit_unequal_rows_or_batch_size_raise_on_all")
def _():
    net, _ = pair("float64", seed=20)
    X, y = data(16 + RANK, seed=21)
    messages = []
    for rows, batch_size in ((16 + RANK, 4), (16, 4 + RANK)):
        try:
            fastbp.fit(net, X[:rows], y[:rows], epochs=1, batch_size=batch_size,
                       verbose=False, optimizer=D.DistributedOptimizer(fastbp.SGD(net)))
            messages.append(None)
        except ValueError as exc:
            messages.append(str(exc))
    ok = (messages[0] is not None and "training rows" in messages[0]
          and messages[1] is not None and "batch_size" in messages[1])
    return ok, f"{messages}"


@check("broadcast_parameters")
def _():
    net = fastbp.MLP(seed=100 + RANK, **NETS["float32"])
    root_params = fastbp.MLP(seed=100, **NETS["float32"]).params
    differed = not same_on_all_ranks(net.params)
    D.broadcast_parameters(net)
    return (differed and np.array_equal(net.params, root_params)), "params now rank 0's"


@check("broadcast_optimizer_state")
def _():
    net, _ = pair("float64", seed=22)
    opt = fastbp.Adam(net, lr=0.01 * (RANK + 1))
    opt.state[...] = RANK + 1.0
    opt.steps = 7 + RANK
    D.broadcast_optimizer_state(opt)
    ok = opt.lr == 0.01 and (opt.state == 1.0).all() and opt.steps == 7
    return ok, f"lr {opt.lr}, steps {opt.steps}"


@check("shard_even_deterministic")
def _():
    X = np.arange(22).reshape(11, 2)
    y = np.arange(11)
    Xs, ys = D.shard(X, y)
    again = D.shard(X, y)
    rows = D._team(None).allgather(ys.tolist())
    union = sorted(r for part in rows for r in part)
    ok = (len(ys) == 11 // SIZE and np.array_equal(Xs, X[ys]) and union == list(
        range(SIZE * (11 // SIZE))) and np.array_equal(again[0], Xs)
        and ys.tolist() == list(range(RANK, SIZE * (11 // SIZE), SIZE)))
    try:
        D.shard(X[:SIZE - 1], y[:SIZE - 1])
        ok = False
    except ValueError:
        pass
    return ok, f"rank {RANK} rows {ys.tolist()}"


@check("cli_train_distributed_in_process")
def _():
    # python -m fastbp train --distributed, called in this process (the launch by
    # mpiexec itself is tests/test_distributed.py's); rank 0 also runs it alone
    from fastbp import cli
    argv = ["train", "--epochs", "3", "--hidden", "32", "--lr", "0.01"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(argv + ["--distributed"])
    text = out.getvalue()
    if RANK != 0:
        return status == 0 and text == "", f"rank {RANK} printed {text!r}"
    alone = io.StringIO()
    with contextlib.redirect_stdout(alone):
        cli.main(argv)

    def accuracy(output):
        return [float(line.split()[2]) for line in output.splitlines()
                if line.startswith("test accuracy")]
    acc, acc_alone = accuracy(text), accuracy(alone.getvalue())
    epochs = [line for line in text.splitlines() if line.startswith("epoch")]
    ok = (status == 0 and len(acc) == 1 and len(epochs) == 3 and acc[0] > 0.9
          and abs(acc[0] - acc_alone[0]) < 0.03)
    return ok, f"{text}one process: test accuracy {acc_alone}", acc[0] if acc else None


os.makedirs(sys.argv[1], exist_ok=True)
with open(os.path.join(sys.argv[1], f"rank{RANK}.json"), "w") as f:
    json.dump(RESULTS, f, indent=1)
