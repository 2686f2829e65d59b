"""The activation table (kernels/codes.py) and the per-device tables that must follow it.

Adding an activation is one row in codes.ACTIVATION_TABLE plus one function pair in each
of kernels/cpu/activations.py (PAIRS), kernels/cuda/activations.py (FORWARD,
DERIVATIVE) and kernels/reference.py (FORWARD, DERIVATIVE). These checks fail when a
row lacks one of its entries or an entry sits at the wrong code, and check that what
derives from the table (names, choices, initialisation, kept pre-activations) does.
The scalar functions are called one value at a time: no array kernel is compiled here.
"""
import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice
from fastbp.kernels import codes
from fastbp.kernels import reference as ref
from fastbp.kernels.cpu import activations as cpu_act

TABLE = codes.ACTIVATION_TABLE
CODES = range(len(TABLE))
# points on both sides of 0 (away from relu's kink) and in the saturated ranges
POINTS = np.array([-6.0, -1.3, -0.2, 0.35, 1.7, 7.5])
SLOPE = 0.2


def test_rows_are_well_formed_and_names_round_trip():
    names = [row.name for row in TABLE]
    assert len(set(names)) == len(names)
    assert codes.ACTIVATIONS == tuple(names) == fastbp.ACTIVATIONS
    for code, name in enumerate(names):
        assert codes.ACTIVATION_CODES[name] == code
        assert codes.ACTIVATIONS[codes.ACTIVATION_CODES[name]] == name
    for row in TABLE:
        assert row.derivative_from in ("output", "input")
        assert row.init in ("he", "glorot")
        assert isinstance(row.cheap, bool)
    # the derived sets are exactly the table's rows
    assert codes.DERIVATIVE_FROM_OUTPUT == {c for c in CODES
                                            if TABLE[c].derivative_from == "output"}
    assert codes.HE_INIT == {c for c in CODES if TABLE[c].init == "he"}
    assert codes.CHEAP == {c for c in CODES if TABLE[c].cheap}
    for name in names:   # the named constants agree with the table
        assert getattr(codes, name.upper()) == codes.ACTIVATION_CODES[name]


def test_every_code_has_an_entry_on_every_device_and_in_the_reference():
    cuda_act = pytest.importorskip("fastbp.kernels.cuda.activations")
    tables = {"cpu PAIRS": cpu_act.PAIRS, "cuda FORWARD": cuda_act.FORWARD,
              "cuda DERIVATIVE": cuda_act.DERIVATIVE, "reference FORWARD": ref.FORWARD,
              "reference DERIVATIVE": ref.DERIVATIVE}
    for where, table in tables.items():
        assert len(table) == len(TABLE), where
    assert len({pair for pair in cpu_act.PAIRS}) == len(TABLE)
    assert len(set(cuda_act.FORWARD)) == len(set(cuda_act.DERIVATIVE)) == len(TABLE)
    with pytest.raises(ValueError, match="unknown activation code"):
        ref.activation_forward(POINTS, len(TABLE))
    with pytest.raises(ValueError, match="unknown activation code"):
        ref.activation_derivative(POINTS, -1)


def _check_pair(code, forward, derivative, rtol):
    """forward(s) and derivative(a, s) against the reference at POINTS; for the rows
    whose derivative comes from the output, also with s replaced by a (what backward
    passes when S was not kept), which checks the row's derivative_from."""
    name = TABLE[code].name
    want_a = ref.activation_forward(POINTS, code, SLOPE)
    want_d = ref.activation_derivative(POINTS, code, SLOPE)
    got_a = np.array([forward(s, SLOPE) for s in POINTS])
    np.testing.assert_allclose(got_a, want_a, rtol=rtol, atol=1e-12, err_msg=name)
    got_d = np.array([derivative(a, s, SLOPE) for a, s in zip(want_a, POINTS)])
    np.testing.assert_allclose(got_d, want_d, rtol=rtol, atol=1e-12, err_msg=name)
    if code in codes.DERIVATIVE_FROM_OUTPUT:
        from_a = np.array([derivative(a, a, SLOPE) for a in want_a])
        np.testing.assert_allclose(from_a, want_d, rtol=rtol, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("code", CODES, ids=codes.ACTIVATIONS)
def test_cpu_pair_is_the_rows_function(code):
    f, df = cpu_act.PAIRS[code]
    _check_pair(code, f, df, rtol=1e-12)


@pytest.mark.skipif(not fdevice.simulator_enabled(),
                    reason="device functions are callable from Python in the simulator only")
@pytest.mark.parametrize("code", CODES, ids=codes.ACTIVATIONS)
def test_cuda_pair_and_dispatch_are_the_rows_function(code):
    cuda_act = pytest.importorskip("fastbp.kernels.cuda.activations")
    _check_pair(code, cuda_act.FORWARD[code], cuda_act.DERIVATIVE[code], rtol=1e-12)
    # the dispatching functions the kernels call reach the same entry
    _check_pair(code, lambda s, slope: cuda_act.activate(s, code, slope),
                lambda a, s, slope: cuda_act.activation_derivative(a, s, code, slope),
                rtol=1e-12)


def test_what_derives_from_the_table():
    from fastbp.cli import build_parser
    for name in codes.ACTIVATIONS:
        assert build_parser().parse_args(["train", "--activation", name]).activation == name
    estimators = pytest.importorskip("fastbp.estimators")
    accepted = estimators.BaseMultilayerPerceptron._parameter_constraints["activation"][0]
    for name in codes.ACTIVATIONS + ("logistic",):
        assert accepted.is_satisfied_by(name)


@pytest.mark.parametrize("code", CODES, ids=codes.ACTIVATIONS)
def test_initialisation_follows_the_row(code):
    """He uniform (limit sqrt(6 / fan_in)) or Glorot uniform (sqrt(6 / (fan_in +
    fan_out))) as the row says: 2500 draws reach within 1 % of the limit."""
    net = fastbp.MLP([50, 50, 2], activation=TABLE[code].name, seed=0)
    W = net.layers[0].W
    limit = np.sqrt(6.0 / 50) if code in codes.HE_INIT else np.sqrt(6.0 / 100)
    assert 0.99 * limit < np.abs(W).max() <= limit
    # the pre-activation S is kept exactly for the rows whose derivative needs it
    assert (net.layout.pre_cum[0] >= 0) == (TABLE[code].derivative_from == "input")
