"""fastbp.warmup compiling a cold training step in two processes (split_backward).

The end-to-end test compiles a network in a fresh numba cache in a subprocess (about
20 s of CPU on each of two cores): the only way to see that the helper process compiles
the backward's kernels for exactly the argument types the training step calls them
with, so that the training step loads them instead of compiling them again.
"""
import importlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit, typeof

import fastbp

fwarmup = importlib.import_module("fastbp.warmup")


@pytest.mark.parametrize("value, expected", [("1", 1), ("2", 2), (" 2 ", 2)])
def test_compile_processes_reads_the_variable(monkeypatch, value, expected):
    monkeypatch.setenv(fwarmup.PROCESSES_ENV, value)
    assert fwarmup.compile_processes() == expected


@pytest.mark.parametrize("value", ["0", "3", "two", ""])
def test_compile_processes_refuses_other_values(monkeypatch, value):
    monkeypatch.setenv(fwarmup.PROCESSES_ENV, value)
    with pytest.raises(ValueError, match="FASTBP_COMPILE_PROCESSES: expected 1 or 2"):
        fwarmup.compile_processes()


@pytest.mark.parametrize("cores, expected", [({0}, 1), ({0, 1}, 2), ({0, 1, 2, 3}, 2)])
def test_compile_processes_follows_the_usable_cores(monkeypatch, cores, expected):
    monkeypatch.delenv(fwarmup.PROCESSES_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: cores, raising=False)
    assert fwarmup.compile_processes() == expected


def test_warmup_refuses_a_bad_process_count():
    net = fastbp.MLP([4, 3, 2], seed=0)
    with pytest.raises(ValueError, match="processes: expected None, 1 or 2, got 3"):
        fwarmup.warmup(net, fastbp.SGD(net), ("train_step",), processes=3)


def test_in_disk_cache_sees_numba_s_index(tmp_path, monkeypatch):
    """False before a cached function is compiled, True after (numba wrote its index);
    None for a function numba does not cache."""
    (tmp_path / "cached_mod.py").write_text(textwrap.dedent("""
        from numba import njit

        @njit(cache=True)
        def twice(x):
            return 2.0 * x
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("cached_mod")
    signature = (typeof(1.5),)
    assert fwarmup.in_disk_cache(mod.twice, signature) is False
    mod.twice.compile(signature)
    assert fwarmup.in_disk_cache(mod.twice, signature) is True
    assert fwarmup.in_disk_cache(mod.twice, (typeof(np.zeros(2)),)) is False
    assert fwarmup.in_disk_cache(njit(lambda x: x), signature) is None


def test_a_failed_helper_is_reported_and_its_work_left_to_this_process(tmp_path):
    """The helper's failure does not stop warmup (which compiles what is missing
    itself) but is said, with its exit status and its last line of errors."""
    helper = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('first'); sys.exit('helper broke')"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "err").open("w+b"))
    helper.errors = open(tmp_path / "err", "rb")
    with pytest.warns(RuntimeWarning, match=r"exit status 1 \(helper broke\); this "
                                            r"process compiles them instead"):
        assert fwarmup._join(helper) is None
    assert helper.errors.closed


SCRIPT = r"""
import io, json, sys
import numpy as np
from numba.core import event
import fastbp
import importlib
fwarmup = importlib.import_module("fastbp.warmup")

compiled = []
class Listener(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__name__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Listener())

rng = np.random.default_rng(3)
net = fastbp.MLP([5, 7, 3], activation="identity", loss="mse", dtype="float64", seed=1)
opt = fastbp.SGD(net, lr=0.1)
stream = io.StringIO()
fwarmup.warmup(net, opt, ("train_step",), stream=stream)
W = [layer.W.copy() for layer in net.layers]
b = [layer.b.copy() for layer in net.layers]
X, T = rng.standard_normal((6, 5)), rng.standard_normal((6, 3))
loss = net.train_step(X, T, opt)
# these passes were compiled for SGD alone: any other code is refused before anything runs
passes = net._training_kernels(opt.code)
code, params, grads, state, hparams, step = opt.compiled_args_for(net)
acts, pres, dbuf = net._workspace.ensure(X.shape[0])
before = params.copy()
try:
    passes.network_train_step(params, grads, *net.layout.compiled_args(), net._loss_code,
                              X, np.zeros(0, np.int64), T, acts, pres, dbuf, 1, state,
                              hparams, step)
    refused = ""
except ValueError as exc:
    refused = str(exc)
refused_untouched = bool(np.array_equal(before, params))
json.dump({"notice": stream.getvalue(), "compiled": compiled, "loss": loss,
           "optimizer": passes.optimizer, "refused": refused,
           "refused_untouched": refused_untouched,
           "W": [w.tolist() for w in W], "b": [v.tolist() for v in b],
           "X": X.tolist(), "T": T.tolist(),
           "W_after": [layer.W.tolist() for layer in net.layers],
           "b_after": [layer.b.tolist() for layer in net.layers]}, sys.stdout)
"""

# the kernels of a layer's backward with its fused update (kernels/cpu/linear.py,
# backward_update.py, optim.py): compiled by the helper, loaded by the training step
BACKWARD_KERNELS = {"_weight_grad_cols", "_weight_grad_col_blocks", "input_grad_col_blocks",
                    "_input_grad_update_col_blocks", "update_range", "update_blocks"}


def test_a_cold_training_step_compiles_its_backward_in_a_second_process(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               FASTBP_COMPILE_PROCESSES="2",
               FASTBP_SPECIALISED_SETS="2")   # the network's own passes, as by default
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    assert "RuntimeWarning" not in run.stderr, run.stderr   # the helper did its work
    out = json.loads(run.stdout)
    assert "in two processes" in out["notice"]
    assert out["optimizer"] == 0   # the training passes were compiled for SGD alone
    assert out["refused"].startswith("opt_code: these training passes are compiled for "
                                     "another optimizer alone")
    assert out["refused_untouched"]
    compiled = set(out["compiled"])
    assert "_backprop_layers" in compiled   # the listener sees this process compile
    assert not compiled & BACKWARD_KERNELS, "the helper's kernels were compiled again"
    # and the loaded kernels compute the step: float64 backprop by hand, then SGD
    from fastbp.kernels import codes, reference
    W, b = [np.array(w) for w in out["W"]], [np.array(v) for v in out["b"]]
    X, T = np.array(out["X"]), np.array(out["T"])
    identity = [codes.ACTIVATION_CODES["identity"]] * 2
    loss, dWs, dbs = reference.network_backward(W, b, identity, codes.MSE,
                                                X, T)
    assert out["loss"] == pytest.approx(loss, rel=1e-12)
    for l in range(2):
        np.testing.assert_allclose(out["W_after"][l], W[l] - 0.1 * dWs[l], rtol=1e-12)
        np.testing.assert_allclose(out["b_after"][l], b[l] - 0.1 * dbs[l], rtol=1e-12)
