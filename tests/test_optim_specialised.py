"""An optimizer's update compiled alone (its code a compile-time constant) against the
update compiled for every optimizer: the same formulas, equal to a few roundings of the
arrays' largest entries (LLVM may fuse a multiply-add the other way round when the code
is a constant: kernels/cpu/network.py, SPECIALISED_OPTIMIZERS).

kernels/cpu/optim.py's update_range keeps only the branches of a literal optimizer code
(what a network's specialised training passes pass it, kernels/cpu/network.py
``training_passes``); a run-time code keeps them all. Each case compiles update_range
once for its code (about a second); test_warmup_split.py trains through specialised
passes end to end.
"""
import functools

import numpy as np
import pytest
from numba import njit

import fastbp
from fastbp.kernels import codes
from fastbp.kernels.cpu import network
from fastbp.kernels.cpu.optim import update_range


@functools.lru_cache(maxsize=None)
def _update_alone(code):
    """update_range called with ``code`` as a constant: compiled for it alone."""
    @njit
    def run(params, grads, state, hparams, step, scale, i0, i1, n_rows, row_stride):
        return update_range(code, params, grads, state, hparams, step, scale, i0, i1,
                            n_rows, row_stride)
    return run


CASES = {
    "sgd": lambda net: fastbp.SGD(net, lr=0.1, weight_decay=0.01),
    "sgd_nesterov": lambda net: fastbp.SGD(net, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda net: fastbp.Adam(net, lr=0.01, weight_decay=0.02),
    "adam_amsgrad": lambda net: fastbp.Adam(net, lr=0.01, amsgrad=True),
    "adamw": lambda net: fastbp.AdamW(net, lr=0.01),
    "rmsprop_centered": lambda net: fastbp.RMSprop(net, lr=0.01, momentum=0.5,
                                                   centered=True),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_an_update_compiled_alone_matches_the_general_update(case, dtype):
    rng = np.random.default_rng(7)
    net = fastbp.MLP([9, 6], dtype=dtype, seed=0)
    opt = CASES[case](net)
    code, _, _, state, hparams, step = opt.compiled_args_for(net)
    n = net.params.shape[0]
    params = rng.standard_normal(n).astype(dtype)
    grads = rng.standard_normal(n).astype(dtype)
    state = (np.abs(rng.standard_normal(state.shape)) + 0.5).astype(dtype)
    if code == codes.RMSPROP:   # centered: square_avg (row 0) above grad_avg (row 1)^2
        state[0] = state[1] ** 2 + 1.0
    step = np.int64(3)
    # a column block of a (6, 9) W: 6 rows of elements 2..7, 9 apart, then the rest
    ranges = [(np.int64(2), np.int64(7), np.int64(6), np.int64(9)),
              (np.int64(0), np.int64(n), np.int64(1), np.int64(0))]
    results = []
    for run in (update_range, _update_alone(int(code))):
        p, s = params.copy(), state.copy()
        bad = [run(np.int64(code), p, grads, s, hparams, step, 0.7, *r)
               if run is update_range else run(p, grads, s, hparams, step, 0.7, *r)
               for r in ranges]
        results.append((p, s, bad))
    (p0, s0, bad0), (p1, s1, bad1) = results
    assert not np.array_equal(p0, params)   # the update ran
    print(case, np.sum(p1 != p0), np.sum(s1 != s0))
    # a rounding of the terms: an element that cancels to near zero (p - lr * g) moves
    # by many of its own ulps, so the bound is the arrays' scale, not each element's
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(p1, p0, rtol=0, atol=4 * eps * np.abs(p0).max())
    np.testing.assert_allclose(s1, s0, rtol=0, atol=4 * eps * np.abs(s0).max(initial=1.0))
    assert bad1 == bad0 == [0, 0]


def test_training_passes_specialise_the_first_optimizer_of_a_set(monkeypatch):
    """The first optimizer code a process trains a set with gets passes of its own; the
    next share the set's passes for any optimizer; ALL's are always those."""
    monkeypatch.setattr(network, "_specialised_optimizers", {})
    network.training_passes.cache_clear()
    try:
        relu_set = network.activation_set([codes.ACTIVATION_CODES["relu"],
                                           codes.ACTIVATION_CODES["identity"]])
        first = network.training_passes(relu_set, codes.ADAM)
        assert first is network.passes(relu_set, codes.ADAM)
        assert first.optimizer == codes.ADAM
        assert network.training_passes(relu_set, codes.ADAM) is first
        assert network.training_passes(relu_set, codes.SGD) is network.passes(relu_set)
        assert network.training_passes(relu_set, 99) is network.passes(relu_set)
        assert network.training_passes(network.ALL, codes.SGD) is network.passes(network.ALL)
        assert network.passes(network.ALL).optimizer is None
    finally:
        network.training_passes.cache_clear()


@pytest.mark.parametrize("optimizer", [-1, 4, len(codes.OPTIMIZERS)])
def test_passes_refuse_an_unknown_optimizer_code(optimizer):
    with pytest.raises(ValueError, match=r"optimizer: expected None or an optimizer code"):
        network.passes(network.ALL, optimizer)
