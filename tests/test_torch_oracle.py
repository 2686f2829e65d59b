"""fastbp's networks agree with PyTorch's autograd, an independent implementation.

What this file proves, in float64: for the same random networks (every activation x
loss on a fixed architecture, and hypothesis-drawn depths, widths, per-layer
activations and batches), fastbp.MLP's forward output, mean loss, and every layer's dW
and db equal what torch.nn.functional (linear, sigmoid, tanh, relu, leaky_relu with
slope 0.01, softplus, gelu exact and approximate="tanh") with CrossEntropyLoss,
MSELoss or BCEWithLogitsLoss and loss.backward() compute from the same parameters.

Skipped, saying so, when PyTorch is not installed (`pip install torch==2.13.0`).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastbp.kernels import codes, reference

torch = pytest.importorskip(
    "torch", reason="PyTorch not installed: torch.autograd oracle tests skipped")
F = torch.nn.functional

# Two float64 implementations differ by rounding only; one gap is by design: torch's
# softplus returns s itself for s > 20 (threshold=20), off by log1p(e^-s) < 2.1e-9,
# and pre-activations here stay far below 20.
TORCH_RTOL = 1e-9


def _torch_activation(name, slope):
    return {
        "identity": lambda s: s,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": F.relu,
        "leaky_relu": lambda s: F.leaky_relu(s, negative_slope=slope),
        "softplus": F.softplus,
        "gelu": lambda s: F.gelu(s, approximate="none"),
        "gelu_tanh": lambda s: F.gelu(s, approximate="tanh"),
    }[name]


TORCH_LOSSES = {
    "softmax_cross_entropy": torch.nn.CrossEntropyLoss(),
    "mse": torch.nn.MSELoss(),
    "bce_with_logits": torch.nn.BCEWithLogitsLoss(),
}


def _torch_autograd(net, X, y, activations):
    """(output, loss, [dW], [db]) of ``net``'s parameters run through torch with
    ``activations`` (names, one per layer)."""
    weights = [torch.tensor(layer.W, requires_grad=True) for layer in net.layers]
    biases = [torch.tensor(layer.b, requires_grad=True) for layer in net.layers]
    a = torch.from_numpy(X)
    for W, b, name in zip(weights, biases, activations):
        a = _torch_activation(name, net.leaky_relu_slope)(F.linear(a, W, b))
    loss = TORCH_LOSSES[net.loss](a, torch.from_numpy(y))
    loss.backward()
    return (a.detach().numpy(), loss.item(), [W.grad.numpy() for W in weights],
            [b.grad.numpy() for b in biases])


@pytest.fixture(scope="session")
def check_against_torch(assert_close, reference_params, network_gradient_magnitudes):
    """check_against_torch(net, X, y, activations=None): forward, loss, and every
    layer's dW and db of fastbp equal torch.autograd's on the same parameters, with
    torch running ``activations`` (default: the network's own). Gradients are judged on
    the rounding yardsticks of conftest's network_gradient_magnitudes, at TORCH_RTOL."""
    def check_against_torch(net, X, y, activations=None):
        out_torch, loss_torch, dWs, dbs = _torch_autograd(
            net, X, y, net.activations if activations is None else activations)
        assert_close(net.forward(X), out_torch, rtol=TORCH_RTOL, what="forward output")
        loss = net.backward(X, y)
        assert_close(loss, loss_torch, rtol=TORCH_RTOL, what="loss")
        weights, biases, act_codes, slopes = reference_params(net)
        layers = reference.network_forward(weights, biases, act_codes, X, slopes)
        magnitudes = network_gradient_magnitudes(weights, biases, layers, X,
                                                 codes.LOSS_CODES[net.loss], y)
        for l, (layer, (dW_mag, db_mag)) in enumerate(zip(net.layers, magnitudes)):
            assert_close(layer.dW, dWs[l], rtol=TORCH_RTOL, scale=dW_mag, what=f"dW{l}")
            assert_close(layer.db, dbs[l], rtol=TORCH_RTOL, scale=db_mag, what=f"db{l}")
    return check_against_torch


@pytest.mark.parametrize("loss", codes.LOSSES)
@pytest.mark.parametrize("activation", codes.ACTIVATIONS)
def test_matches_torch_autograd_for_each_activation_and_loss(
        activation, loss, rng, fixed_network_case, network_from_case, check_against_torch):
    check_against_torch(*network_from_case(fixed_network_case(activation, loss), rng))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_matches_torch_autograd_on_random_architectures(data, network_cases,
                                                       network_from_case,
                                                       check_against_torch):
    case = data.draw(network_cases(max_width=129), label="architecture")
    check_against_torch(*network_from_case(case, np.random.default_rng(case["seed"])))


def test_torch_comparison_rejects_a_wrong_activation(rng, fixed_network_case,
                                                     network_from_case,
                                                     check_against_torch):
    """The comparison is not vacuous: a network built with exact gelu fails it when
    torch is asked for the tanh approximation instead (a gap of about 1e-3)."""
    net, X, y = network_from_case(fixed_network_case("gelu", "mse"), rng)
    with pytest.raises(AssertionError):
        check_against_torch(net, X, y, activations=["gelu_tanh"] * len(net.activations))
