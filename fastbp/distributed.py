"""Data-parallel training over MPI: one replica of the network per process (rank), each
rank computing gradients on its own shard of every batch, the ranks averaging their
gradient buffers with one all-reduce before the identical update.

    # mpiexec -n 4 python train.py        (pip install 'fastbp[mpi]' brings mpi4py + MPICH)
    import fastbp
    from fastbp import distributed
    net = fastbp.MLP([784, 128, 10], seed=0)
    distributed.broadcast_parameters(net)          # every rank starts from rank 0's weights
    opt = distributed.DistributedOptimizer(fastbp.Adam(net, lr=1e-3))
    X_part, y_part = distributed.shard(X, y)       # this rank's equal share of the rows
    history = fastbp.fit(net, X_part, y_part, optimizer=opt, batch_size=32, seed=0)

The names are Horovod's (``horovod.torch.broadcast_parameters``,
``horovod.torch.DistributedOptimizer``), whose API this follows. ``comm`` is an mpi4py
communicator, ``mpi4py.MPI.COMM_WORLD`` by default. mpi4py is imported on first use
only: without it (and without ``comm``) everything here runs as one process, rank 0 of
1, and does nothing extra, so a script written for several ranks runs unchanged alone.

**The step.** The parameters' gradients live in one flat buffer (``net.grads``), so
averaging them is one in-place ``MPI_Allreduce`` (sum, then a division by the number of
ranks). On equal shards the average of the ranks' mean-loss gradients is the gradient of
the mean loss over the whole batch, so N ranks on shards of a batch take the step one
process takes on the whole batch (to rounding). The fused compiled step (forward,
backward and update in one call) cannot stop for communication, so a distributed step is
two compiled calls around the all-reduce: the network's backward pass, then the
optimizer's update, whose gradient clipping (``max_grad_norm``) therefore sees the
averaged gradients: the global norm after averaging, as one process would clip.

**Overlap.** For CPU networks whose gradients make more than one bucket of
``bucket_bytes`` (default DEFAULT_BUCKET_BYTES, 16 MiB; fastbp.overlap.buckets) the
step instead runs backward one layer at a time (fastbp.overlap) and starts an in-place
``MPI_Iallreduce`` of each bucket of layers as soon as backward has finished it, so
that the reduction of the last layers' gradients runs while backward computes the
first layers'; the update waits for every bucket. MPICH advances a non-blocking
collective only inside MPI calls unless it runs a progress thread
(``MPIR_CVAR_ASYNC_PROGRESS=1``), so the step calls ``MPI_Testall`` on the started
buckets after every layer. Measured on 2 ranks of a 2-core machine
(benchmarks/README.md, "Overlapping the all-reduce with backward"), that polling beat
the progress thread, which takes a core from the kernels; with spare cores per rank
the progress thread may pay.

**Agreement.** Every rank must make the same collective calls in the same order, or
they wait for each other forever. So:

- divergence: a rank whose loss is NaN or infinite writes NaN into its gradient before
  the all-reduce; the sum carries it to every rank, the identical update leaves every
  replica non-finite, and every rank sees the divergence at the same step without
  another collective (``train_step``, ``train_epoch`` and ``fit`` then raise, or stop,
  on every rank; a non-finite loss therefore always counts as a divergent step here).
- ``fit``: the shuffling seed is rank 0's; the ranks must have the same number of
  training rows, batch size and epochs (checked: ValueError on every rank otherwise);
  after each epoch the training loss and the validation loss and metric are averaged
  over the ranks (weighted by rows; "val_r2" is the rows-weighted mean of the ranks'
  R^2, exact when every rank scores the same validation data), so early stopping
  decides the same epoch everywhere, and a callback asking to stop on one rank stops
  them all. Only rank 0 prints lines and shows a progress bar.
- errors: an exception raised by one rank while ``fit`` checks its arguments is
  raised on every rank (the others get a RuntimeError naming the rank and its error).
  Any other exception on one rank cannot reach the others, which may already wait in
  a collective: when it escapes ``fit`` or the script (``sys.excepthook``), the
  traceback is printed and ``MPI_Abort`` stops every rank (``abort_on_error=True``,
  the default of ``DistributedOptimizer``; a script that catches such an exception on
  one rank and goes on leaves the others waiting).

**GPU networks.** Where the MPI library is CUDA-aware, the device gradient buffer goes
to ``MPI_Allreduce`` in place (mpi4py reads its ``__cuda_array_interface__``) and is
divided by the number of ranks on the device; elsewhere it is staged through pinned
host memory. ``DistributedOptimizer.gpu_path`` says which ran ("cuda-aware" or
"host-staging"), ``cuda_aware_source`` how it was decided (``cuda_aware_mpi``: the
FASTBP_MPI_CUDA_AWARE variable, then ``MPIX_Query_cuda_support()``, then the MPI 4.1
info key "mpi_memory_alloc_kinds"). The MPICH wheel of the ``[mpi]`` extra is not
CUDA-aware (it answers 0), so it stages.
"""
import functools
import inspect
import math
import os
import sys
import time
import traceback

import numpy as np

from . import device as _device
from . import overlap as _overlap
from . import validation
from .divergence import TrainingDiverged
from .optim import Optimizer

INSTALL_HINT = "pip install 'fastbp[mpi]' (mpi4py and MPICH)"

# DistributedOptimizer's default bucket size for overlapping the all-reduce with
# backward (benchmarks/README.md, "Overlapping the all-reduce with backward").
DEFAULT_BUCKET_BYTES = 16 << 20


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"fastbp.distributed: a communicator needs mpi4py: "
                          f"{INSTALL_HINT}") from exc
    return MPI


# Seconds between a rank's error report and MPI_Abort (Team.abort says why).
ABORT_GRACE_S = 0.5


class AgreedError(RuntimeError):
    """Raised on every rank at once: a collective check failed on some rank (the
    message names it), so all ranks stop together."""


def _agreed(exc):
    """Mark ``exc`` as raised on every rank (no abort needed)."""
    exc._fastbp_agreed = True
    return exc


def _is_agreed(exc):
    # A TrainingDiverged is seen by every rank at the same step (module docstring).
    return isinstance(exc, TrainingDiverged) or getattr(exc, "_fastbp_agreed", False)


class Team:
    """The ranks of an mpi4py communicator, with the few collectives fastbp uses.

    ``rank`` and ``size`` as MPI numbers them; ``comm`` the communicator (None for
    the one-process stand-in, which has rank 0 of 1 and whose collectives return
    their input)."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self._fit_setup = None   # the setup collectives fit has still to make

    # -- collectives -----------------------------------------------------------------
    def sum_inplace(self, array):
        """Sum a numpy array over the ranks, in place (MPI_Allreduce, MPI_IN_PLACE)."""
        if self.comm is not None:
            self.comm.Allreduce(_mpi().IN_PLACE, array, op=_mpi().SUM)
        return array

    def start_sum_inplace(self, array):
        """Start summing a numpy array (or a buffer mpi4py takes) over the ranks, in
        place, without waiting (MPI_Iallreduce): returns the request, or None for one
        process. ``array`` must stay untouched until ``wait_all``."""
        if self.comm is None:
            return None
        return self.comm.Iallreduce(_mpi().IN_PLACE, array, op=_mpi().SUM)

    @staticmethod
    def progress(requests):
        """Let MPI advance the pending ``requests`` (MPI_Testall): MPICH moves a
        non-blocking collective on only inside MPI calls (unless it runs a progress
        thread, MPIR_CVAR_ASYNC_PROGRESS=1)."""
        live = [r for r in requests if r is not None]
        if live:
            _mpi().Request.Testall(live)

    @staticmethod
    def wait_all(requests):
        live = [r for r in requests if r is not None]
        if live:
            _mpi().Request.Waitall(live)

    def broadcast_inplace(self, array, root):
        if self.comm is not None:
            self.comm.Bcast(array, root=root)
        return array

    def allgather(self, obj):
        """A list of every rank's ``obj`` (pickled; for small things only)."""
        return self.comm.allgather(obj) if self.comm is not None else [obj]

    def agree_same(self, what, value):
        """ValueError on every rank when ``value`` differs between ranks."""
        values = self.allgather(value)
        if any(v != values[0] for v in values):
            raise _agreed(ValueError(f"{what}: every rank must give the same; got "
                                     + ", ".join(f"rank {r}: {v!r}"
                                                 for r, v in enumerate(values))))

    # -- stopping every rank ---------------------------------------------------------
    def abort(self, exc, show_traceback=True):
        """Print ``exc`` (its traceback, or one line) naming this rank and stop every
        rank (MPI_Abort): the others may wait in a collective this rank will not join."""
        text = (f"fastbp.distributed: rank {self.rank} of {self.size} raised"
                + (":\n" if show_traceback else f" {type(exc).__name__}\n"))
        if show_traceback:
            text += "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        text += f"fastbp.distributed: stopping all {self.size} ranks (MPI_Abort)\n"
        sys.stdout.flush()
        sys.stderr.write(text)   # one write: the whole report or none of it
        sys.stderr.flush()
        if self.comm is not None:
            # mpiexec forwards a rank's output from a pipe and kills every rank when
            # one aborts; aborting at once after the write sometimes lost the report
            # (seen under load: only its first line arrived), so give it a moment.
            time.sleep(ABORT_GRACE_S)
            self.comm.Abort(1)
        os._exit(1)   # pragma: no cover - Abort does not return

    def rank_zero_first(self, work):
        """``work(quiet=False)`` on rank 0, then, after a barrier, ``work(quiet=True)``
        on the other ranks: for compiling kernels, which rank 0 compiles (and
        announces) into numba's on-disk cache and the others then load, instead of
        every rank compiling the same code at once on the same cores. (Ranks on other
        machines with caches of their own compile after rank 0.) An error in ``work``
        on rank 0 stops every rank through fit's error handling (``fit_errors``)."""
        if self.size == 1:
            return work(quiet=False)
        if self.rank == 0:
            result = work(quiet=False)
        self.comm.Barrier()
        if self.rank != 0:
            result = work(quiet=True)
        return result

    # -- fit's agreement points (fastbp.training.fit) ----------------------------------
    def begin_fit(self):
        self._fit_setup = ["seed", "loop"]

    def _setup_collective(self, name, payload, error=None):
        """One of fit's setup collectives: every rank sends (error, payload); when any
        rank sent an error, every rank raises it (the failing rank its own)."""
        assert self._fit_setup and self._fit_setup[0] == name, (self._fit_setup, name)
        self._fit_setup.pop(0)
        sent = self.allgather((None if error is None else f"{type(error).__name__}: "
                               f"{error}", payload))
        failed = [(r, e) for r, (e, _) in enumerate(sent) if e is not None]
        if failed and error is None:
            rank, message = failed[0]
            raise _agreed(AgreedError(f"fit: rank {rank} of {self.size} failed, so "
                                      f"every rank stops: {message}"))
        return [p for _, p in sent]

    def common_seed(self, seed):
        """Rank 0's seed (a fresh one drawn there when it is None): every rank
        shuffles alike."""
        if self.size == 1:
            return seed
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2**63)
        return self._setup_collective("seed", seed)[0]

    def agree_loop(self, n, batch_size, epochs, validating, patience):
        """ValueError on every rank unless all ranks run the same loop (rows, batch
        size, epochs, validation, early stopping): else their collectives mismatch."""
        if self.size == 1:
            return
        shapes = self._setup_collective("loop", (n, batch_size, epochs, validating,
                                                 patience))
        names = ("X: training rows (use fastbp.distributed.shard for equal shards)",
                 "batch_size", "epochs", "validation data (given or not)",
                 "early_stopping")
        for i, name in enumerate(names):
            values = [s[i] for s in shapes]
            if any(v != values[0] for v in values):
                raise _agreed(ValueError(
                    f"fit: {name}: every rank must give the same; got "
                    + ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))))

    def fit_failed(self, exc):
        """fit raised ``exc`` on this rank: during setup, join the collective the
        other ranks wait in, so they raise too; later, stop every rank unless the
        error is agreed."""
        if self.size == 1 or _is_agreed(exc):
            return
        if self._fit_setup:
            self._setup_collective(self._fit_setup[0], None, error=exc)
            return
        self.abort(exc)

    def agree_logs(self, logs, n, n_val):
        """Average an epoch's logs over the ranks (loss by training rows, validation
        entries by validation rows), in place."""
        if self.size == 1:
            return
        keys = [k for k in logs if k != "lr"]
        weights = [n if k == "loss" else n_val for k in keys]
        sums = np.array([logs[k] * w for k, w in zip(keys, weights)]
                        + [float(n), float(n_val)], np.float64)
        self.sum_inplace(sums)
        for i, k in enumerate(keys):
            logs[k] = float(sums[i] / (sums[-2] if k == "loss" else sums[-1]))

    def agree_stop(self, stop):
        """The stop decision of the rank that wants to stop (early stopping comes
        first, then a callback's), the same on every rank."""
        if self.size == 1:
            return stop
        reasons = (None, "callback", "early_stopping")
        code = np.array([reasons.index(stop)], np.int64)
        self.comm.Allreduce(_mpi().IN_PLACE, code, op=_mpi().MAX)
        return reasons[int(code[0])]


_ONE_PROCESS = Team(None)


def _team(comm):
    """The Team of ``comm`` (default MPI.COMM_WORLD, or one process without mpi4py)."""
    if comm is None:
        try:
            from mpi4py import MPI
        except ImportError:
            return _ONE_PROCESS
        comm = MPI.COMM_WORLD
    if isinstance(comm, Team):
        return comm
    for method in ("Get_rank", "Get_size", "Allreduce", "Bcast", "allgather"):
        if not callable(getattr(comm, method, None)):
            raise TypeError(f"comm: expected an mpi4py communicator (such as "
                            f"MPI.COMM_WORLD), got {comm!r}")
    return Team(comm)


def team_of(optimizer):
    """The ranks ``optimizer`` trains with: its Team for a DistributedOptimizer, else
    one process (fit's agreement calls then do nothing)."""
    return optimizer.team if isinstance(optimizer, DistributedOptimizer) else _ONE_PROCESS


def rank_and_size(comm=None):
    """(rank, number of ranks) of ``comm`` (default MPI.COMM_WORLD; (0, 1) without
    mpi4py)."""
    team = _team(comm)
    return team.rank, team.size


_abort_hook_installed = False


def _install_abort_hook(team):
    """Make an exception that escapes the script on one rank stop every rank
    (module docstring), unless every rank raised it."""
    global _abort_hook_installed
    if _abort_hook_installed or team.size == 1:
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if exc is not None and not _is_agreed(exc) and not isinstance(
                exc, (KeyboardInterrupt, SystemExit)):
            team.abort(exc.with_traceback(tb))
        previous(exc_type, exc, tb)
    sys.excepthook = hook
    _abort_hook_installed = True


def abort_unless_agreed(exc, comm=None, show_traceback=False):
    """For a program that caught ``exc`` on one rank, reported it and would end: stop
    every rank (MPI_Abort) unless every rank raised it too. Returns when it is agreed
    (or there is one rank)."""
    team = _team(comm)
    if team.size > 1 and not _is_agreed(exc):
        team.abort(exc, show_traceback)


def fit_errors(fit):
    """Decorate ``fastbp.training.fit``: under a DistributedOptimizer, an exception on
    one rank stops every rank (Team.fit_failed) instead of leaving them waiting."""
    signature = inspect.signature(fit)

    @functools.wraps(fit)
    def guarded(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs).arguments
        optimizer = bound.get("optimizer")
        if optimizer is None and bound.get("schedule") is not None:
            optimizer = getattr(bound["schedule"], "optimizer", None)
        team = team_of(optimizer)
        team.begin_fit()
        try:
            return fit(*args, **kwargs)
        except BaseException as exc:
            team.fit_failed(exc)
            raise
        finally:
            team._fit_setup = None
    return guarded


def step_passes(optimizer, passes):
    """The compiled passes a training with ``optimizer`` runs: a DistributedOptimizer's
    step is backward (the loss and one layer's backward at a time when overlapped),
    the all-reduce, then the update, instead of the fused step."""
    if not isinstance(optimizer, DistributedOptimizer):
        return passes
    step = (("loss", "layer_backward", "layer_input_grad")
            if optimizer._buckets(optimizer.net)[0]
            else ("backward",)) + ("update",)
    out = []
    for p in passes:
        for name in (step if p in ("train_step", "train_epoch") else (p,)):
            if name not in out:
                out.append(name)
    return tuple(out)


# -- the public API ----------------------------------------------------------------------
def broadcast_parameters(net, comm=None, root=0):
    """Copy rank ``root``'s parameters into ``net`` on every rank (MPI_Bcast of
    ``net.params``), so all replicas start alike. ``net`` must have the same number of
    parameters and dtype on every rank (else ValueError on every rank). GPU networks
    are staged through host memory."""
    team = _team(comm)
    root = _root(root, team)
    if team.size == 1:
        return
    team.agree_same("net: parameters (count, dtype)", (int(net.n_params), net.dtype.name))
    host = _device.to_host(net.params)
    team.broadcast_inplace(host, root)
    if _device.is_device_array(net.params):
        net.params.copy_to_device(host)


def broadcast_optimizer_state(optimizer, comm=None, root=0):
    """Copy rank ``root``'s optimizer state, hyperparameters and step count into
    ``optimizer`` on every rank (for resuming from a checkpoint read on one rank)."""
    team = _team(comm)
    root = _root(root, team)
    if team.size == 1:
        return
    opt = optimizer.optimizer if isinstance(optimizer, DistributedOptimizer) else optimizer
    d = opt.state_dict()
    team.agree_same("optimizer: (kind, state shape, dtype)",
                    (d["name"], d["state"].shape, d["state"].dtype.name))
    d["hparams"] = team.broadcast_inplace(d["hparams"], root)
    d["state"] = team.broadcast_inplace(np.ascontiguousarray(d["state"]), root)
    d["steps"] = team.allgather(d["steps"])[root]
    opt.load_state_dict(d)


def _root(root, team):
    if isinstance(root, (bool, np.bool_)) or not isinstance(root, (int, np.integer)) or not (
            0 <= root < team.size):
        raise ValueError(f"root: expected a rank in [0, {team.size}), got {root!r}")
    return int(root)


def shard(X, y=None, comm=None):
    """This rank's share of a data set: rows ``rank, rank + N, rank + 2N, ...`` of the
    first ``N * (n // N)`` rows of X (and y), N the number of ranks.

    Every rank gets n // N rows (equal shards keep the ranks' steps in lockstep and
    make the averaged gradient the whole batch's); the last n % N rows (fewer than N)
    are left out. Deterministic: the same X, N and rank give the same rows. Interleaved
    rather than in blocks, so that data sorted by class gives every rank every class.

    X : (n, ...) array-like; y : (n, ...) array-like or None.
    Returns (X_part, y_part) (X_part alone when y is None), new C-ordered arrays.
    Raises ValueError when X has fewer rows than there are ranks, or y another count.
    """
    team = _team(comm)
    X = np.asarray(X)
    if X.ndim < 1:
        raise ValueError(f"X: expected an array of rows, got a scalar {X!r}")
    n = X.shape[0]
    if y is not None:
        y = np.asarray(y)
        if y.ndim < 1 or y.shape[0] != n:
            raise ValueError(f"y: expected {n} rows (one per row of X), got shape "
                             f"{y.shape}")
    if n < team.size:
        raise ValueError(f"X: {n} rows cannot be shared by {team.size} ranks (each needs "
                         f"at least one)")
    rows = slice(team.rank, team.size * (n // team.size), team.size)
    part = np.ascontiguousarray(X[rows])
    return part if y is None else (part, np.ascontiguousarray(y[rows]))


def local_batch_size(batch_size, comm=None):
    """The rows each rank takes of a global batch of ``batch_size`` rows: batch_size
    / N, which must be a whole number (ValueError otherwise)."""
    team = _team(comm)
    batch_size = validation.positive_int("batch_size", batch_size)
    if batch_size % team.size:
        raise ValueError(f"batch_size: a batch of {batch_size} rows cannot be split "
                         f"evenly over {team.size} ranks; use a multiple of {team.size}")
    return batch_size // team.size


def average(value, comm=None):
    """The mean over the ranks of a number or numpy array (a new float64 array, or a
    float for a number): for per-rank metrics such as ``train_epoch``'s losses."""
    team = _team(comm)
    out = np.array(value, dtype=np.float64)
    team.sum_inplace(out)
    out /= team.size
    return float(out) if out.ndim == 0 else out


class DistributedOptimizer(Optimizer):
    """Wraps any fastbp optimizer so that each update first averages the gradients
    over the ranks of ``comm`` (one in-place all-reduce of the flat gradient buffer).

    Use it wherever the optimizer would go: ``net.train_step(X, y, opt)``,
    ``net.train_epoch(X, y, opt)``, ``fastbp.fit(net, X, y, optimizer=opt)``, or
    ``net.backward(X, y); opt.step()``. Its settings, state and step count are the
    wrapped optimizer's (``opt.optimizer``), shared, not copied: a schedule or a
    ``state_dict`` of either sees the same values. Every rank must call the same
    steps in the same order, on batches of equal size (see the module docstring for
    what is agreed between ranks and how errors stop them).

    Parameters
    ----------
    optimizer : a fastbp optimizer (SGD, Adam, AdamW, RMSprop), made for the network
        this rank trains.
    comm : an mpi4py communicator; default MPI.COMM_WORLD (one process without
        mpi4py).
    abort_on_error : when True (default) and there are several ranks, an exception
        that escapes the script on one rank stops every rank (sys.excepthook calls
        MPI_Abort) instead of leaving the others waiting in a collective.
    bucket_bytes : overlap of the all-reduce with backward, for CPU networks in
        ``train_step``, ``train_epoch`` and ``fit``: backward runs layer by layer
        (fastbp.overlap) and each bucket of layers, closed once its gradients reach
        ``bucket_bytes`` bytes, is all-reduced in place without waiting
        (MPI_Iallreduce) while backward goes on below it; the update waits for every
        bucket (clipping needs the global norm after averaging). None or 0: no
        overlap, one all-reduce of the whole buffer after the compiled backward, as
        also happens where the buffer is a single bucket (networks under
        ``bucket_bytes`` of gradients), for GPU and checkpointed networks, and in
        ``net.backward(...); opt.step()``. Default DEFAULT_BUCKET_BYTES (chosen from
        benchmarks/allreduce.py's measurements, benchmarks/README.md). Results equal
        the non-overlapped step's to rounding (the sums may add in another order).
    cuda_aware : GPU networks: True reduces the device gradient buffer in place
        (the MPI library must be CUDA-aware), False stages it through pinned host
        memory, None (default) asks ``cuda_aware_mpi`` (the FASTBP_MPI_CUDA_AWARE
        variable, then the MPI library).

    Attributes: ``rank``, ``size`` (this rank and the number of ranks),
    ``bucket_bytes``, ``gpu_path`` (which path a GPU network's last reduction took:
    "cuda-aware" or "host-staging"; None before one), ``cuda_aware_source`` (how the
    choice was made, once made).

    Raises TypeError for something other than a fastbp optimizer, ValueError for a
    negative or non-integer ``bucket_bytes`` and (on every rank) when the ranks'
    networks or optimizers differ in kind, size or dtype.
    """

    reduces_gradients = True   # read by MLP's train_step / train_epoch (fastbp.network)

    def __init__(self, optimizer, comm=None, abort_on_error=True,
                 bucket_bytes=DEFAULT_BUCKET_BYTES, cuda_aware=None):
        if isinstance(optimizer, DistributedOptimizer):
            raise TypeError("optimizer: it is already a DistributedOptimizer")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected a fastbp optimizer (SGD, Adam, AdamW, "
                            f"RMSprop), got {optimizer!r}")
        if bucket_bytes is not None and (
                isinstance(bucket_bytes, (bool, np.bool_))
                or not isinstance(bucket_bytes, (int, np.integer)) or bucket_bytes < 0):
            raise ValueError(f"bucket_bytes: expected None or a whole number of bytes "
                             f">= 0, got {bucket_bytes!r}")
        if cuda_aware not in (None, True, False):
            raise ValueError(f"cuda_aware: expected None, True or False, got "
                             f"{cuda_aware!r}")
        self.__dict__["optimizer"] = optimizer
        self.team = _team(comm)
        self.code = optimizer.code
        self.bucket_bytes = int(bucket_bytes or 0)
        self.gpu_path = None
        self._cuda_aware = cuda_aware
        self.cuda_aware_source = None if cuda_aware is None else "cuda_aware argument"
        self._pinned = None
        self._overlap = (None, None, None)   # (network key, buckets, LayerwiseBackward)
        if self.team.size > 1:
            self.team.agree_same("optimizer and network (kind, parameters, dtype)",
                                 (optimizer.name, int(optimizer.net.n_params),
                                  optimizer.net.dtype.name))
            if abort_on_error:
                _install_abort_hook(self.team)

    # The wrapped optimizer's values, shared (not copied).
    net = property(lambda self: self.optimizer.net)
    hparams = property(lambda self: self.optimizer.hparams,
                       lambda self, v: setattr(self.optimizer, "hparams", v))
    state = property(lambda self: self.optimizer.state,
                     lambda self, v: setattr(self.optimizer, "state", v))
    steps = property(lambda self: self.optimizer.steps,
                     lambda self, v: setattr(self.optimizer, "steps", v))
    rank = property(lambda self: self.team.rank)
    size = property(lambda self: self.team.size)

    def __getattr__(self, name):
        # Settings of the wrapped class (momentum, betas, ...) read through.
        if name.startswith("__") or "optimizer" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["optimizer"], name)

    def n_state_rows(self, hparams):
        return self.optimizer.n_state_rows(hparams)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, d):
        self.optimizer.load_state_dict(d)

    def _settings(self):
        return self.optimizer._settings()

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r}, ranks={self.size})"

    # -- the all-reduce ----------------------------------------------------------------
    def reduce_gradients(self, poison=False):
        """Average ``net.grads`` over the ranks, in place: one MPI_Allreduce (sum) of
        the flat buffer, then a division by the number of ranks. With ``poison`` this
        rank's contribution is made NaN first, so every rank sees a divergent step.

        GPU networks: the device buffer itself goes to MPI (its
        ``__cuda_array_interface__``) and is divided on the device when the MPI
        library is CUDA-aware (``cuda_aware``); else it is copied to pinned host
        memory, reduced there and copied back. ``gpu_path`` says which ran."""
        grads = self.net.grads
        if self.team.size == 1 and not poison:
            return
        if _device.is_device_array(grads):
            if self._device_in_place():
                self._reduce_on_device(grads, poison)
                return
            if self._pinned is None or self._pinned.shape != grads.shape:
                from numba import cuda
                self._pinned = cuda.pinned_array(grads.shape, grads.dtype)
            host = grads.copy_to_host(self._pinned)
            self.gpu_path = "host-staging"
        else:
            host = grads
        if poison:
            host[0] = np.nan
        if self.team.size > 1:
            self.team.sum_inplace(host)
            host /= host.dtype.type(self.team.size)
        if host is not grads:
            grads.copy_to_device(host)

    def _device_in_place(self):
        """Whether GPU gradients are reduced in place (decided once)."""
        if self._cuda_aware is None:
            self._cuda_aware, self.cuda_aware_source = cuda_aware_mpi(self.team)
        return self._cuda_aware

    def _reduce_on_device(self, grads, poison):
        from .kernels.cuda.optim import divide_inplace
        if poison:
            grads[0:1].copy_to_device(np.full(1, np.nan, grads.dtype))
        if self.team.size > 1:
            from numba import cuda
            cuda.synchronize()   # MPI is not ordered with CUDA streams: backward first
            self.team.sum_inplace(_mpi_device_buffer(grads))
            divide_inplace(grads, self.team.size)
        self.gpu_path = "cuda-aware"

    def _buckets(self, net):
        """(buckets, LayerwiseBackward) of an overlapped step of ``net``, or (None,
        None) for a step that reduces the whole buffer at once (fastbp.overlap)."""
        key = (id(net), id(net.layout), net.device, net.dtype, self.bucket_bytes)
        if self._overlap[0] != key:
            plan = (None if self.team.size == 1 else
                    _overlap.uses_buckets(net, net.dtype.itemsize, self.bucket_bytes))
            self._overlap = (key, plan,
                             None if plan is None else _overlap.LayerwiseBackward(net))
        return self._overlap[1], self._overlap[2]

    def _backward_reducing(self, net, X, labels, targets, buckets, layerwise):
        """Backward layer by layer, each bucket's in-place all-reduce started as soon
        as backward has finished it and MPI given the chance to advance the started
        ones after every layer (Team.progress); returns the loss once every bucket is
        reduced and divided by the number of ranks."""
        loss = layerwise.loss(X, labels, targets)
        poison = not math.isfinite(loss)
        grads = net.grads
        pending, spans = [], []
        todo = iter(buckets)
        bucket = next(todo)

        def after_layer(layer):
            nonlocal bucket
            if bucket is not None and layer == bucket[0]:
                span = grads[bucket[1]:bucket[2]]
                if poison and not spans:   # the first bucket carries it to every rank
                    span[0] = np.nan
                spans.append(span)   # kept alive until its reduction is done
                pending.append(self.team.start_sum_inplace(span))
                bucket = next(todo, None)
            self.team.progress(pending)

        layerwise.backward(X, after_layer)
        self.team.wait_all(pending)
        grads /= grads.dtype.type(self.team.size)
        return loss

    def step(self):
        """The update from ``net.grads`` (after ``net.backward``), averaged over the
        ranks first (one blocking all-reduce: backward has already run). Raises
        fastbp.TrainingDiverged as Optimizer.step does (on every rank alike)."""
        self.reduce_gradients()
        super().step()

    def _train_step(self, net, X, labels, targets):
        """A distributed training step on checked inputs (MLP._train_step_checked):
        backward and the all-reduce (overlapped where ``bucket_bytes`` makes several
        buckets), then the update. Returns (this rank's loss before the update, how
        many parameters the update left non-finite)."""
        buckets, layerwise = self._buckets(net)
        if buckets is None:
            loss = net._backward_checked(X, labels, targets)
            self.reduce_gradients(poison=not math.isfinite(loss))
        else:
            loss = self._backward_reducing(net, X, labels, targets, buckets, layerwise)
        kernels = _device.kernels(getattr(net, "device", "cpu"))
        nonfinite = kernels.optimizer_update(*self.compiled_args_for(net))
        return loss, int(nonfinite)


# -- CUDA-aware MPI -----------------------------------------------------------------------
CUDA_AWARE_ENV = "FASTBP_MPI_CUDA_AWARE"


def cuda_aware_mpi(comm=None):
    """(aware, how): whether the MPI library under ``comm`` takes GPU buffers, and how
    that was found out, in this order:

    1. the environment variable FASTBP_MPI_CUDA_AWARE: "1" (or true/yes) or "0" (or
       false/no), for a library the checks below cannot ask, or to force staging;
    2. ``MPIX_Query_cuda_support()``, the run-time answer of MPICH (>= 4.0) and Open
       MPI (>= 2.0), looked up in the loaded MPI library (mpi4py does not wrap it);
    3. the MPI 4.1 info key "mpi_memory_alloc_kinds" of the communicator, which lists
       "cuda:device" where device memory is supported;
    4. otherwise False (staging always works).

    Raises ValueError for another value of the variable."""
    value = os.environ.get(CUDA_AWARE_ENV, "").strip()
    if value:
        if value.lower() in ("1", "true", "yes"):
            return True, f"{CUDA_AWARE_ENV}={value}"
        if value.lower() in ("0", "false", "no"):
            return False, f"{CUDA_AWARE_ENV}={value}"
        raise ValueError(f"{CUDA_AWARE_ENV}: expected 1 or 0, got {value!r}")
    team = _team(comm)
    if team.comm is None:
        return False, "one process, no MPI"
    answer = _mpix_query_cuda_support()
    if answer is not None:
        return bool(answer), f"MPIX_Query_cuda_support() = {answer}"
    try:
        kinds = team.comm.Get_info().Get("mpi_memory_alloc_kinds")
    except Exception:   # an MPI before 4.1, or a communicator without info
        kinds = None
    if kinds is not None:
        return "cuda:device" in kinds.split(","), f"mpi_memory_alloc_kinds = {kinds}"
    return False, (f"the MPI library cannot be asked; set {CUDA_AWARE_ENV}=1 if it is "
                   f"CUDA-aware")


def _mpix_query_cuda_support():
    """MPIX_Query_cuda_support() of the MPI library this process loaded (an int), or
    None where it has no such function or the library cannot be found."""
    import ctypes
    candidates = [None]   # the process's global symbols first
    try:   # Linux: the libmpi* files mapped into this process (mpi4py loaded one)
        with open("/proc/self/maps") as f:
            candidates += sorted({line.split()[-1] for line in f
                                  if os.path.basename(line.split()[-1]).startswith(
                                      "libmpi")})
    except OSError:
        pass
    for path in candidates:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0)) if path \
                else ctypes.CDLL(None)
            query = lib.MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        query.restype, query.argtypes = ctypes.c_int, []
        return int(query())
    return None


class _SimulatedDeviceBuffer:
    """What a simulated device array (numba's CUDA simulator) lacks to go to MPI as
    a GPU buffer: a ``__cuda_array_interface__``, here pointing at the simulated
    device memory (host memory), so the in-place path runs as on a GPU."""

    def __init__(self, array):
        face = array.__array_interface__   # the simulator forwards it to its memory
        self.__cuda_array_interface__ = {"shape": face["shape"], "strides": None,
                                         "typestr": face["typestr"],
                                         "data": face["data"], "version": 3}


def _mpi_device_buffer(grads):
    """The device array as mpi4py takes it: itself on a GPU (mpi4py reads its
    ``__cuda_array_interface__``), a stand-in pointing at its memory in the simulator."""
    if hasattr(grads, "__cuda_array_interface__"):
        return grads
    return _SimulatedDeviceBuffer(grads)


# -- the command line (python -m fastbp train --distributed) ------------------------------
def command_line_setup(net, optimizer, X, y, batch_size):
    """(DistributedOptimizer, this rank's shard of X and y, this rank's batch size) for
    ``train --distributed``; every rank starts from rank 0's weights. Needs mpi4py
    (ImportError with the install hint): without it ``--distributed`` would silently
    train N separate copies."""
    _mpi()
    optimizer = DistributedOptimizer(optimizer)
    try:   # the same on every rank (same flags, same number of ranks)
        batch_size = local_batch_size(batch_size, optimizer.team)
    except ValueError as exc:
        raise _agreed(exc) from None
    broadcast_parameters(net, optimizer.team)
    X, y = shard(X, y, optimizer.team)
    return optimizer, X, y, batch_size


class rank0_reports:
    """``with rank0_reports(args):`` around ``train``: on ranks other than 0, standard
    output is discarded and --save / --plot are dropped (rank 0 writes them)."""

    def __init__(self, args):
        self.args = args
        self.quiet = None

    def __enter__(self):
        import contextlib
        import io
        rank, _ = rank_and_size()
        if rank != 0:
            self.args.save = self.args.plot = None
            self.quiet = contextlib.redirect_stdout(io.StringIO())
            self.quiet.__enter__()
        return self

    def __exit__(self, *exc):
        if self.quiet is not None:
            self.quiet.__exit__(*exc)
        return False
