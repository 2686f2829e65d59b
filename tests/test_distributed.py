"""fastbp.distributed: data-parallel training over MPI, checked under ``mpiexec -n 2``.

The checks run inside the ranks of few launches (each rank is a fresh process paying
numba's import and cache load): tests/distributed_checks.py holds them, this file
launches it and asserts on what every rank wrote. Each launch has a hard time limit
and is killed with its ranks when it overruns, so a hang fails instead of stalling.
Skipped, saying so, where mpi4py or mpiexec are missing (pip install 'fastbp[mpi]').
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import distributed, overlap

RANKS = 2
HERE = Path(__file__).resolve().parent


def _mpiexec():
    beside = Path(sys.executable).with_name("mpiexec")   # the mpich wheel's, in the venv
    return str(beside) if beside.exists() else shutil.which("mpiexec")


_MISSING = ("mpi4py is not installed" if importlib.util.find_spec("mpi4py") is None
            else "no mpiexec found" if _mpiexec() is None else None)
needs_mpi = pytest.mark.skipif(_MISSING is not None,
                               reason=f"{_MISSING}: pip install 'fastbp[mpi]' (mpi4py and "
                                      f"MPICH) to run the distributed tests")


def _launch(args, timeout, cwd=None):
    """Run ``mpiexec -n RANKS python ARGS``; (returncode, stdout, stderr). On timeout
    the whole process group (mpiexec and its ranks) is killed and the test fails."""
    env = dict(os.environ)
    env.pop("FASTBP_DEBUG", None)
    # two ranks share the two cores: one kernel thread each
    env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([_mpiexec(), "-n", str(RANKS), sys.executable, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {RANKS} {' '.join(args)} did not finish within "
                    f"{timeout} s (a hang?); stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def warm_kernels():
    """Compile (or load) here the passes the ranks run, so that the two ranks load
    them from numba's cache instead of compiling them twice at once: the general
    passes (usually cached by the rest of the suite already), which distributed_checks.py,
    ABORT_SCRIPT and, through FASTBP_SPECIALISED_SETS=0 (tests/conftest.py, inherited by
    the ranks), the command line's ranks use."""
    from fastbp.kernels.cpu import network as cpu_network
    saved = cpu_network.SPECIALISED_SETS
    cpu_network.SPECIALISED_SETS = 0   # general passes, as in the ranks
    try:
        for dtype, activation in (("float64", "tanh"), ("float32", "relu")):
            net = fastbp.MLP([5, 17, 3], activation=activation, dtype=dtype, seed=0)
            opt = fastbp.Adam(net)
            fastbp.warmup(net, opt, ("train_step", "train_epoch", "backward", "loss",
                                     "forward"))
            net.backward(np.ones((2, 5)), np.array([0, 1]))
            opt.step()   # the update alone, as a distributed step runs it
    finally:
        cpu_network.SPECIALISED_SETS = saved
    assert os.environ.get(cpu_network.SPECIALISED_SETS_ENV) == "0"


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory, warm_kernels):
    out_dir = tmp_path_factory.mktemp("ranks")
    code, out, err = _launch([str(HERE / "distributed_checks.py"), str(out_dir)],
                             timeout=300)
    assert code == 0, f"the checks' launch failed ({code}):\n{out[-3000:]}\n{err[-3000:]}"
    results = []
    for rank in range(RANKS):
        with open(out_dir / f"rank{rank}.json") as f:
            results.append(json.load(f))
    return results


def _check_names():
    # the checks the ranks run, read from the script (one test each)
    text = (HERE / "distributed_checks.py").read_text()
    names = []
    for dtype in ("float64", "float32"):
        for opt in ("sgd", "sgd_nesterov", "adam_amsgrad", "adamw", "rmsprop_centered"):
            for clip in ("None", "0.05"):
                for overlap in ("", "-overlap"):
                    names.append(f"train_step_parity[{dtype}-{opt}-clip={clip}{overlap}]")
    names += [line.split('"')[1] for line in text.splitlines()
              if line.startswith(('@check("', 'check("'))]
    return names


@needs_mpi
@pytest.mark.parametrize("name", _check_names())
def test_under_mpiexec(rank_results, name):
    """Parity with one process (every optimizer, clipping, float64 1e-12 / float32
    1e-5), train_step / Optimizer.step / train_epoch / fit, agreement of ranks,
    divergence and bad input on one rank, broadcast, shard, the command line."""
    for rank, results in enumerate(rank_results):
        assert name in results, f"rank {rank} did not run {name}"
        r = results[name]
        if r["ok"] is None:
            pytest.skip(f"{name}: {r['detail']}")
        assert r["ok"], f"rank {rank}: {name}: {r['detail']}"


ABORT_SCRIPT = """
import numpy as np, fastbp
from fastbp import distributed
from fastbp.kernels.cpu import network
network.SPECIALISED_SETS = 0   # the general passes, which the test suite compiled
rank, size = distributed.rank_and_size()
net = fastbp.MLP([5, 17, 3], activation="tanh", dtype="float64", seed=0)
opt = distributed.DistributedOptimizer(fastbp.SGD(net))
X, y = np.ones((4, 5)), np.zeros(4, dtype=int)
net.train_step(X, y, opt)
if rank == 1:
    X = X[:, :4]   # bad input on one rank: it raises, the other waits in the all-reduce
net.train_step(X, y, opt)
print("rank", rank, "went on", flush=True)
"""


@needs_mpi
def test_an_uncaught_error_on_one_rank_stops_every_rank(tmp_path, warm_kernels):
    script = tmp_path / "abort.py"
    script.write_text(ABORT_SCRIPT)
    code, out, err = _launch([str(script)], timeout=120)
    assert code != 0
    assert "rank 1 of 2 raised" in err and "X: expected 5 features" in err, err[-3000:]
    assert "went on" not in out


@needs_mpi
def test_command_line_under_mpiexec(tmp_path, warm_kernels):
    """``mpiexec -n 2 python -m fastbp train --distributed``: trains, rank 0 alone
    prints and saves; a batch that does not split evenly is refused on every rank."""
    code, out, err = _launch(["-m", "fastbp", "train", "--distributed", "--epochs", "2",
                              "--hidden", "32", "--lr", "0.01", "--save",
                              str(tmp_path / "m.npz")], timeout=180)
    assert code == 0, err[-3000:]
    assert out.count("test accuracy") == 1 and out.count("epoch   2/2") == 1, out
    assert "ranks=2" in out and float(out.split("test accuracy ")[1].split()[0]) > 0.9
    assert list(fastbp.load(str(tmp_path / "m.npz")).sizes) == [64, 32, 10]
    code, out, err = _launch(["-m", "fastbp", "train", "--distributed", "--batch-size",
                              "33"], timeout=180)
    assert code != 0 and "multiple of 2" in err, err[-3000:]


@needs_mpi
def test_readme_example_under_mpiexec(tmp_path, warm_kernels):
    """The README's MPI example, as written, runs under ``mpiexec -n 2``; rank 0 alone
    prints the epochs (its network is the command line's kind: warm_kernels loads it)."""
    readme = (HERE.parent / "README.md").read_text()
    section = readme.split("## Several processes or machines (MPI)")[1]
    script = tmp_path / "readme_mpi.py"
    script.write_text(section.split("```python")[1].split("```")[0])
    code, out, err = _launch([str(script)], timeout=180)
    assert code == 0, err[-3000:]
    assert out.count("epoch   5/5") == 1, out


def test_one_process_without_mpi4py(monkeypatch):
    """Without mpi4py (and no comm) the distributed API is one process, rank 0 of 1:
    a script written for several ranks runs unchanged, and trains as without it."""
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # import mpi4py -> ImportError
    assert distributed.rank_and_size() == (0, 1)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((24, 5)), rng.integers(0, 3, 24)
    net = fastbp.MLP([5, 17, 3], activation="tanh", dtype="float64", seed=0)
    ref = fastbp.MLP([5, 17, 3], activation="tanh", dtype="float64", seed=0)
    distributed.broadcast_parameters(net)
    opt = distributed.DistributedOptimizer(fastbp.Adam(net, lr=0.01, max_grad_norm=0.1))
    ref_opt = fastbp.Adam(ref, lr=0.01, max_grad_norm=0.1)
    Xs, ys = distributed.shard(X, y)
    assert np.array_equal(Xs, X) and np.array_equal(ys, y)
    h = fastbp.fit(net, Xs, ys, epochs=2, batch_size=6, seed=1, optimizer=opt,
                   verbose=False)
    ref_h = fastbp.fit(ref, X, y, epochs=2, batch_size=6, seed=1, optimizer=ref_opt,
                       verbose=False)
    np.testing.assert_allclose(net.params, ref.params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h["loss"], ref_h["loss"], rtol=1e-12)
    assert opt.steps == ref_opt.steps == 8 and opt.lr == 0.01 and opt.betas == (0.9, 0.999)
    with pytest.raises(ImportError, match=r"fastbp\[mpi\]"):
        distributed.command_line_setup(net, opt, X, y, 6)


def test_import_fastbp_does_not_import_mpi4py():
    code = "import sys, fastbp, fastbp.distributed; print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_buckets_follow_backward_through_the_flat_buffer():
    """Buckets: contiguous spans of the gradient buffer from its end (the last layer,
    which backward finishes first) to its start, each closed once it reaches
    bucket_bytes; one bucket (or overlap off, or a checkpointed net) means no overlap."""
    lay = fastbp.MLP([5, 17, 9, 3], dtype="float64").layout   # layers: 102, 162, 30
    assert overlap.buckets(lay, 8, 200) == [(2, 264, 294), (1, 102, 264), (0, 0, 102)]
    assert overlap.buckets(lay, 4, 200) == [(1, 102, 294), (0, 0, 102)]
    assert overlap.buckets(lay, 8, 10**9) == [(0, 0, 294)]
    net = fastbp.MLP([5, 17, 9, 3], dtype="float64")
    assert overlap.uses_buckets(net, 8, 200) is not None
    for bucket_bytes in (None, 0, 10**9):
        assert overlap.uses_buckets(net, 8, bucket_bytes) is None
    checkpointed = fastbp.MLP([5, 17, 9, 3], dtype="float64", checkpoint=2)
    assert overlap.uses_buckets(checkpointed, 8, 200) is None


@pytest.mark.parametrize("dtype, activation, loss", [("float64", "tanh", "mse"),
                                                     ("float32", "relu",
                                                      "softmax_cross_entropy")])
def test_layerwise_backward_gives_the_compiled_backwards_gradients(dtype, activation,
                                                                     loss):
    """Backward one layer at a time (the overlapped step's) writes the same gradients,
    bit for bit, and the same loss as the whole-network compiled backward."""
    rng = np.random.default_rng(3)
    net = fastbp.MLP([5, 17, 9, 3], activation=activation, loss=loss, dtype=dtype, seed=4)
    X = rng.standard_normal((7, 5)).astype(dtype)
    y = rng.integers(0, 3, 7) if loss != "mse" else rng.standard_normal((7, 3))
    expected_loss = net.backward(X, y)
    expected = net.grads.copy()
    net.grads[...] = np.nan
    X, labels, targets = net._batch(X, y)
    lb = overlap.LayerwiseBackward(net)
    done = []
    got_loss = lb.loss(X, labels, targets)
    lb.backward(X, done.append)
    assert done == [2, 1, 0] and got_loss == expected_loss
    assert np.array_equal(net.grads, expected)


def test_cuda_aware_choice_without_mpi(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.delenv(distributed.CUDA_AWARE_ENV, raising=False)
    assert distributed.cuda_aware_mpi() == (False, "one process, no MPI")
    monkeypatch.setenv(distributed.CUDA_AWARE_ENV, "1")
    assert distributed.cuda_aware_mpi() == (True, "FASTBP_MPI_CUDA_AWARE=1")
    monkeypatch.setenv(distributed.CUDA_AWARE_ENV, "sometimes")
    with pytest.raises(ValueError, match="FASTBP_MPI_CUDA_AWARE: expected 1 or 0, got "
                                         "'sometimes'"):
        distributed.cuda_aware_mpi()


def test_bad_arguments():
    net = fastbp.MLP([5, 17, 3], activation="tanh", dtype="float64", seed=0)
    with pytest.raises(TypeError, match="optimizer: expected a fastbp optimizer"):
        distributed.DistributedOptimizer("adam")
    opt = distributed.DistributedOptimizer(fastbp.SGD(net))
    with pytest.raises(TypeError, match="already a DistributedOptimizer"):
        distributed.DistributedOptimizer(opt)
    for bad in (-1, 1.5, True, "4M"):
        with pytest.raises(ValueError, match="bucket_bytes: expected None or a whole "
                                             "number of bytes"):
            distributed.DistributedOptimizer(fastbp.SGD(net), bucket_bytes=bad)
    with pytest.raises(ValueError, match="cuda_aware: expected None, True or False"):
        distributed.DistributedOptimizer(fastbp.SGD(net), cuda_aware="yes")
    with pytest.raises(TypeError, match="comm: expected an mpi4py communicator"):
        distributed.DistributedOptimizer(fastbp.SGD(net), comm=object())
    with pytest.raises(ValueError, match=r"root: expected a rank in \[0, 1\), got 1"):
        distributed.broadcast_parameters(net, root=1)
    with pytest.raises(ValueError, match="y: expected 3 rows"):
        distributed.shard(np.ones((3, 5)), np.ones(4))
    with pytest.raises(ValueError, match="batch_size"):
        distributed.local_batch_size(0)
