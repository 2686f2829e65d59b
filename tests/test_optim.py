"""Optimizers and learning-rate schedules.

Each optimizer is checked over several steps against a numpy float64 implementation of
PyTorch's documented algorithm (written out below, independently of the kernels), then
against torch.optim itself when PyTorch is installed, with identical gradients.
"""
import math

import numpy as np
import pytest

import fastbp
from fastbp.kernels import codes
from fastbp.kernels import cpu as cpu_kernels
from fastbp.optim import optimizer_from_state_dict

N_STEPS = 6


# -- numpy references of torch.optim's documented algorithms ---------------------------
def clip(g, max_norm):
    """torch.nn.utils.clip_grad_norm_: g * min(1, max_norm / (norm + 1e-6))."""
    if max_norm is None:
        return g
    norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    return g * min(1.0, max_norm / (norm + 1e-6))


def ref_sgd(p, grads, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0,
            nesterov=False, max_grad_norm=None):
    p = p.astype(np.float64).copy()
    buf = None
    for g in grads:
        g = clip(g, max_grad_norm) + weight_decay * p
        if momentum != 0:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def ref_adam(p, grads, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
             amsgrad=False, max_grad_norm=None, decoupled=False):
    b1, b2 = betas
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = clip(g, max_grad_norm)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        if amsgrad:
            vmax = np.maximum(vmax, v)
            v_hat = vmax / (1 - b2 ** t)
        else:
            v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_adamw(p, grads, weight_decay=0.01, **kw):
    return ref_adam(p, grads, weight_decay=weight_decay, decoupled=True, **kw)


def ref_rmsprop(p, grads, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False, max_grad_norm=None):
    p = p.astype(np.float64).copy()
    s = np.zeros_like(p)
    a = np.zeros_like(p)
    b = np.zeros_like(p)
    for g in grads:
        g = clip(g, max_grad_norm) + weight_decay * p
        s = alpha * s + (1 - alpha) * g * g
        if centered:
            a = alpha * a + (1 - alpha) * g
            d = np.sqrt(s - a * a) + eps
        else:
            d = np.sqrt(s) + eps
        if momentum > 0:
            b = momentum * b + g / d
            p = p - lr * b
        else:
            p = p - lr * g / d
    return p


CASES = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, weight_decay=0.05)),
    ("sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd", dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("sgd", dict(lr=0.1, momentum=0.9, max_grad_norm=0.5)),
    ("adam", dict()),
    ("adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("adam", dict(lr=0.01, amsgrad=True)),
    ("adam", dict(lr=0.01, max_grad_norm=0.3)),
    ("adamw", dict()),
    ("adamw", dict(lr=0.01, weight_decay=0.1, amsgrad=True, max_grad_norm=1.0)),
    ("rmsprop", dict()),
    ("rmsprop", dict(lr=0.005, alpha=0.9, weight_decay=0.1)),
    ("rmsprop", dict(lr=0.005, centered=True)),
    ("rmsprop", dict(lr=0.005, momentum=0.7)),
    ("rmsprop", dict(lr=0.005, centered=True, momentum=0.5, weight_decay=0.01,
                     max_grad_norm=0.5)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}"
       for name, kw in CASES]
REFS = {"sgd": ref_sgd, "adam": ref_adam, "adamw": ref_adamw, "rmsprop": ref_rmsprop}


def _run(name, kw, dtype, n_steps=N_STEPS, seed=0):
    """(initial params, gradients, fastbp's params after the steps, optimizer)."""
    net = fastbp.MLP([7, 5, 3], dtype=dtype, seed=seed)
    p0 = net.params.copy()
    rng = np.random.default_rng(seed + 1)
    grads = [rng.standard_normal(net.n_params).astype(dtype) for _ in range(n_steps)]
    opt = fastbp.make_optimizer(name, net, **kw)
    for g in grads:
        net.grads[...] = g
        opt.step()
        np.testing.assert_array_equal(net.grads, g)   # clipping never writes grads
    return p0, grads, net.params.copy(), opt


@pytest.mark.parametrize("name, kw", CASES, ids=IDS)
def test_update_matches_numpy_formula_float64(name, kw):
    p0, grads, got, opt = _run(name, kw, "float64")
    want = REFS[name](p0, grads, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert opt.steps == N_STEPS
    assert not np.allclose(got, p0)


@pytest.mark.parametrize("name, kw", CASES[::3], ids=IDS[::3])
def test_update_matches_numpy_formula_float32(name, kw):
    p0, grads, got, _ = _run(name, kw, "float32")
    want = REFS[name](p0, [g.astype(np.float64) for g in grads], **kw)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name, kw", CASES, ids=IDS)
def test_update_matches_torch_optim(name, kw):
    torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle; "
                                                "pip install torch==2.13.0 to compare")
    kw = dict(kw)
    max_norm = kw.pop("max_grad_norm", None)
    torch_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
                 "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}[name]
    if name == "sgd":
        kw.setdefault("lr", 0.01)   # fastbp's default; torch's is 0.001
    p0, grads, got, _ = _run(name, dict(kw, max_grad_norm=max_norm), "float64")
    p = torch.tensor(p0, requires_grad=True)
    topt = torch_cls([p], **kw)
    for g in grads:
        p.grad = torch.tensor(g)
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_([p], max_norm)
        topt.step()
    np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_defaults_are_torch_defaults():
    torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle")
    net = fastbp.MLP([3, 2], seed=0)
    p = [torch.zeros(1, requires_grad=True)]
    for ours, theirs in [(fastbp.Adam(net), torch.optim.Adam(p)),
                         (fastbp.AdamW(net), torch.optim.AdamW(p)),
                         (fastbp.RMSprop(net), torch.optim.RMSprop(p))]:
        d = theirs.defaults
        assert ours.lr == d["lr"] and ours.eps == d["eps"]
        assert ours.weight_decay == d["weight_decay"]
        if hasattr(ours, "betas"):
            assert ours.betas == tuple(d["betas"]) and ours.amsgrad == d["amsgrad"]
        else:
            assert (ours.alpha, ours.momentum, ours.centered) == (
                d["alpha"], d["momentum"], d["centered"])
    sgd = fastbp.SGD(net)
    assert (sgd.momentum, sgd.dampening, sgd.weight_decay, sgd.nesterov) == (0, 0, 0, False)


def test_state_rows_follow_settings():
    net = fastbp.MLP([4, 3], seed=0)
    n = net.n_params
    assert fastbp.SGD(net).state.shape == (0, n)
    assert fastbp.SGD(net, momentum=0.9).state.shape == (1, n)
    assert fastbp.Adam(net).state.shape == (2, n)
    assert fastbp.AdamW(net, amsgrad=True).state.shape == (3, n)
    assert fastbp.RMSprop(net).state.shape == (1, n)
    assert fastbp.RMSprop(net, centered=True, momentum=0.5).state.shape == (3, n)
    assert fastbp.RMSprop(net).state.dtype == net.dtype
    for cls in (fastbp.SGD, fastbp.Adam, fastbp.AdamW, fastbp.RMSprop):
        opt = cls(net)
        assert opt.hparams.shape == (codes.N_HPARAMS[opt.code],)
        assert opt.hparams.dtype == np.float64


def test_grad_norm_and_clip_scale():
    rng = np.random.default_rng(3)
    g = rng.standard_normal(1001).astype(np.float32)
    norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    assert math.isclose(cpu_kernels.optim.grad_norm(g), norm, rel_tol=1e-12)
    assert cpu_kernels.optim.clip_scale(g, 0.0) == 1.0          # off
    assert cpu_kernels.optim.clip_scale(g, 10 * norm) == 1.0    # below the limit
    assert math.isclose(cpu_kernels.optim.clip_scale(g, norm / 4),
                        (norm / 4) / (norm + 1e-6), rel_tol=1e-12)


def test_clipping_bounds_the_step():
    """With SGD, clipping makes the step exactly lr * max_norm * g / (|g| + 1e-6)."""
    net = fastbp.MLP([6, 4], dtype="float64", seed=0)
    p0 = net.params.copy()
    net.grads[...] = 100.0
    fastbp.SGD(net, lr=1.0, max_grad_norm=2.0).step()
    step = np.linalg.norm(p0 - net.params)
    assert math.isclose(step, 2.0 * 100 * math.sqrt(net.n_params)
                        / (100 * math.sqrt(net.n_params) + 1e-6), rel_tol=1e-12)


@pytest.mark.parametrize("name, kw", [CASES[4], CASES[8], CASES[11], CASES[16]],
                         ids=[IDS[4], IDS[8], IDS[11], IDS[16]])
def test_compiled_train_step_runs_the_same_update(name, kw):
    """net.train_step (one compiled call) == backward, then optimizer.step()."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((16, 6))
    y = rng.integers(0, 3, 16)
    a = fastbp.MLP([6, 5, 3], activation="tanh", dtype="float64", seed=2)
    b = fastbp.MLP([6, 5, 3], activation="tanh", dtype="float64", seed=2)
    opt_a = fastbp.make_optimizer(name, a, **kw)
    opt_b = fastbp.make_optimizer(name, b, **kw)
    for _ in range(3):
        loss_a = a.train_step(X, y, opt_a)
        loss_b = b.backward(X, y)
        opt_b.step()
        assert loss_a == pytest.approx(loss_b, rel=1e-12)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(opt_a.state, opt_b.state, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name, kw", [CASES[3], CASES[9], CASES[11], CASES[16]],
                         ids=[IDS[3], IDS[9], IDS[11], IDS[16]])
def test_state_dict_round_trip_continues_identically(name, kw):
    p0, grads, _, opt = _run(name, kw, "float64", n_steps=3)
    d = opt.state_dict()
    assert set(d) == {"code", "name", "hparams", "state", "steps"}
    assert d["name"] == name and d["steps"] == 3
    assert isinstance(d["state"], np.ndarray) and d["state"] is not opt.state
    twin = fastbp.MLP([7, 5, 3], dtype="float64", seed=0)
    twin.params[...] = opt.net.params
    copy = optimizer_from_state_dict(twin, d)
    assert type(copy) is type(opt) and copy.steps == 3
    rng = np.random.default_rng(9)
    for _ in range(2):
        g = rng.standard_normal(twin.n_params)
        opt.net.grads[...] = g
        twin.grads[...] = g
        opt.step()
        copy.step()
    np.testing.assert_array_equal(twin.params, opt.net.params)
    np.testing.assert_array_equal(copy.state, opt.state)


def test_load_state_dict_checks_kind_and_shapes():
    net = fastbp.MLP([4, 3], seed=0)
    adam = fastbp.Adam(net)
    with pytest.raises(ValueError, match="sgd optimizer"):
        fastbp.SGD(net).load_state_dict(adam.state_dict())
    bad = adam.state_dict()
    bad["state"] = bad["state"][:1]
    with pytest.raises(ValueError, match="state"):
        adam.load_state_dict(bad)


@pytest.mark.parametrize("make, match", [
    (lambda n: fastbp.SGD(n, lr=0), "lr"),
    (lambda n: fastbp.SGD(n, lr=0.1, momentum=-1), "momentum"),
    (lambda n: fastbp.SGD(n, lr=0.1, nesterov=True), "nesterov"),
    (lambda n: fastbp.SGD(n, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda n: fastbp.SGD(n, max_grad_norm=0), "max_grad_norm"),
    (lambda n: fastbp.Adam(n, betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda n: fastbp.Adam(n, eps=-1e-8), "eps"),
    (lambda n: fastbp.AdamW(n, weight_decay=float("nan")), "weight_decay"),
    (lambda n: fastbp.RMSprop(n, alpha=1.5), "alpha"),
    (lambda n: fastbp.make_optimizer("adagrad", n), "optimizer"),
])
def test_bad_hyperparameters_name_the_argument(make, match):
    net = fastbp.MLP([4, 3], seed=0)
    with pytest.raises((ValueError, TypeError), match=match):
        make(net)


def test_optimizer_refuses_another_network():
    a, b = fastbp.MLP([4, 3], seed=0), fastbp.MLP([4, 3], seed=0)
    opt = fastbp.Adam(a)
    with pytest.raises(ValueError, match="different network"):
        b.train_step(np.zeros((2, 4)), [0, 1], opt)


def test_repr_shows_settings():
    net = fastbp.MLP([4, 3], seed=0)
    assert repr(fastbp.SGD(net, lr=0.1, momentum=0.9, nesterov=True)) == \
        "SGD(lr=0.1, momentum=0.9, nesterov=True)"
    assert "max_grad_norm=1.0" in repr(fastbp.AdamW(net, max_grad_norm=1.0))


# -- schedules -----------------------------------------------------------------------
SCHEDULES = [
    ("StepLR", dict(step_size=3, gamma=0.5)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=5)),
]


def _lrs(schedule, n):
    return [schedule.lr] + [schedule.step() for _ in range(n)]


def test_schedules_closed_forms():
    net = fastbp.MLP([4, 3], seed=0)
    e = np.arange(13)
    cases = [
        (fastbp.StepLR(fastbp.SGD(net, lr=0.2), step_size=4, gamma=0.5),
         0.2 * 0.5 ** (e // 4)),
        (fastbp.ExponentialLR(fastbp.SGD(net, lr=0.2), gamma=0.8), 0.2 * 0.8 ** e),
        (fastbp.CosineAnnealingLR(fastbp.SGD(net, lr=0.2), T_max=6, eta_min=0.01),
         0.01 + 0.19 * (1 + np.cos(np.pi * e / 6)) / 2),
        (fastbp.InverseScaling(fastbp.SGD(net, lr=0.2), power_t=0.25),
         0.2 / (e + 1) ** 0.25),
    ]
    for schedule, want in cases:
        got = _lrs(schedule, 12)
        np.testing.assert_allclose(got, want, rtol=1e-14)
        assert schedule.optimizer.lr == got[-1] == schedule.get_last_lr()[0]


def test_cosine_reaches_zero_and_updates_use_the_scheduled_lr():
    net = fastbp.MLP([4, 3], dtype="float64", seed=0)
    opt = fastbp.SGD(net, lr=0.1)
    schedule = fastbp.CosineAnnealingLR(opt, T_max=2)
    schedule.step()
    schedule.step()
    assert opt.lr == pytest.approx(0.0, abs=1e-18)
    p0 = net.params.copy()
    net.grads[...] = 1.0
    opt.step()
    np.testing.assert_allclose(net.params, p0, atol=1e-17)


@pytest.mark.parametrize("name, kw", SCHEDULES, ids=[s[0] + str(i) for i, s in
                                                     enumerate(SCHEDULES)])
def test_schedules_match_torch(name, kw):
    torch = pytest.importorskip("torch", reason="PyTorch is an optional oracle")
    net = fastbp.MLP([4, 3], seed=0)
    ours = getattr(fastbp, name)(fastbp.SGD(net, lr=0.3), **kw)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    theirs = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    want = [theirs.get_last_lr()[0]]
    for _ in range(20):
        topt.step()
        theirs.step()
        want.append(theirs.get_last_lr()[0])
    np.testing.assert_allclose(_lrs(ours, 20), want, rtol=1e-9, atol=1e-15)


def test_inverse_scaling_matches_sklearn_formula():
    """scikit-learn's invscaling: learning_rate_init / (t + 1) ** power_t."""
    pytest.importorskip("sklearn", reason="scikit-learn is an optional oracle")
    from sklearn.neural_network._stochastic_optimizers import SGDOptimizer
    net = fastbp.MLP([4, 3], seed=0)
    ours = fastbp.InverseScaling(fastbp.SGD(net, lr=0.3), power_t=0.5)
    theirs = SGDOptimizer([np.zeros(1)], learning_rate_init=0.3, lr_schedule="invscaling",
                          power_t=0.5)
    for t in range(1, 8):
        theirs.iteration_ends(t)
        assert ours.step() == pytest.approx(theirs.learning_rate, rel=1e-14)


def test_schedule_state_dict_round_trip():
    net = fastbp.MLP([4, 3], seed=0)
    a = fastbp.StepLR(fastbp.Adam(net, lr=0.1), step_size=2)
    for _ in range(3):
        a.step()
    opt = fastbp.Adam(net, lr=0.1)
    b = fastbp.StepLR(opt, step_size=2)
    b.load_state_dict(a.state_dict())
    assert b.last_epoch == 3 and opt.lr == pytest.approx(0.01)
    assert b.step() == a.step()


def test_schedule_arguments_are_checked():
    net = fastbp.MLP([4, 3], seed=0)
    opt = fastbp.SGD(net)
    with pytest.raises(ValueError, match="step_size"):
        fastbp.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="gamma"):
        fastbp.ExponentialLR(opt, gamma=-1.0)
    with pytest.raises(ValueError, match="eta_min"):
        fastbp.CosineAnnealingLR(opt, T_max=3, eta_min=-1.0)
    with pytest.raises(TypeError, match="optimizer"):
        fastbp.StepLR(object(), step_size=2)
