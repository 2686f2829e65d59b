"""scikit-learn's MLP losses at the output layer and their gradient, in one pass.

    output_loss_grad   P = out(Z);  loss = L(Y, P);  dZ = (P - Y) * sw / sum(sw)
                       Z, Y, dZ: (n, k)   sw: (n,) sample weights, or (0,) for none
    l2_penalty         dW += scale * W for every layer's W;  returns sum(W ** 2)
    sklearn_passes     a network's whole scikit-learn training step in one call:
                       forward, the above, backward, penalty and optimizer update

The definitions are scikit-learn's (sklearn/neural_network/_base.py and _multilayer_
perceptron.py, version 1.x), for the output function ``out_code``
(kernels.codes.SKLEARN_OUTPUTS) and its loss:

    softmax   P = exp(Z - max_row) / sum_row       loss = -sum_ij w_i xlogy(Y, clip(P)) / W
    logistic  P = 1 / (1 + exp(-Z))                loss = -sum_ij w_i [xlogy(Y, clip(P))
                                                          + xlogy(1 - Y, 1 - clip(P))] / W
    identity  P = Z                                loss = sum_ij w_i (Y - P)^2 / (2 W k)
    exp       P = exp(Z)                           loss = sum_ij w_i [xlogy(Y, Y / P)
                                                          - Y + P] / W

with w_i the sample weights (1 without), W their sum, clip(P) = P clipped to
[eps, 1 - eps] and xlogy(x, y) = x log y, 0 where x == 0 (scipy.special.xlogy). Each
output function is its loss's canonical link, so the gradient w.r.t. Z is
(P - Y) * w_i / W for all four. Sums accumulate in float64; P and dZ are stored in Z's
dtype.

Why compiled: the same arithmetic as numpy calls cost about 190 us per minibatch of a
200 x 10 output (a dozen small ufunc calls, each with its dispatch), more than the
forward and backward products of scikit-learn's default network on its digits data.
Here it is one pass. fastbp's estimators run it on the host for both devices: its
input and output are one (n, k) array each, which a CUDA network copies across.
"""
import functools
import math
from types import SimpleNamespace

from ..codes import SKLEARN_EXP, SKLEARN_IDENTITY, SKLEARN_LOGISTIC, SKLEARN_SOFTMAX
from ._jit import scalar, serial
from .network import backprop_for, forward_for
from .optim import optimizer_update


@scalar
def _xlogy(x, y):
    """x * log(y), 0 where x == 0 (unless y is NaN), as scipy.special.xlogy."""
    if x == 0.0 and not math.isnan(y):
        return 0.0
    return x * math.log(y)


@scalar
def _clip(p, eps):
    """p clipped to [eps, 1 - eps] (NaN stays NaN), as np.clip."""
    if p < eps:
        return eps
    if p > 1.0 - eps:
        return 1.0 - eps
    return p


@scalar
def _softmax_row(Z, P, i):
    """P[i] = softmax(Z[i]), scikit-learn's order: subtract the row's max, exp,
    divide by the row's sum."""
    k = Z.shape[1]
    top = Z[i, 0]
    for j in range(1, k):
        if Z[i, j] > top:
            top = Z[i, j]
    total = 0.0
    for j in range(k):
        e = math.exp(Z[i, j] - top)
        P[i, j] = e
        total += P[i, j]
    for j in range(k):
        P[i, j] = P[i, j] / total


@scalar
def weight_sum(sw, n):
    """The sum of the sample weights sw (n,), or n when sw is empty (none)."""
    if sw.shape[0] != n or n == 0:
        return float(n)
    total = 0.0
    for i in range(n):
        total += sw[i]
    return total


@serial
def output_loss_grad(out_code, Z, Y, sw, eps, dZ):
    """scikit-learn's loss of the outputs Z (n, k) against Y (n, k) for the output
    function ``out_code`` (module doc), as a float64; its gradient w.r.t. Z goes to
    dZ (n, k), which must not be Z. sw: (n,) sample weights, or an empty array for
    none; eps: the clipping bound of the log losses (np.finfo(dtype).eps)."""
    n, k = Z.shape
    weighted = sw.shape[0] == n and n > 0
    sw_sum = weight_sum(sw, n)
    total = 0.0
    for i in range(n):
        if out_code == SKLEARN_SOFTMAX:
            _softmax_row(Z, dZ, i)
        row = 0.0
        for j in range(k):
            y = Y[i, j]
            if out_code == SKLEARN_SOFTMAX:
                p = dZ[i, j]
                row -= _xlogy(y, _clip(p, eps))
            elif out_code == SKLEARN_LOGISTIC:
                dZ[i, j] = 1.0 / (1.0 + math.exp(-Z[i, j]))
                p = dZ[i, j]
                c = _clip(p, eps)
                row -= _xlogy(y, c) + _xlogy(1.0 - y, 1.0 - c)
            elif out_code == SKLEARN_EXP:
                dZ[i, j] = math.exp(Z[i, j])
                p = dZ[i, j]
                row += _xlogy(y, y / p) - y + p
            else:   # SKLEARN_IDENTITY
                p = Z[i, j]
                row += 0.5 * (y - p) * (y - p)
            d = p - y
            if weighted:
                d = d * sw[i]
            dZ[i, j] = d / sw_sum
        total += sw[i] * row if weighted else row
    if out_code == SKLEARN_IDENTITY:
        return total / (sw_sum * k)
    return total / sw_sum


@serial
def l2_penalty(params, grads, sizes, w_off, scale):
    """grads[W_l] += scale * params[W_l] for every layer l's weights (biases untouched,
    as scikit-learn's alpha); returns the sum of the squared weights as a float64.
    params, grads: the flat buffers (n_params,); sizes (L+1,) and w_off (L,): the
    network's layout (fastbp/layout.py)."""
    # four partial sums: one running sum is a chain of dependent adds that LLVM may not
    # reorder (no "reassoc"), about 4x slower than the update beside it
    s0 = s1 = s2 = s3 = 0.0
    for l in range(w_off.shape[0]):
        start = w_off[l]
        stop = start + sizes[l] * sizes[l + 1]
        i = start
        while i + 4 <= stop:
            w0, w1, w2, w3 = params[i], params[i + 1], params[i + 2], params[i + 3]
            s0 += w0 * w0
            s1 += w1 * w1
            s2 += w2 * w2
            s3 += w3 * w3
            grads[i] += scale * w0
            grads[i + 1] += scale * w1
            grads[i + 2] += scale * w2
            grads[i + 3] += scale * w3
            i += 4
        while i < stop:
            w0 = params[i]
            s0 += w0 * w0
            grads[i] += scale * w0
            i += 1
    return (s0 + s1) + (s2 + s3)


@functools.lru_cache(maxsize=None)
def sklearn_passes(act_set):
    """The scikit-learn training step compiled for the activation set ``act_set``
    (kernels/cpu/network.py, ``passes``): a namespace with ``train_step``.

    train_step(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
               out_code, X, Y, sw, eps, alpha, acts, pres, dbuf,
               opt_code, opt_state, opt_hparams, opt_step) -> (loss, nonfinite)

    Forward through the network, ``output_loss_grad`` into dbuf, backward (grads),
    ``l2_penalty`` with scale alpha / sum(sw) (none for alpha == 0; the loss gains
    alpha * sum(W ** 2) / (2 sum(sw))), then the optimizer's update
    (optim.optimizer_update). Returns the loss before the update and how many
    parameters the update left NaN or infinite. Arguments: the network passes' (X
    (n, sizes[0]), workspaces sized for n rows), output_loss_grad's (Y (n, sizes[-1]),
    sw (n,) or empty, eps) and optimizer_update's. One call instead of five: each call
    into compiled code costs microseconds of argument checks, as much as a small
    network's loss pass.
    """
    @serial
    def train_step(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                   pre_cum, out_code, X, Y, sw, eps, alpha, acts, pres, dbuf, opt_code,
                   opt_state, opt_hparams, opt_step):
        out = forward_for(act_set, params, sizes, w_off, b_off, act_codes, slopes,
                          act_cum, pre_cum, X, acts, pres)
        n, k = out.shape
        loss = output_loss_grad(out_code, out, Y, sw, eps, dbuf[:n * k].reshape(n, k))
        backprop_for(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                     act_cum, pre_cum, X, acts, pres, dbuf, dbuf[:0].reshape(0, 0))
        if alpha != 0.0:
            sw_sum = weight_sum(sw, n)
            squares = l2_penalty(params, grads, sizes, w_off, alpha / sw_sum)
            loss += 0.5 * alpha * squares / sw_sum
        nonfinite = optimizer_update(opt_code, params, grads, opt_state, opt_hparams,
                                     opt_step)
        return loss, nonfinite

    return SimpleNamespace(act_set=act_set, train_step=train_step)
