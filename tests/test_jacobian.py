"""fastbp.jacobian: backpropagated input Jacobians against central differences."""
import numpy as np
import pytest

import fastbp


def _finite_difference_jacobian(net, X, h=1e-6):
    J = np.empty((X.shape[0], net.sizes[-1], X.shape[1]))
    for j in range(X.shape[1]):
        E = np.zeros_like(X)
        E[:, j] = h
        J[:, :, j] = (net.forward(X + E) - net.forward(X - E)) / (2 * h)
    return J


@pytest.mark.parametrize("sizes, activation, output, loss", [
    ([4, 7, 6, 3], "tanh", "identity", "softmax_cross_entropy"),
    ([4, 7, 6, 3], ["gelu", "softplus"], "sigmoid", "mse"),
    ([5, 9, 2], "leaky_relu", "identity", "bce_with_logits"),
    ([3, 1], [], "tanh", "mse"),                  # no hidden layer: J = diag(sigma') W
    ([6, 17, 129, 4], "sigmoid", "identity", "softmax_cross_entropy"),
])
def test_matches_finite_differences(sizes, activation, output, loss):
    rng = np.random.default_rng(len(sizes))
    net = fastbp.MLP(sizes, activation=activation, output_activation=output, loss=loss,
                     dtype="float64", seed=3)
    X = rng.standard_normal((7, sizes[0]))
    J = fastbp.jacobian(net, X)
    assert J.shape == (7, sizes[-1], sizes[0]) and J.dtype == np.float64
    expected = _finite_difference_jacobian(net, X)
    np.testing.assert_allclose(J, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("checkpoint", [2, 3])
def test_checkpointed_network(checkpoint):
    """Checkpointed networks recompute layers inside backprop; the Jacobian must not
    read those recomputations as the forward's."""
    rng = np.random.default_rng(checkpoint)
    sizes = [4, 6, 5, 7, 6, 3]
    X = rng.standard_normal((5, 4))
    plain = fastbp.MLP(sizes, activation="tanh", dtype="float64", seed=0)
    ckpt = fastbp.MLP(sizes, activation="tanh", dtype="float64", seed=0,
                      checkpoint=checkpoint)
    np.testing.assert_allclose(fastbp.jacobian(ckpt, X), fastbp.jacobian(plain, X),
                               rtol=1e-12, atol=1e-15)


def test_relu_away_from_kinks():
    net = fastbp.MLP([3, 8, 2], activation="relu", dtype="float64", seed=0)
    X = np.random.default_rng(1).standard_normal((5, 3))
    pre = X @ net.layers[0].W.T + net.layers[0].b
    assert np.abs(pre).min() > 1e-4   # central differences are exact off the kinks
    np.testing.assert_allclose(fastbp.jacobian(net, X), _finite_difference_jacobian(net, X),
                               rtol=1e-6, atol=1e-9)


def test_linear_network_jacobian_is_W():
    net = fastbp.MLP([4, 3], activation=[], loss="mse", dtype="float64", seed=2)
    J = fastbp.jacobian(net, np.ones((2, 4)))
    assert np.array_equal(J[0], net.layers[0].W) and np.array_equal(J[1], net.layers[0].W)


def test_leaves_network_untouched_and_float32():
    net = fastbp.MLP([4, 6, 3], activation="tanh", seed=0)
    X = np.random.default_rng(0).standard_normal((5, 4))
    net.backward(X, np.arange(5) % 3)
    params, grads = net.params.copy(), net.grads.copy()
    J = fastbp.jacobian(net, X)
    assert J.dtype == np.float32
    assert np.array_equal(net.params, params) and np.array_equal(net.grads, grads)
    net64 = fastbp.MLP([4, 6, 3], activation="tanh", dtype="float64", seed=0)
    net64.params[...] = net.params
    np.testing.assert_allclose(J, fastbp.jacobian(net64, X), rtol=1e-4, atol=1e-5)


def test_rows_are_independent():
    net = fastbp.MLP([4, 6, 3], activation="gelu", dtype="float64", seed=0)
    X = np.random.default_rng(0).standard_normal((6, 4))
    J = fastbp.jacobian(net, X)
    np.testing.assert_allclose(fastbp.jacobian(net, X[2:3])[0], J[2], rtol=1e-12,
                               atol=1e-14)


def test_input_checks():
    net = fastbp.MLP([4, 3], seed=0)
    with pytest.raises(ValueError, match="X"):
        fastbp.jacobian(net, np.ones((2, 5)))
