"""Every CPU kernel in fastbp.kernels.cpu agrees with its float64 numpy reference.

What this file proves, for float32 and float64 and for odd shapes (1, 3, 17, 129 in
every position), on random inputs that are never zero:

- activations, fused bias+activation, fused sigma'+bias-gradient, linear forward and
  backward (with and without dX) equal fastbp.kernels.reference, including the aliasing
  their docstrings allow (A is S; S is A for derivatives from the output; dS is dA);
- the three losses and their dispatcher equal the reference, and stay finite and exact
  for huge logits (|z| ~ 1e4);
- the SGD update (alone and through optimizer_update) equals params - lr * grads;
- the whole-network passes (forward, loss, backward, the one-call training step) equal
  the reference's plain numpy backprop, on fixed architectures covering every activation
  and loss and on hypothesis-drawn ones, with workspaces oversized and filled with NaN
  so that reading an unwritten slot cannot go unnoticed;
- the tolerance rule itself rejects errors just above its tolerance.

Tolerances: KERNEL_RTOL in conftest.py, relative to each array's scale.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbp.kernels import codes, reference
from fastbp.kernels import cpu
from fastbp.kernels.cpu.linear import activation_backward_bias, bias_activation

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
ACTIVATIONS = [pytest.param(code, id=name) for code, name in enumerate(codes.ACTIVATIONS)]
LOSSES = [pytest.param(code, id=name) for code, name in enumerate(codes.LOSSES)]

# (batch, n): each odd size appears as rows and as columns.
SHAPES = [pytest.param((b, n), id=f"{b}x{n}")
          for b, n in [(1, 1), (3, 17), (17, 129), (129, 3)]]
# (batch, in, out): each odd size appears in every position.
LINEAR_SHAPES = [(1, 1, 1), (3, 17, 129), (129, 3, 17), (17, 129, 3), (1, 129, 1)]

# Not the default 0.01, so a kernel that ignores its slope argument fails.
SLOPE = 0.2
# Pre-activations of this scale reach the saturated ends of sigmoid, tanh, softplus, gelu.
S_SCALE = 3.0


def _aliasing_cases():
    """(code, aliased): 'aliased' passes A for S where sigma' comes from the output,
    and dA for dS everywhere."""
    for code, name in enumerate(codes.ACTIVATIONS):
        alias = "S is A, dS is dA" if code in codes.DERIVATIVE_FROM_OUTPUT else "dS is dA"
        yield pytest.param(code, False, id=f"{name}-separate")
        yield pytest.param(code, True, id=f"{name}-{alias}")


def _backward_inputs(rng, random_array, shape, dtype, code):
    """(dA, A, S, expected dS) for an elementwise backward pass; A is the reference
    forward of S, so the kernel's sigma' is checked independently of its forward.
    The error yardstick of dS = dA * sigma'(S) is |dA| (sigma' is O(1) and, taken from
    the output, only accurate to rounding of O(1) terms)."""
    S = random_array(rng, shape, dtype, scale=S_SCALE)
    A = reference.activation_forward(S, code, SLOPE).astype(dtype)
    dA = random_array(rng, shape, dtype)
    expected = dA.astype(np.float64) * reference.activation_derivative(S, code, SLOPE)
    return dA, A, S, expected


def _aliased(dA, A, S, code, aliased):
    """(S, dS) arguments of a backward kernel: when ``aliased``, A stands in for S where
    sigma' comes from the output, and dS is dA (in place); else a fresh NaN dS."""
    if not aliased:
        return S, np.full_like(dA, np.nan)
    return (A if code in codes.DERIVATIVE_FROM_OUTPUT else S), dA


# -- elementwise activations -------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("in_place", [False, True], ids=["A separate", "A is S"])
@pytest.mark.parametrize("code", ACTIVATIONS)
def test_activation_forward_matches_reference(code, in_place, shape, dtype, rng,
                                              random_array, assert_close):
    S = random_array(rng, shape, dtype, scale=S_SCALE)
    expected = reference.activation_forward(S, code, SLOPE)
    A = S if in_place else np.full_like(S, np.nan)
    cpu.activation_forward(S, A, code, SLOPE)
    assert_close(A, expected, what="A")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("code, aliased", list(_aliasing_cases()))
def test_activation_backward_matches_reference(code, aliased, shape, dtype, rng,
                                               random_array, assert_close):
    dA, A, S, expected = _backward_inputs(rng, random_array, shape, dtype, code)
    magnitude = np.abs(dA).astype(np.float64)
    S, dS = _aliased(dA, A, S, code, aliased)
    A_before = A.copy()
    cpu.activation_backward(dA, A, S, dS, code, SLOPE)
    assert_close(dS, expected, scale=magnitude, what="dS")
    np.testing.assert_array_equal(A, A_before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("in_place", [False, True], ids=["A separate", "A is S"])
@pytest.mark.parametrize("code", ACTIVATIONS)
def test_bias_activation_matches_reference(code, in_place, shape, dtype, rng,
                                           random_array, assert_close):
    S = random_array(rng, shape, dtype, scale=S_SCALE)
    b = random_array(rng, shape[1], dtype)
    S_expected = S.astype(np.float64) + b
    A_expected = reference.activation_forward(S_expected, code, SLOPE)
    A = S if in_place else np.full_like(S, np.nan)
    bias_activation(S, b, A, code, SLOPE)
    assert_close(A, A_expected, what="A")
    if not in_place:
        assert_close(S, S_expected, what="S + b")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("code, aliased", list(_aliasing_cases()))
def test_activation_backward_bias_matches_reference(code, aliased, shape, dtype, rng,
                                                    random_array, assert_close):
    dA, A, S, expected = _backward_inputs(rng, random_array, shape, dtype, code)
    magnitude = np.abs(dA).astype(np.float64)
    S, dS = _aliased(dA, A, S, code, aliased)
    db = np.full(shape[1], np.nan, dtype)
    activation_backward_bias(dA, A, S, dS, db, code, SLOPE)
    assert_close(dS, expected, scale=magnitude, what="dS")
    assert_close(db, expected.sum(axis=0), scale=magnitude.sum(axis=0), what="db")


# -- linear layers -----------------------------------------------------------------------

def _linear_params(rng, random_array, batch, n_in, n_out, dtype):
    X = random_array(rng, (batch, n_in), dtype)
    W = random_array(rng, (n_out, n_in), dtype, scale=1.0 / np.sqrt(n_in))
    b = random_array(rng, n_out, dtype)
    return X, W, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, n_in, n_out", LINEAR_SHAPES)
@pytest.mark.parametrize("keep_S", [True, False], ids=["S kept", "S is A"])
@pytest.mark.parametrize("code", ACTIVATIONS)
def test_linear_forward_matches_reference(code, keep_S, batch, n_in, n_out, dtype, rng,
                                          random_array, assert_close):
    X, W, b = _linear_params(rng, random_array, batch, n_in, n_out, dtype)
    S_expected, A_expected = reference.linear_forward(X, W, b, code, SLOPE)
    A = np.full((batch, n_out), np.nan, dtype)
    S = np.full_like(A, np.nan) if keep_S else A
    cpu.linear_forward(X, W, b, code, SLOPE, S, A)
    assert_close(A, A_expected, what="A")
    if keep_S:
        assert_close(S, S_expected, what="S")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch, n_in, n_out", LINEAR_SHAPES)
@pytest.mark.parametrize("compute_dX", [True, False], ids=["dX", "no dX"])
@pytest.mark.parametrize("code, aliased", list(_aliasing_cases()))
def test_linear_backward_matches_reference(code, aliased, compute_dX, batch, n_in, n_out,
                                           dtype, rng, random_array, assert_close,
                                           backward_magnitudes):
    X, W, _ = _linear_params(rng, random_array, batch, n_in, n_out, dtype)
    dA, A, S, _ = _backward_inputs(rng, random_array, (batch, n_out), dtype, code)
    dS_exp, dX_exp, dW_exp, db_exp = reference.linear_backward(dA, S, X, W, code, SLOPE)
    dS_mag, dX_mag, dW_mag, db_mag = backward_magnitudes(dA, X, W)
    S, dS = _aliased(dA, A, S, code, aliased)
    dX = np.full((batch, n_in), np.nan, dtype)
    dW = np.full((n_out, n_in), np.nan, dtype)
    db = np.full(n_out, np.nan, dtype)
    cpu.linear_backward(dA, A, S, X, W, code, SLOPE, dS, dX, dW, db, compute_dX)
    assert_close(dS, dS_exp, scale=dS_mag, what="dS")
    assert_close(dW, dW_exp, scale=dW_mag, what="dW")
    assert_close(db, db_exp, scale=db_mag, what="db")
    if compute_dX:
        assert_close(dX, dX_exp, scale=dX_mag, what="dX")
    else:
        assert np.isnan(dX).all(), "compute_dX=False must leave dX untouched"


# -- losses ------------------------------------------------------------------------------

_LOSS_KERNELS = {codes.SOFTMAX_CROSS_ENTROPY: cpu.softmax_cross_entropy,
                 codes.MSE: cpu.mse, codes.BCE_WITH_LOGITS: cpu.bce_with_logits}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("loss_code", LOSSES)
def test_loss_kernel_matches_reference(loss_code, shape, dtype, rng, loss_inputs,
                                       assert_close):
    Z, y = loss_inputs(rng, loss_code, shape, dtype)
    loss_expected, dZ_expected = reference.loss_forward_backward(loss_code, Z, y)
    dZ = np.full_like(Z, np.nan)
    loss = _LOSS_KERNELS[loss_code](Z, y, dZ)
    assert_close(loss, loss_expected, dtype=dtype, what="loss")
    assert_close(dZ, dZ_expected, what="dZ")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("loss_code", LOSSES)
def test_loss_forward_backward_dispatches_to_each_loss(loss_code, shape, dtype, rng,
                                                       loss_inputs, cpu_loss,
                                                       assert_close):
    Z, y = loss_inputs(rng, loss_code, shape, dtype)
    loss_expected, dZ_expected = reference.loss_forward_backward(loss_code, Z, y)
    loss, dZ = cpu_loss(loss_code, Z, y)
    assert_close(loss, loss_expected, dtype=dtype, what="loss")
    assert_close(dZ, dZ_expected, what="dZ")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 17), (17, 3), (1, 1)], ids=["3x17", "17x3", "1x1"])
@pytest.mark.parametrize("loss_code", LOSSES)
def test_loss_is_finite_and_exact_for_huge_logits(loss_code, shape, dtype, rng,
                                                  loss_inputs, cpu_loss, assert_close):
    Z, y = loss_inputs(rng, loss_code, shape, dtype, scale=1e4)
    Z.flat[0], Z.flat[-1] = 1e4, -1e4  # both signs, exactly as large as asked
    with np.errstate(over="ignore"):   # the reference's sigmoid overflows to exactly 0
        loss_expected, dZ_expected = reference.loss_forward_backward(loss_code, Z, y)
    loss, dZ = cpu_loss(loss_code, Z, y)
    assert np.isfinite(loss) and np.isfinite(dZ).all()
    assert_close(loss, loss_expected, dtype=dtype, what="loss")
    assert_close(dZ, dZ_expected, what="dZ")


# -- optimizer updates -------------------------------------------------------------------

def _sgd_alone(params, grads, lr):
    cpu.sgd_update(params, grads, lr)


def _sgd_hparams(lr):
    """Plain SGD's hparams: the learning rate first, every other entry (momentum,
    weight decay, gradient clipping, where the optimizer has them) 0, meaning off."""
    hparams = np.zeros(getattr(codes, "N_HPARAMS", (1,))[codes.SGD])
    hparams[0] = lr
    return hparams


def _sgd_dispatched(params, grads, lr):
    state = np.zeros((0, params.shape[0]), params.dtype)
    cpu.optimizer_update(codes.SGD, params, grads, state, _sgd_hparams(lr), 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 17, 129, 1000])
@pytest.mark.parametrize("update", [_sgd_alone, _sgd_dispatched],
                         ids=["sgd_update", "optimizer_update(SGD)"])
def test_sgd_update_matches_reference(update, n, dtype, rng, random_array, assert_close):
    params, grads = random_array(rng, n, dtype), random_array(rng, n, dtype)
    lr = 0.37
    expected = reference.sgd_update(params, grads, lr)
    grads_before = grads.copy()
    update(params, grads, lr)
    assert_close(params, expected, what="params")
    np.testing.assert_array_equal(grads, grads_before)


# -- whole-network passes ----------------------------------------------------------------

# Fixed architectures: every activation in a hidden layer, every loss, odd widths,
# single-layer networks and width-1 layers.
NETWORK_CASES = [
    pytest.param(dict(sizes=[17, 129, 3, 17, 5], activations=["identity", "sigmoid", "tanh"],
                      output_activation="identity", loss="softmax_cross_entropy", batch=17),
                 id="17-129-3-17-5,identity-sigmoid-tanh,cross_entropy"),
    pytest.param(dict(sizes=[3, 17, 129, 1, 3], activations=["relu", "leaky_relu", "softplus"],
                      output_activation="gelu", loss="mse", batch=3),
                 id="3-17-129-1-3,relu-leaky-softplus-gelu,mse"),
    pytest.param(dict(sizes=[129, 17, 3, 17], activations=["gelu", "gelu_tanh"],
                      output_activation="identity", loss="bce_with_logits", batch=129),
                 id="129-17-3-17,gelu-gelu_tanh,bce"),
    pytest.param(dict(sizes=[1, 1], activations=[], output_activation="sigmoid",
                      loss="mse", batch=1), id="1-1,sigmoid,mse"),
    pytest.param(dict(sizes=[129, 3], activations=[], output_activation="identity",
                      loss="softmax_cross_entropy", batch=1), id="129-3,cross_entropy"),
    pytest.param(dict(sizes=[3, 129, 1], activations=["tanh"], output_activation="identity",
                      loss="bce_with_logits", batch=17), id="3-129-1,tanh,bce"),
]


class _NetworkCall:
    """A random network as the compiled passes see it (flat params, layout arrays,
    NaN-poisoned oversized workspaces), plus the reference's answer for it."""

    def __init__(self, case, dtype, rng, fixtures):
        (network_from_case, reference_params, network_buffers,
         network_gradient_magnitudes) = fixtures
        self.net, self.X, y = network_from_case(case, rng, dtype)
        self.loss_code = codes.LOSS_CODES[case["loss"]]
        if self.loss_code == codes.SOFTMAX_CROSS_ENTROPY:
            self.labels, self.targets = y, np.zeros((0, self.net.sizes[-1]), dtype)
        else:
            self.labels, self.targets = np.zeros(0, np.int64), y
        self.acts, self.pres, self.dbuf = network_buffers(self.net, case["batch"])
        self.net.grads.fill(np.nan)
        weights, biases, act_codes, slopes = reference_params(self.net)
        self.ref_layers = reference.network_forward(weights, biases, act_codes, self.X,
                                                    slopes)
        self.ref_loss, self.ref_dWs, self.ref_dbs = reference.network_backward(
            weights, biases, act_codes, self.loss_code, self.X, y, slopes)
        self.grad_magnitudes = network_gradient_magnitudes(
            weights, biases, self.ref_layers, self.X, self.loss_code, y)

    def layout_args(self):
        return self.net.layout.compiled_args()

    def workspace(self):
        return self.acts, self.pres, self.dbuf

    def layer_output(self, l):
        """Layer l's output A_l inside the acts workspace (see kernels/cpu/network.py)."""
        batch, act_cum = self.X.shape[0], self.net.layout.act_cum
        return self.acts[batch * act_cum[l]:batch * act_cum[l + 1]].reshape(batch, -1)

    def assert_grads_match_reference(self, assert_close):
        for l, (layer, (dW_mag, db_mag)) in enumerate(zip(self.net.layers,
                                                          self.grad_magnitudes)):
            assert_close(layer.dW, self.ref_dWs[l], scale=dW_mag, what=f"layer {l} dW")
            assert_close(layer.db, self.ref_dbs[l], scale=db_mag, what=f"layer {l} db")


@pytest.fixture(scope="session")
def network_call(network_from_case, reference_params, network_buffers,
                 network_gradient_magnitudes):
    """network_call(case, dtype, rng) -> _NetworkCall."""
    fixtures = (network_from_case, reference_params, network_buffers,
                network_gradient_magnitudes)
    return lambda case, dtype, rng: _NetworkCall(case, dtype, rng, fixtures)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NETWORK_CASES)
def test_network_forward_matches_reference(case, dtype, rng, network_call, assert_close):
    call = network_call(case, dtype, rng)
    out = cpu.network_forward(call.net.params, *call.layout_args(), call.X,
                              call.acts, call.pres)
    assert_close(out, call.ref_layers[-1][1], what="network output")
    for l, (_, A_expected) in enumerate(call.ref_layers):
        assert_close(call.layer_output(l), A_expected, what=f"layer {l} output")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NETWORK_CASES)
def test_network_loss_matches_reference(case, dtype, rng, network_call, assert_close):
    call = network_call(case, dtype, rng)
    loss = cpu.network_loss(call.net.params, *call.layout_args(), call.loss_code, call.X,
                            call.labels, call.targets, *call.workspace())
    assert_close(loss, call.ref_loss, dtype=dtype, what="loss")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NETWORK_CASES)
def test_network_backward_matches_reference(case, dtype, rng, network_call, assert_close):
    call = network_call(case, dtype, rng)
    params_before = call.net.params.copy()
    loss = cpu.network_backward(call.net.params, call.net.grads, *call.layout_args(),
                                call.loss_code, call.X, call.labels, call.targets,
                                *call.workspace())
    assert_close(loss, call.ref_loss, dtype=dtype, what="loss")
    call.assert_grads_match_reference(assert_close)
    np.testing.assert_array_equal(call.net.params, params_before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NETWORK_CASES)
def test_network_train_step_is_backward_then_sgd(case, dtype, rng, network_call,
                                                 assert_close):
    call = network_call(case, dtype, rng)
    lr = 0.37
    before = [(layer.W.astype(np.float64), layer.b.astype(np.float64))
              for layer in call.net.layers]
    opt_state = np.zeros((0, call.net.n_params), dtype)
    loss, nonfinite = cpu.network_train_step(
        call.net.params, call.net.grads, *call.layout_args(), call.loss_code, call.X,
        call.labels, call.targets, *call.workspace(), codes.SGD, opt_state,
        _sgd_hparams(lr), 1)
    assert nonfinite == 0
    assert_close(loss, call.ref_loss, dtype=dtype, what="loss before the update")
    call.assert_grads_match_reference(assert_close)
    for l, (layer, (W, b)) in enumerate(zip(call.net.layers, before)):
        assert_close(layer.W, reference.sgd_update(W, call.ref_dWs[l], lr), what=f"W{l}")
        assert_close(layer.b, reference.sgd_update(b, call.ref_dbs[l], lr), what=f"b{l}")


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_network_backward_matches_reference_on_random_architectures(
        dtype, data, network_cases, network_call, assert_close):
    case = data.draw(network_cases(max_width=129), label="architecture")
    call = network_call(case, dtype, np.random.default_rng(case["seed"]))
    loss = cpu.network_backward(call.net.params, call.net.grads, *call.layout_args(),
                                call.loss_code, call.X, call.labels, call.targets,
                                *call.workspace())
    assert_close(loss, call.ref_loss, dtype=dtype, what="loss")
    call.assert_grads_match_reference(assert_close)


# -- the comparison rule can fail --------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_assert_close_rejects_an_error_just_above_tolerance(dtype, rng, random_array,
                                                            assert_close, kernel_rtol):
    """Guards the guard: one entry off by 10x the tolerance (relative to the array's
    scale) fails, 0.1x passes, and NaN never passes."""
    rtol = kernel_rtol(dtype)
    expected = random_array(rng, (17, 3), np.float64)
    step = rtol * np.abs(expected).max()
    for factor, fails in ((10.0, True), (0.1, False)):
        actual = expected.copy()
        actual[5, 1] += factor * step
        if fails:
            with pytest.raises(AssertionError):
                assert_close(actual, expected, dtype=dtype)
        else:
            assert_close(actual, expected, dtype=dtype)
    actual = expected.copy()
    actual[0, 0] = np.nan
    with pytest.raises(AssertionError):
        assert_close(actual, expected, dtype=dtype)
