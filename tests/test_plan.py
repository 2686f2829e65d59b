"""fastbp.plan: a network's passes for one batch size, their arguments gathered once and
gathered anew when a buffer they hold is replaced."""
import gc
import weakref

import numpy as np
import pytest

import fastbp
from fastbp import plan as fplan
from fastbp.plan import plan_for


def _net(**kw):
    return fastbp.MLP([5, 4, 3], activation="tanh", dtype="float64", seed=0, **kw)


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5)), rng.integers(0, 3, n)


def test_a_batch_size_keeps_its_plan_between_calls():
    net = _net()
    X, y = _batch(6)
    opt = fastbp.SGD(net, lr=0.1)
    net.train_step(X, y, opt)
    plan = net._plans[6]
    net.train_step(X, y, opt)
    net.forward(X)
    net.compute_loss(X, y)
    assert net._plans[6] is plan and plan.current()


def test_a_plan_asks_for_the_training_passes_once_per_optimizer_code():
    """The plan keeps the network's training passes per optimizer code; the steps and
    epochs it runs use them. (One optimizer: a second code would compile its passes
    for this test alone.)"""
    net = _net()
    X, y = _batch(6)
    asked = []
    chosen = net._training_kernels

    def training_kernels(code):
        asked.append(code)
        return chosen(code)
    net._training_kernels = training_kernels
    opt = fastbp.SGD(net, lr=0.1)
    net.train_step(X, y, opt)   # the first calls compile (fastbp.warmup asks too)
    net.train_epoch(X, y, opt, batch_size=6)
    asked.clear()
    X, y = X[:4], y[:4]   # a new batch size: a new plan
    for _ in range(3):
        net.train_step(X, y, opt)
        net.train_epoch(X, y, opt, batch_size=4)
    assert asked == [opt.code]
    assert net._plans[4].training_passes(opt.code) is chosen(opt.code)


def test_replaced_parameters_or_a_grown_workspace_make_a_new_plan():
    net = _net()
    small = plan_for(net, 2)
    assert plan_for(net, 2) is small
    net.params = net.params.copy()   # assigning new buffers (tests/test_ready_batch.py)
    assert not small.current()
    fresh = plan_for(net, 2)
    assert fresh is not small and fresh.params is net.params
    # a larger batch grows the shared workspace: the smaller batch's plan is dropped,
    # so the old buffers are freed, and rebuilt on the new ones when asked for
    old_acts = weakref.ref(fresh.acts)
    plan_for(net, 50)
    assert not fresh.current() and 2 not in net._plans
    del fresh, small
    gc.collect()
    assert old_acts() is None
    assert plan_for(net, 2).acts is net._workspace.acts


def test_a_network_keeps_the_plans_of_a_few_batch_sizes():
    net = _net()
    for n in range(1, 3 * fplan.MAX_PLANS):
        net.forward(_batch(n)[0])
        assert len(net._plans) <= fplan.MAX_PLANS
    assert (3 * fplan.MAX_PLANS - 1) in net._plans   # the last one asked for is kept


def test_the_argument_lists_are_the_kernels_order():
    """The passes called through a plan agree with the float64 reference (a list out
    of order would raise in numba's typing or compute something else)."""
    from fastbp.kernels import reference
    net = _net()
    X, y = _batch(7)
    plan = plan_for(net, 7)
    Ws = [layer.W.copy() for layer in net.layers]
    bs = [layer.b.copy() for layer in net.layers]
    codes = net.layout.act_codes
    out = net._kernels.network_forward(*plan.forward_args(X))
    np.testing.assert_allclose(out, reference.network_forward(Ws, bs, codes, X)[-1][1],
                               rtol=1e-12)
    loss, dWs, dbs = reference.network_backward(Ws, bs, codes, net._loss_code, X, y)
    got = net._kernels.network_backward(*plan.backward_args(X, y, net._no_targets))
    assert got == pytest.approx(loss, rel=1e-12)
    for layer, dW, db in zip(net.layers, dWs, dbs):
        np.testing.assert_allclose(layer.dW, dW, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(layer.db, db, rtol=1e-10, atol=1e-14)


def test_warmup_compiles_on_buffers_of_its_own():
    net = _net()
    fastbp.warmup(net, fastbp.SGD(net, lr=0.1), passes=("train_step", "forward"))
    assert net._workspace.rows == 0 and not net._plans
