"""The algorithmic reference: every kernel in plain numpy, computed in float64.

Slow and obvious on purpose. Tests compare the CPU kernels and their CUDA twins against
these functions; each returns new float64 arrays instead of writing into buffers.
Shapes and meanings match kernels/cpu (X (batch, in), W (out, in), b (out,)).
"""
import math

import numpy as np

from . import codes

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _f64(a):
    return np.asarray(a, dtype=np.float64)


_GELU_TANH_C = 0.044715


def _sigmoid(s):
    return 1.0 / (1.0 + np.exp(-s))


def _gelu_tanh_inner(s):
    return math.sqrt(2.0 / math.pi) * (s + _GELU_TANH_C * s ** 3)


# FORWARD[code](s, slope) = sigma(s) and DERIVATIVE[code](s, slope) = sigma'(s), float64,
# indexed by the activation's code (kernels/codes.py). The derivatives are written from
# s (not from the output) as an independent check of the kernels'.
FORWARD = (
    lambda s, slope: s.copy(),                                          # identity
    lambda s, slope: _sigmoid(s),                                       # sigmoid
    lambda s, slope: np.tanh(s),                                        # tanh
    lambda s, slope: np.maximum(s, 0.0),                                # relu
    lambda s, slope: np.where(s > 0, s, slope * s),                     # leaky_relu
    lambda s, slope: np.logaddexp(0.0, s),                              # softplus
    lambda s, slope: 0.5 * s * (1.0 + _erf(s / math.sqrt(2.0))),        # gelu
    lambda s, slope: 0.5 * s * (1.0 + np.tanh(_gelu_tanh_inner(s))),    # gelu_tanh
)
DERIVATIVE = (
    lambda s, slope: np.ones_like(s),                                   # identity
    lambda s, slope: _sigmoid(s) * (1.0 - _sigmoid(s)),                 # sigmoid
    lambda s, slope: 1.0 / np.cosh(s) ** 2,                             # tanh
    lambda s, slope: (s > 0).astype(np.float64),                        # relu
    lambda s, slope: np.where(s > 0, 1.0, slope),                       # leaky_relu
    lambda s, slope: _sigmoid(s),                                       # softplus
    lambda s, slope: (0.5 * (1.0 + _erf(s / math.sqrt(2.0)))            # gelu
                      + s * np.exp(-0.5 * s * s) / math.sqrt(2 * math.pi)),
    lambda s, slope: (0.5 * (1.0 + np.tanh(_gelu_tanh_inner(s)))        # gelu_tanh
                      + 0.5 * s * (1.0 - np.tanh(_gelu_tanh_inner(s)) ** 2)
                      * math.sqrt(2.0 / math.pi) * (1.0 + 3 * _GELU_TANH_C * s * s)),
)
assert len(FORWARD) == len(DERIVATIVE) == len(codes.ACTIVATIONS)


def _entry(table, code):
    if not 0 <= code < len(table):
        raise ValueError(f"unknown activation code {code}")
    return table[code]


def activation_forward(S, code, slope=codes.DEFAULT_LEAKY_RELU_SLOPE):
    """sigma(S) in float64."""
    return _entry(FORWARD, code)(_f64(S), slope)


def activation_derivative(S, code, slope=codes.DEFAULT_LEAKY_RELU_SLOPE):
    """sigma'(S) in float64, written from S (not from the output) as an independent check."""
    return _entry(DERIVATIVE, code)(_f64(S), slope)


def linear_forward(X, W, b, code, slope=codes.DEFAULT_LEAKY_RELU_SLOPE):
    """(S, A) with S = X @ W.T + b, A = sigma(S)."""
    S = _f64(X) @ _f64(W).T + _f64(b)
    return S, activation_forward(S, code, slope)


def linear_backward(dA, S, X, W, code, slope=codes.DEFAULT_LEAKY_RELU_SLOPE):
    """(dS, dX, dW, db) of a layer from dA and its pre-activation S."""
    dS = _f64(dA) * activation_derivative(S, code, slope)
    return dS, dS @ _f64(W), dS.T @ _f64(X), dS.sum(axis=0)


def softmax_cross_entropy(Z, labels):
    """(loss, dZ): torch.nn.CrossEntropyLoss (mean) of logits Z on int labels."""
    z = _f64(Z)
    batch = z.shape[0]
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    sumexp = e.sum(axis=1)
    rows = np.arange(batch)
    # (max - z_y) + log(sumexp): adding log(sumexp) to a huge max first would lose it
    loss = np.mean((m[:, 0] - z[rows, labels]) + np.log(sumexp))
    p = e / sumexp[:, None]
    p[rows, labels] -= 1.0
    return loss, p / batch


def mse(Z, T):
    """(loss, dZ): torch.nn.MSELoss (mean over every element)."""
    diff = _f64(Z) - _f64(T)
    return np.mean(diff ** 2), 2.0 * diff / diff.size


def bce_with_logits(Z, T):
    """(loss, dZ): torch.nn.BCEWithLogitsLoss (mean over every element)."""
    z, t = _f64(Z), _f64(T)
    # max(z, 0) - z*t written so that no large z - z*t cancels (t near 1)
    loss = np.mean((1.0 - t) * np.maximum(z, 0.0) - t * np.minimum(z, 0.0)
                   + np.log1p(np.exp(-np.abs(z))))
    return loss, (1.0 / (1.0 + np.exp(-z)) - t) / z.size


def loss_forward_backward(loss_code, Z, y):
    """Dispatch on a loss code; y is labels for cross-entropy, targets otherwise."""
    return (softmax_cross_entropy, mse, bce_with_logits)[loss_code](Z, y)


def sgd_update(params, grads, lr):
    """params - lr * grads."""
    return _f64(params) - lr * _f64(grads)


def network_forward(weights, biases, act_codes, X, slopes=None):
    """Outputs of every layer: list of (S_l, A_l), float64."""
    out = []
    a = _f64(X)
    for l, (W, b) in enumerate(zip(weights, biases)):
        slope = codes.DEFAULT_LEAKY_RELU_SLOPE if slopes is None else slopes[l]
        s, a = linear_forward(a, W, b, act_codes[l], slope)
        out.append((s, a))
    return out


def network_backward(weights, biases, act_codes, loss_code, X, y, slopes=None):
    """(loss, dWs, dbs) of a whole network by plain backprop in float64."""
    layers = network_forward(weights, biases, act_codes, X, slopes)
    loss, dA = loss_forward_backward(loss_code, layers[-1][1], y)
    dWs, dbs = [None] * len(weights), [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        slope = codes.DEFAULT_LEAKY_RELU_SLOPE if slopes is None else slopes[l]
        x_in = _f64(X) if l == 0 else layers[l - 1][1]
        _, dA, dWs[l], dbs[l] = linear_backward(dA, layers[l][0], x_in, weights[l],
                                                act_codes[l], slope)
    return loss, dWs, dbs
