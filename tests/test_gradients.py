"""Gradients are the derivatives of the values they claim to be, checked by central
finite differences in float64.

What this file proves:

- sigma' of every activation, both the reference's (kernels.reference.
  activation_derivative) and the CPU kernel's (activation_backward), equals the central
  difference of the matching forward;
- the gradient of every loss, reference and CPU kernel, equals the central difference of
  its value;
- whole networks built with fastbp.MLP (fixed ones covering every activation x loss, and
  hypothesis-drawn depths, widths, per-layer activations and batches, with random
  standard-normal parameters) pass fastbp.gradcheck with relative error < 1e-6 (random
  draws with a layer whose gradients are all below 1e-3 of the loss, too small for
  central differences to resolve to 1e-6, are rejected);
- none of these checks is vacuous: the same checks reject a wrong derivative, a wrong
  loss gradient, and gradients corrupted in three realistic ways.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastbp
from fastbp.kernels import codes, reference
from fastbp.kernels import cpu

ACTIVATIONS = [pytest.param(code, id=name) for code, name in enumerate(codes.ACTIVATIONS)]
LOSSES = [pytest.param(code, id=name) for code, name in enumerate(codes.LOSSES)]

SLOPE = 0.2          # leaky_relu's slope in the elementwise checks (not the default)
ACTIVATION_H = 1e-5  # central-difference steps: truncation ~h^2, rounding ~1e-16/h
LOSS_H = 1e-6
GRADCHECK_MAX = 1e-6  # the bound on fastbp.gradcheck's relative error
# gradcheck's step. Central differences of a float64 loss L carry a rounding error of
# about 1e-16 * |L| / eps; the default eps (1e-6) leaves too little margin under 1e-6
# for layers whose gradients are ~1e-3 of |L| (a survey of 1500 random networks:
# worst 5e-7 at 1e-6, 7e-8 at 1e-5), so the step is near the optimum cbrt(1e-16).
GRADCHECK_EPS = 1e-5
# Central differences cannot resolve a layer whose gradients are all below this
# fraction of |L| to 1e-6; random draws with such a layer are rejected (the comparison
# with the reference backprop in test_kernels_cpu.py still covers them).
RESOLVABLE_FRACTION = 1e-3


# -- activations -------------------------------------------------------------------------

def _reference_activation(code):
    """(forward, derivative) of the numpy reference, float64 in and out."""
    return (lambda S: reference.activation_forward(S, code, SLOPE),
            lambda S: reference.activation_derivative(S, code, SLOPE))


def _cpu_activation(code):
    """(forward, derivative) of the CPU kernels in float64; sigma'(S) is
    activation_backward with dA = 1, given the kernel's own A = sigma(S)."""
    def forward(S):
        A = np.empty_like(S)
        cpu.activation_forward(S, A, code, SLOPE)
        return A

    def derivative(S):
        dS = np.empty_like(S)
        cpu.activation_backward(np.ones_like(S), forward(S), S, dS, code, SLOPE)
        return dS
    return forward, derivative


IMPLEMENTATIONS = [pytest.param(_reference_activation, id="reference"),
                   pytest.param(_cpu_activation, id="cpu")]


def _check_derivative(forward, derivative, S, central_difference, assert_close, fd_rtol):
    assert_close(derivative(S), central_difference(forward, S, ACTIVATION_H),
                 rtol=fd_rtol, what="sigma' vs central difference")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("code", ACTIVATIONS)
def test_activation_derivative_matches_central_differences(
        code, implementation, rng, random_array, central_difference, assert_close, fd_rtol):
    forward, derivative = implementation(code)
    S = random_array(rng, (9, 17), scale=3.0)   # |s| >= 0.15: no kink within h
    _check_derivative(forward, derivative, S, central_difference, assert_close, fd_rtol)


@pytest.mark.parametrize("code", ACTIVATIONS)
def test_activation_derivative_check_rejects_another_activations_derivative(
        code, rng, random_array, central_difference, assert_close, fd_rtol):
    """The check above is not vacuous: sigma' of the next activation in the table
    (identity vs sigmoid, ..., gelu_tanh vs identity) fails it."""
    forward, _ = _reference_activation(code)
    _, wrong = _reference_activation((code + 1) % len(codes.ACTIVATIONS))
    S = random_array(rng, (9, 17), scale=3.0)
    with pytest.raises(AssertionError):
        _check_derivative(forward, wrong, S, central_difference, assert_close, fd_rtol)


# -- losses ------------------------------------------------------------------------------

def _reference_loss(loss_code, Z, y):
    return reference.loss_forward_backward(loss_code, Z, y)


LOSS_IMPLEMENTATIONS = [pytest.param("reference", id="reference"),
                        pytest.param("cpu", id="cpu")]


def _check_loss_gradient(value_and_grad, Z, y, numeric_gradient, assert_close, fd_rtol):
    _, grad = value_and_grad(Z, y)
    numeric = numeric_gradient(lambda z: value_and_grad(z, y)[0], Z, LOSS_H)
    assert_close(grad, numeric, rtol=fd_rtol, what="dZ vs central difference")


@pytest.mark.parametrize("shape", [(1, 3), (3, 5), (17, 3)])
@pytest.mark.parametrize("implementation", LOSS_IMPLEMENTATIONS)
@pytest.mark.parametrize("loss_code", LOSSES)
def test_loss_gradient_matches_central_differences(
        loss_code, implementation, shape, rng, loss_inputs, cpu_loss, numeric_gradient,
        assert_close, fd_rtol, one_kernel_thread):
    Z, y = loss_inputs(rng, loss_code, shape, np.float64)
    loss_fn = _reference_loss if implementation == "reference" else cpu_loss
    with one_kernel_thread():
        _check_loss_gradient(lambda z, t: loss_fn(loss_code, z, t), Z, y,
                             numeric_gradient, assert_close, fd_rtol)


@pytest.mark.parametrize("loss_code", LOSSES)
def test_loss_gradient_check_rejects_a_gradient_off_by_a_factor(
        loss_code, rng, loss_inputs, numeric_gradient, assert_close, fd_rtol):
    """The check above is not vacuous: a gradient scaled by 1.001 (a wrong mean
    normalisation would be far worse) fails it."""
    Z, y = loss_inputs(rng, loss_code, (3, 5), np.float64)

    def off_by_a_factor(z, t):
        loss, grad = _reference_loss(loss_code, z, t)
        return loss, 1.001 * grad
    with pytest.raises(AssertionError):
        _check_loss_gradient(off_by_a_factor, Z, y, numeric_gradient, assert_close,
                             fd_rtol)


# -- whole networks ----------------------------------------------------------------------

@pytest.mark.parametrize("loss", codes.LOSSES)
@pytest.mark.parametrize("activation", codes.ACTIVATIONS)
def test_mlp_gradients_match_finite_differences_for_each_activation_and_loss(
        activation, loss, rng, fixed_network_case, network_from_case, one_kernel_thread):
    net, X, y = network_from_case(fixed_network_case(activation, loss), rng,
                                  leaky_relu_slope=0.2)
    with one_kernel_thread():
        assert fastbp.gradcheck(net, X, y, eps=GRADCHECK_EPS) < GRADCHECK_MAX


def _resolvable_by_finite_differences(net, loss):
    """Whether every layer's dW and db (just computed) reach RESOLVABLE_FRACTION of
    |loss|, or gradcheck's own floor of 1e-3 of the largest gradient if higher."""
    largest = np.abs(net.grads).max()
    blocks = [g for layer in net.layers for g in (layer.dW, layer.db)]
    return min(max(np.abs(g).max(), 1e-3 * largest) for g in blocks) >= (
        RESOLVABLE_FRACTION * abs(loss))


# Pre-activations of relu and leaky_relu units at least this far from their kink at 0:
# central differences with step GRADCHECK_EPS in one parameter move them by far less.
# Closer draws are rejected: a [3, 1, 1, 8, 8] draw with a width-1 chain fed an output
# relu whose pre-activations sat within the step of 0 for two of three rows, and its
# central difference of that bias came out a quarter of the one-sided derivative
# backprop rightly gives.
KINK_MARGIN = 1e-3


def _off_the_kinks(net, X):
    """Whether every relu and leaky_relu pre-activation of ``net`` on X is at least
    KINK_MARGIN from 0 (float64 reference forward)."""
    act_codes, slopes = net.layout.compiled_args()[3:5]
    layers = reference.network_forward([layer.W for layer in net.layers],
                                       [layer.b for layer in net.layers], act_codes, X,
                                       slopes)
    kinked = (codes.ACTIVATION_CODES["relu"], codes.ACTIVATION_CODES["leaky_relu"])
    return all(np.abs(S).min() >= KINK_MARGIN
               for (S, _), code in zip(layers, act_codes) if code in kinked)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_mlp_gradients_match_finite_differences_on_random_architectures(
        data, network_cases, network_from_case, one_kernel_thread):
    case = data.draw(network_cases(max_width=17, max_hidden=3), label="architecture")
    net, X, y = network_from_case(case, np.random.default_rng(case["seed"]))
    assume(_off_the_kinks(net, X))
    with one_kernel_thread():
        assume(_resolvable_by_finite_differences(net, net.backward(X, y)))
        assert fastbp.gradcheck(net, X, y, eps=GRADCHECK_EPS) < GRADCHECK_MAX


def test_the_kink_margin_rejects_the_draw_it_was_set_for(network_from_case):
    case = {"sizes": [3, 1, 1, 8, 8], "activations": ["leaky_relu", "gelu", "gelu"],
            "output_activation": "relu", "loss": "mse", "batch": 3, "seed": 3}
    net, X, y = network_from_case(case, np.random.default_rng(case["seed"]))
    assert not _off_the_kinks(net, X)
    assert fastbp.gradcheck(net, X, y, eps=GRADCHECK_EPS) > GRADCHECK_MAX   # why


# -- gradcheck itself can fail -----------------------------------------------------------

# Each corruption rewrites the gradients net.backward just filled in; all take
# (net, X, y, monkeypatch, reference_params).

def _one_entry_off(net, X, y, monkeypatch, reference_params):
    """One weight gradient off by 1e-4 of its layer's largest."""
    dW = net.layers[1].dW
    dW[0, 0] += 1e-4 * np.abs(dW).max()


def _sigma_prime_left_out(net, X, y, monkeypatch, reference_params):
    """Backprop that forgets sigma' (treats every activation as the identity in
    backward), computed by the reference with its derivative patched to 1."""
    weights, biases, act_codes, slopes = reference_params(net)
    with monkeypatch.context() as patch:
        patch.setattr(reference, "activation_derivative",
                      lambda S, code, slope: np.ones_like(np.asarray(S, float)))
        _, dWs, dbs = reference.network_backward(weights, biases, act_codes,
                                                 codes.LOSS_CODES[net.loss], X, y, slopes)
    for layer, dW, db in zip(net.layers, dWs, dbs):
        layer.dW, layer.db = dW, db


def _bias_gradient_summed_not_averaged(net, X, y, monkeypatch, reference_params):
    """The last layer's db summed over the batch instead of averaged."""
    net.layers[-1].db *= X.shape[0]


CORRUPTIONS = [pytest.param(_one_entry_off, id="one dW entry off by 1e-4"),
               pytest.param(_sigma_prime_left_out, id="sigma' left out"),
               pytest.param(_bias_gradient_summed_not_averaged, id="db not averaged")]


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_gradcheck_detects_corrupted_gradients(corrupt, rng, fixed_network_case,
                                               network_from_case, reference_params,
                                               monkeypatch, one_kernel_thread):
    """fastbp.gradcheck passes this network, then fails it once net.backward is
    wrapped to corrupt the gradients it fills in."""
    case = fixed_network_case("tanh", "softmax_cross_entropy")
    net, X, y = network_from_case(case, rng)
    correct_backward = net.backward

    def corrupted_backward(X_, y_):
        loss = correct_backward(X_, y_)
        corrupt(net, X_, y_, monkeypatch, reference_params)
        return loss
    with one_kernel_thread():
        assert fastbp.gradcheck(net, X, y, eps=GRADCHECK_EPS) < GRADCHECK_MAX
        monkeypatch.setattr(net, "backward", corrupted_backward)
        assert fastbp.gradcheck(net, X, y, eps=GRADCHECK_EPS) > 10 * GRADCHECK_MAX
