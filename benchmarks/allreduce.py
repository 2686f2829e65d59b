"""Data-parallel scaling of fastbp.distributed: measured on local ranks, modelled beyond.

    NUMBA_NUM_THREADS=1 mpiexec -n 2 python benchmarks/allreduce.py measure
    NUMBA_NUM_THREADS=1 mpiexec -n 2 python benchmarks/allreduce.py overlap [--buckets ...]
    python benchmarks/allreduce.py model [--latency-us 20,5] [--machines 1,2,4,...]
                                         [--step-ms NAME=MS,...] [--overlap-hidden NAME=SHARE]

``measure`` (under mpiexec, 2-4 local ranks; rank 0 prints):
  1. the time of one in-place MPI_Allreduce (sum) of a float32 buffer against its size,
     4 KiB to 64 MiB: the slowest rank's median over repeats, with algorithm bandwidth
     (bytes / time) and bus bandwidth (2 (N-1)/N bytes / time, the bytes a ring moves
     per rank), and a least-squares fit time = latency + bus bytes / bandwidth;
  2. per training step of the yardstick's small networks (float32, tanh, SGD): the
     fused one-call step of one process (``train_step`` with a plain optimizer) against
     a DistributedOptimizer step (backward, the all-reduce, the update), both timed on
     every rank at once. Under ``mpiexec -n 1`` the difference is what splitting the
     compiled step costs by itself: the most that calling MPI from inside the compiled
     step (numba-mpi) could save.

``overlap`` (under mpiexec, 2 ranks; rank 0 prints) times a training step of networks
with large gradient buffers (float32, tanh, SGD, one numba thread per rank) three
ways, interleaved round by round in one run: "compute only" (the same split step with
no communication: a DistributedOptimizer on MPI.COMM_SELF), "no overlap" (compiled
backward, one blocking all-reduce, the update: ``bucket_bytes=0``) and "overlap"
(backward layer by layer, each bucket's MPI_Iallreduce started as backward finishes it:
``bucket_bytes=B`` for each B of --buckets that groups the layers differently from
the B before it and into more than one bucket). The share of the all-reduce hidden,
from step times: (no overlap - overlap) / (no overlap - compute only); from the time
spent inside MPI calls per step (the ranks' mean; in MPICH's default mode the
reduction's work all runs inside them): 1 - overlap's / no overlap's, steadier on a
loaded machine than differences of whole steps. Run it once as it is (MPICH
advances the reductions in the MPI calls made between layers) and once with
``MPIR_CVAR_ASYNC_PROGRESS=1`` (a progress thread per rank) to compare the two.

``model`` (one process) measures each yardstick network's fused step (float32, tanh,
SGD, all threads) and predicts a data-parallel step on N machines, each running that
step on its own batch (the global batch grows with N), from the ring all-reduce cost

    t_allreduce(N) = 2 (N-1)/N * bytes / bandwidth + 2 (N-1) * latency

for 10 and 100 Gbit/s links: step time t_step + t_allreduce (no overlap) and efficiency
t_step / (t_step + t_allreduce), plus the efficiency with the all-reduce hidden behind
backward (about 2/3 of the step) as an upper bound of what overlapping would give;
``--overlap-hidden NAME=SHARE`` adds a row for a network with that share of its
all-reduce hidden (as ``overlap`` measured it). Medians; ratios within one run only.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

try:   # run as a script (python benchmarks/x.py) or imported as benchmarks.x
    from .yardstick import CONFIGS, make_data, median_ms
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from yardstick import CONFIGS, make_data, median_ms

SIZES = [2 ** k for k in range(10, 25, 2)]   # float32 elements: 4 KiB .. 64 MiB
LINKS_GBIT = (10, 100)
MACHINES = (1, 2, 4, 8, 16, 32, 64)
BACKWARD_SHARE = 2 / 3   # of a step: backward costs about twice the forward


def _allreduce_seconds(comm, buf, repeats):
    """The slowest rank's median seconds of one in-place Allreduce of ``buf``."""
    from mpi4py import MPI
    times = []
    for _ in range(3):
        comm.Allreduce(MPI.IN_PLACE, buf)
    for _ in range(repeats):
        comm.Barrier()
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf)
        times.append(time.perf_counter() - t)
    return comm.allreduce(statistics.median(times), op=MPI.MAX)


def _step_ms(comm, step, budget_s=0.5, rounds=7):
    """The slowest rank's median milliseconds per call of ``step`` over ``rounds``
    rounds of the same number of calls on every rank (a distributed step is a
    collective: every rank must make as many)."""
    from mpi4py import MPI
    t = time.perf_counter()
    step()
    calls = comm.bcast(max(1, int(budget_s / rounds / (time.perf_counter() - t))), root=0)
    per_call = []
    for _ in range(rounds):
        comm.Barrier()
        t = time.perf_counter()
        for _ in range(calls):
            step()
        per_call.append((time.perf_counter() - t) / calls)
    return 1e3 * comm.allreduce(statistics.median(per_call), op=MPI.MAX)


def measure():
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank, n = comm.Get_rank(), comm.Get_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"# {n} ranks on one machine, {MPI.Get_library_version().splitlines()[0]}")
    say("\n| float32 elements | bytes | time (us) | algbw (GB/s) | busbw (GB/s) |")
    say("|---:|---:|---:|---:|---:|")
    rows = []
    for size in SIZES:
        buf = np.ones(size, np.float32)
        repeats = max(5, min(200, int(2e7 // size)))
        t = _allreduce_seconds(comm, buf, repeats)
        nbytes = buf.nbytes
        bus = 2 * (n - 1) / n * nbytes
        rows.append((bus, t))
        say(f"| {size:,} | {nbytes:,} | {t * 1e6:.1f} | {nbytes / t / 1e9:.2f} | "
            f"{bus / t / 1e9:.2f} |")
    if n > 1:   # least squares in relative error: small and large sizes count alike
        t = np.array([t for _, t in rows])
        A = np.array([[1.0, b] for b, _ in rows]) / t[:, None]
        latency, inv_bw = np.linalg.lstsq(A, np.ones(len(rows)), rcond=None)[0]
        say(f"\nfit: time = {latency * 1e6:.1f} us + bus bytes / {1 / inv_bw / 1e9:.2f} GB/s")

    import fastbp
    from fastbp import distributed
    say("\n| network (batch per rank) | params | fused step (ms) | distributed step (ms) "
        "| ratio |")
    say("|---|---:|---:|---:|---:|")
    for name in ("tiny", "mnist", "medium"):
        sizes, batch = CONFIGS[name]
        X, y = make_data(sizes, batch, "float32", seed=rank)
        net = fastbp.MLP(sizes, activation="tanh", dtype="float32", seed=0)
        plain = fastbp.SGD(net, lr=1e-4)
        dist = distributed.DistributedOptimizer(fastbp.SGD(net, lr=1e-4))
        net.train_step(X, y, plain)
        net.train_step(X, y, dist)
        ms = {}
        for label, opt in (("fused", plain), ("distributed", dist)):
            ms[label] = _step_ms(comm, lambda: net.train_step(X, y, opt))
        say(f"| {name} {'-'.join(map(str, sizes))} ({batch}) | {net.n_params:,} | "
            f"{ms['fused']:.3f} | {ms['distributed']:.3f} | "
            f"{ms['distributed'] / ms['fused']:.2f} |")


OVERLAP_NETS = {"wide": ([1024, 4096, 4096, 1024], 64),
                "half-wide": ([1024, 2048, 2048, 1024], 64),
                "square": ([1024, 1024, 1024, 1024], 64),
                "medium": ([784, 512, 512, 10], 128)}
OVERLAP_BUCKETS = "16K,1M,16M,64M"


def _bytes(text):
    """'16K' / '1M' / '4096' -> bytes."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def _time_mpi_calls(opt):
    """Make ``opt``'s step add the seconds it spends inside MPI calls (the blocking
    all-reduce; the overlapped step's starts, polls and final wait) to the returned
    one-element list. In MPICH's default mode all of the reduction's work runs inside
    these calls, so their time is the communication a step pays for."""
    spent = [0.0]
    team = opt.team
    for name in ("sum_inplace", "start_sum_inplace", "progress", "wait_all"):
        def timed(*args, _call=getattr(team, name)):
            t = time.perf_counter()
            out = _call(*args)
            spent[0] += time.perf_counter() - t
            return out
        setattr(team, name, timed)
    return spent


def overlap(buckets, rounds=11, round_s=0.2):
    from mpi4py import MPI
    import fastbp
    from fastbp import distributed
    from fastbp.overlap import buckets as plan_buckets
    comm = MPI.COMM_WORLD
    rank, n = comm.Get_rank(), comm.Get_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    progress = os.environ.get("MPIR_CVAR_ASYNC_PROGRESS", "0")
    how = ("a progress thread per rank" if progress == "1"
           else "progress in the MPI calls between layers")
    say(f"# {n} ranks, {numba_threads()} numba thread(s) each, "
        f"MPIR_CVAR_ASYNC_PROGRESS={progress} ({how}); "
        f"{MPI.Get_library_version().splitlines()[0]}")
    say("\n| network (batch per rank) | gradients | all-reduce alone (ms) | variant "
        "| buckets | step (ms) | / no overlap | hidden (step) | in MPI calls (ms) "
        "| hidden (MPI calls) |")
    say("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for name, (sizes, batch) in OVERLAP_NETS.items():
        X, y = make_data(sizes, batch, "float32", seed=rank)
        net = fastbp.MLP(sizes, activation="tanh", dtype="float32", seed=0)
        variants = {"compute only": distributed.DistributedOptimizer(
                        fastbp.SGD(net, lr=1e-5), comm=MPI.COMM_SELF),
                    "no overlap": distributed.DistributedOptimizer(
                        fastbp.SGD(net, lr=1e-5), bucket_bytes=0)}
        plans = set()
        for b in buckets:   # one variant per distinct grouping of the layers
            plan = tuple(plan_buckets(net.layout, 4, _bytes(b)))
            if len(plan) > 1 and plan not in plans:
                plans.add(plan)
                variants[f"overlap {b}"] = distributed.DistributedOptimizer(
                    fastbp.SGD(net, lr=1e-5), bucket_bytes=_bytes(b))
        for opt in variants.values():   # compile / load, and fill the workspaces
            net.train_step(X, y, opt)
        t = time.perf_counter()
        net.train_step(X, y, variants["no overlap"])
        calls = comm.bcast(max(1, int(round_s / (time.perf_counter() - t))), root=0)
        spent = {k: _time_mpi_calls(opt) for k, opt in variants.items()}
        per_call = {k: [] for k in variants}
        in_mpi = {k: [] for k in variants}
        for _ in range(rounds):   # interleaved: every variant sees the same machine
            for label, opt in variants.items():
                comm.Barrier()
                before = spent[label][0]
                t = time.perf_counter()
                for _ in range(calls):
                    net.train_step(X, y, opt)
                per_call[label].append((time.perf_counter() - t) / calls)
                in_mpi[label].append((spent[label][0] - before) / calls)
        ms = {k: 1e3 * comm.allreduce(statistics.median(v), op=MPI.MAX)
              for k, v in per_call.items()}
        # the ranks' mean: the faster rank waits in the calls for the slower one
        mpi_ms = {k: 1e3 * comm.allreduce(statistics.median(v)) / n
                  for k, v in in_mpi.items()}
        alone = 1e3 * _allreduce_seconds(comm, np.ones(net.n_params, np.float32),
                                         repeats=max(5, min(50, int(2e8 // net.n_params))))
        exposed = ms["no overlap"] - ms["compute only"]
        for label in variants:
            opt = variants[label]
            n_buckets = (len(plan_buckets(net.layout, 4, opt.bucket_bytes))
                         if opt.bucket_bytes and label != "compute only" else 1)
            overlapped = label.startswith("overlap")
            hidden = f"{(ms['no overlap'] - ms[label]) / exposed:.2f}" if overlapped else ""
            hidden_mpi = (f"{1 - mpi_ms[label] / mpi_ms['no overlap']:.2f}" if overlapped
                          else "")
            say(f"| {name} {'-'.join(map(str, sizes))} ({batch}) | "
                f"{4 * net.n_params / 2**20:.1f} MiB | {alone:.1f} | {label} | "
                f"{n_buckets} | {ms[label]:.2f} | {ms[label] / ms['no overlap']:.3f} | "
                f"{hidden} | {mpi_ms[label]:.2f} | {hidden_mpi} |")
        del variants, net


def numba_threads():
    import numba
    return numba.get_num_threads()


def n_params(sizes):
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def ring_ms(machines, params, bandwidth, latency_us):
    """Milliseconds of a ring all-reduce of ``params`` float32 values over
    ``machines`` machines (bandwidth in bytes/s)."""
    m = machines
    return 1e3 * (2 * (m - 1) / m * 4 * params / bandwidth + 2 * (m - 1) * latency_us * 1e-6)


def model(latencies_us, machines, step_ms=None, hidden=None):
    """Print the model tables; ``step_ms`` {network: ms} replaces measuring the steps;
    ``hidden`` {network: share} adds a row per network with that share of the
    all-reduce hidden behind backward (as the overlap benchmark measured it)."""
    hidden = hidden or {}
    import fastbp
    nets = []
    for name, (sizes, batch) in CONFIGS.items():
        if step_ms:
            nets.append((name, sizes, batch, n_params(sizes), step_ms[name]))
            continue
        X, y = make_data(sizes, batch, "float32")
        net = fastbp.MLP(sizes, activation="tanh", dtype="float32", seed=0)
        opt = fastbp.SGD(net, lr=1e-4)
        net.train_step(X, y, opt)
        budget = 3.0 if name == "large" else 1.0
        nets.append((name, sizes, batch, net.n_params,
                     median_ms(lambda: net.train_step(X, y, opt), budget_s=budget,
                               rounds=3 if name == "large" else 7)))
    print("# " + ("step times given" if step_ms else
                  f"fused float32 step measured here ({numba_threads()} numba threads)")
          + "; ring all-reduce of the float32 gradients")
    for gbit, lat in zip(LINKS_GBIT, latencies_us):
        bw = gbit * 1e9 / 8   # bytes per second
        print(f"\n### {gbit} Gbit/s, latency {lat:g} us per ring step\n")
        print("| network (batch per machine) | params | step (ms) | "
              + " | ".join(f"N={m}" for m in machines) + " |")
        print("|---|---:|---:|" + "---:|" * len(machines))
        for name, sizes, batch, params, step in nets:
            cells = []
            for m in machines:
                ar = ring_ms(m, params, bw, lat)
                eff = step / (step + ar)
                bound = step / (step + max(0.0, ar - BACKWARD_SHARE * step))
                cells.append(f"{eff:.2f} ({bound:.2f})" if m > 1 else "1")
            print(f"| {name} ({batch}) | {params:,} | {step:.3f} | " + " | ".join(cells)
                  + " |")
            if name in hidden:
                h = hidden[name]
                cells = [f"{step / (step + (1 - h) * ring_ms(m, params, bw, lat)):.2f}"
                         if m > 1 else "1" for m in machines]
                print(f"| {name} ({batch}), {h:.0%} of the all-reduce hidden (measured) | "
                      f"{params:,} | {step:.3f} | " + " | ".join(cells) + " |")
    print("\ncells: efficiency t_step / (t_step + t_allreduce), no overlap (in brackets: "
          "with the all-reduce hidden behind backward, an upper bound)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("measure", "overlap", "model"))
    parser.add_argument("--buckets", default=OVERLAP_BUCKETS,
                        help=f"overlap: bucket sizes to time (default {OVERLAP_BUCKETS})")
    parser.add_argument("--rounds", type=int, default=11, help="overlap: rounds")
    parser.add_argument("--latency-us", default="20,5",
                        help="per-step latency for the 10 and 100 Gbit/s links "
                             "(default 20,5: TCP on 10 GbE, RDMA on 100 Gbit/s)")
    parser.add_argument("--machines", default=",".join(map(str, MACHINES)))
    parser.add_argument("--step-ms", metavar="NAME=MS,...",
                        help="model: use these step times (ms per network, e.g. from "
                             "yardstick.py's fastbp column) instead of measuring them")
    parser.add_argument("--overlap-hidden", metavar="NAME=SHARE,...",
                        help="model: add a row per network with this share (0-1) of its "
                             "all-reduce hidden behind backward")
    args = parser.parse_args(argv)
    if args.what == "measure":
        measure()
    elif args.what == "overlap":
        overlap(args.buckets.split(","), rounds=args.rounds)
    else:
        step_ms = (None if args.step_ms is None else
                   {k: float(v) for k, v in (p.split("=") for p in args.step_ms.split(","))})
        hidden = (None if args.overlap_hidden is None else
                  {k: float(v) for k, v in (p.split("=")
                                            for p in args.overlap_hidden.split(","))})
        model([float(v) for v in args.latency_us.split(",")],
              [int(v) for v in args.machines.split(",")], step_ms, hidden)


if __name__ == "__main__":
    main()
