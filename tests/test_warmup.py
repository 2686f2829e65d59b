"""fastbp.warmup: compiling a network's passes before first use, announced once.

Uses the float32 relu network the command-line tests compile anyway.
"""
import importlib
import io

import numpy as np
import pytest
from numba import njit

import fastbp

# the module, not fastbp.warmup (the package exports the function by that name)
fwarmup = importlib.import_module("fastbp.warmup")


def _net():
    return fastbp.MLP([64, 16, 10], activation="relu", seed=0)


def test_after_warmup_the_passes_compile_nothing_more():
    """warmup compiles for exactly the argument types the real calls use."""
    net = _net()
    opt = fastbp.Adam(net)
    fwarmup.warmup(net, opt, ("train_step", "loss", "forward"))
    passes = net._kernels
    from fastbp.kernels.cpu.checks import batch_values_ok
    dispatchers = (passes.network_train_step, passes.network_loss, passes.network_forward,
                   batch_values_ok)
    before = [len(d.overloads) for d in dispatchers]
    assert before[-1] >= 1   # train_step's check of a ready batch's values, too
    X = np.random.default_rng(0).standard_normal((40, 64))
    y = np.arange(40) % 10
    net.fit(X, y, epochs=1, batch_size=16, optimizer=opt, validation_data=(X, y),
            verbose=False)
    net.train_step(X[:16].astype(np.float32), y[:16].astype(np.int64), opt)   # ready
    net.predict(X)
    assert [len(d.overloads) for d in dispatchers] == before
    stream = io.StringIO()
    fwarmup.warmup(net, opt, stream=stream)   # already compiled: silent
    assert stream.getvalue() == ""


def test_one_line_before_compiling(monkeypatch):
    """The notice comes once, before numba compiles, with the estimate of what is left;
    a tiny stand-in pass keeps the compile short."""
    @njit
    def stand_in(x):
        return x + 1.0

    monkeypatch.setattr(fwarmup, "_pass_call", lambda net, opt, name: (stand_in, (1.0,)))
    for ready in (False, True):
        monkeypatch.setattr(fwarmup, "tree_ready", lambda net: ready)
        stand_in = njit(stand_in.py_func)   # not compiled yet
        stream = io.StringIO()
        fwarmup.warmup(_net(), fastbp.SGD(_net()), ("train_step", "loss"), stream=stream)
        E = fwarmup.ESTIMATE_S
        seconds = E["train_step"] + E["loss"] + E["batch_check"]
        if not ready:   # the first pass compiles the shared passes too
            seconds += fwarmup.COLD_S["train_step"] - E["train_step"]
        expected = fwarmup.MESSAGE.format("float32: train_step, loss, batch_check",
                                          seconds)
        assert stream.getvalue() == expected + "\n"
    assert stand_in.signatures   # it did compile


def test_passes_are_shared_per_activation_set(monkeypatch):
    """Networks with the same activations share their compiled passes; the set is what
    the passes are specialised for, for the first SPECIALISED_SETS sets of a process."""
    from fastbp.kernels.cpu import network
    monkeypatch.setattr(network, "_specialised", [])
    monkeypatch.setattr(network, "SPECIALISED_SETS", 2)
    a = fastbp.MLP([4, 3, 2], activation="relu")
    b = fastbp.MLP([5, 7, 7, 3], activation="relu")
    c = fastbp.MLP([4, 3, 2], activation="tanh")
    assert a._kernels is b._kernels and a._kernels is not c._kernels
    assert a._kernels.act_set == (1 << fastbp.kernels.codes.RELU
                                  | 1 << fastbp.kernels.codes.IDENTITY)
    assert network.network_forward is network.passes(network.ALL).network_forward
    d = fastbp.MLP([4, 3, 2], activation="gelu")   # a third set: the general passes
    assert d._kernels is network.passes(network.ALL)
    assert fastbp.MLP([4, 3, 2], activation="tanh")._kernels is c._kernels


def test_specialised_sets_from_the_environment(monkeypatch):
    """FASTBP_SPECIALISED_SETS sets the count (0: every network gets the general
    passes, as this suite's processes and their subprocesses run); 2 when unset; a
    value that is not a count >= 0 is refused naming the variable."""
    from fastbp.kernels.cpu import network
    for value, expected in (("0", 0), (" 3 ", 3)):
        monkeypatch.setenv(network.SPECIALISED_SETS_ENV, value)
        assert network._specialised_sets() == expected
    monkeypatch.delenv(network.SPECIALISED_SETS_ENV)
    assert network._specialised_sets() == 2
    for value in ("-1", "two", ""):
        monkeypatch.setenv(network.SPECIALISED_SETS_ENV, value)
        with pytest.raises(ValueError, match="FASTBP_SPECIALISED_SETS: expected a count "
                                             "of activation sets"):
            network._specialised_sets()
    # with 0, a network's passes are the general ones from its first set on
    monkeypatch.setattr(network, "_specialised", [])
    monkeypatch.setattr(network, "SPECIALISED_SETS", 0)
    assert fastbp.MLP([4, 3, 2], activation="relu")._kernels is network.passes(network.ALL)


def test_a_sets_passes_give_the_general_passes_results_bit_for_bit(monkeypatch):
    """The per-set passes run the same loops as the passes of every activation: equal
    outputs, gradients and updates, to the bit (float32 relu, as the CLI tests)."""
    from fastbp.kernels.cpu import network
    X = np.random.default_rng(1).standard_normal((40, 64))
    y = np.arange(40) % 10
    results = []
    relu_identity = network.activation_set([3, 0])
    for passes in (network.passes(relu_identity), network.passes(network.ALL)):
        net = _net()
        net._kernels = passes
        # both train with the update of any optimizer (training_passes would give the
        # set's its own: test_optim_specialised.py compares those)
        net._training_kernels = lambda code, passes=passes: passes
        opt = fastbp.Adam(net)
        losses = [net.train_step(X, y, opt) for _ in range(3)]
        results.append((net.forward(X), net.params.copy(), losses))
    (out_a, params_a, loss_a), (out_b, params_b, loss_b) = results
    assert out_a.tobytes() == out_b.tobytes() and params_a.tobytes() == params_b.tobytes()
    assert loss_a == loss_b


def test_warmup_first_thing_in_a_fresh_process():
    """warmup launches numba's pool before it compiles or loads the passes: the kernels
    ask the pool for its thread count through a symbol that exists only once it is
    launched (kernels/cpu/blocks.py). Without that, ``python -m fastbp warmup`` aborted
    the interpreter (LLVM "Symbol not found: allocate_sched") when a pass had to be
    compiled against kernels already in the cache."""
    import subprocess
    import sys
    code = ("import fastbp, fastbp.concurrency as c\n"
            "net = fastbp.MLP([64, 16, 10], activation='relu', seed=0)\n"
            "assert not c._pool_started\n"
            # Adam: the command line's optimizer, whose relu passes the suite's other
            # fresh processes compile too (a set's training passes are per optimizer)
            "fastbp.warmup(net, fastbp.Adam(net))\n"
            "print('pool started' if c._pool_started else 'no pool')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pool started"


def test_tree_ready_once_a_pass_has_run():
    """The estimate's test of whether the shared passes are compiled (or loaded) in this
    process: true once a pass of the network's set and dtype has run, whether it was
    compiled here (the compiled function every pass calls then has a version; it read
    one that is now inlined, and said False for ever) or loaded from the disk cache."""
    net = _net()
    net.forward(np.ones((2, 64), np.float32))
    assert fwarmup.tree_ready(net)
    other = fastbp.MLP([3, 2], activation="tanh", dtype="float64", seed=0)
    tanh_alone = 1 << fastbp.kernels.codes.ACTIVATION_CODES["tanh"]   # no network has it
    other._kernels = fastbp.kernels.cpu.network.passes(tanh_alone)
    assert not fwarmup.tree_ready(other)
