"""scikit-learn's MLP losses at the output layer and their gradient, in one pass.

    output_loss_grad   P = out(Z);  loss = L(Y, P);  dZ = (P - Y) * sw / sum(sw)
                       Z, Y, dZ: (n, k)   sw: (n,) sample weights, or (0,) for none
                       (work, tot: softmax's workspaces, ``softmax_workspaces``)
    l2_penalty         dW += scale * W for every layer's W;  returns sum(W ** 2)
    update_with_penalty  the optimizer's update with l2_penalty's term folded in
    sklearn_passes     a whole epoch of scikit-learn's training in one call: per
                       minibatch, gather its rows, forward, the above, backward,
                       penalty and optimizer update

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
200 x 10 output (a dozen small ufunc calls, each with its dispatch), as much as the
forward and backward products of scikit-learn's default network on its digits data.
Here it is one pass. fastbp's estimators run it on the host for both devices: its
input and output are one (n, k) array each, which a CUDA network copies across.
"""
import functools
import math
from types import SimpleNamespace

import numpy as np

from ..codes import (ADAM, HP_ADAM_BETA2, HP_ADAM_EPS, HP_ADAM_WEIGHT_DECAY,
                     HP_MAX_GRAD_NORM, HP_RMSPROP_WEIGHT_DECAY, HP_SGD_WEIGHT_DECAY,
                     RMSPROP, SGD, SKLEARN_EXP, SKLEARN_IDENTITY, SKLEARN_LOGISTIC,
                     SKLEARN_SOFTMAX)
from ._jit import scalar, serial
from .elementary import exp
from .blocks import PARALLEL_MIN_FLOPS
from .linear import linear_forward_transposed
from .network import (_layer_forward, _layer_input, _output_views, _weight_views,
                      backprop_for)
from .optim import optimizer_update, update_span


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
def weight_sum(sw, n):
    """The sum of the sample weights sw (n,), or n when sw is empty (none)."""
    if sw.shape[0] != n or n == 0:
        return float(n)
    total = 0.0
    for i in range(n):
        total += sw[i]
    return total


def softmax_workspaces(n, k, dtype):
    """(work, tot): the workspaces output_loss_grad's softmax needs for n rows of k
    outputs, ``work`` ((k + 1) n,) of the outputs' dtype and ``tot`` (n,) float64."""
    return np.empty((k + 1) * n, dtype), np.empty(n, np.float64)


@scalar
def _softmax_transposed(Z, P, top, tot):
    """P (k, n) = the softmax of each row of Z (n, k), transposed, in scikit-learn's
    order per row: subtract the row's max, exp, divide by the row's sum (summed from
    the first column on, in float64). top (n,) of Z's dtype and tot (n,) float64 are
    workspaces.

    Transposed so that every loop runs along the n rows, which LLVM vectorises; along a
    row of 10 classes each loop was mostly its scalar remainder (the whole loss pass of
    a 200 x 10 minibatch: 19 us row by row, 10 us so)."""
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            P[j, i] = Z[i, j]
    for i in range(n):
        top[i] = P[0, i]
    for j in range(1, k):
        for i in range(n):
            if P[j, i] > top[i]:
                top[i] = P[j, i]
    for j in range(k):
        for i in range(n):
            P[j, i] = exp(P[j, i] - top[i])
    for i in range(n):
        tot[i] = 0.0
    for j in range(k):
        for i in range(n):
            tot[i] += P[j, i]
    for j in range(k):
        for i in range(n):
            P[j, i] = P[j, i] / tot[i]


@scalar
def _gradient_row(P, Y, dZ, i, weighted, w, sw_sum):
    """dZ[i] = (P[i] - Y[i]) * w / sw_sum (without the product when not weighted), in
    scikit-learn's order of operations; P may be dZ."""
    for j in range(Y.shape[1]):
        d = P[i, j] - Y[i, j]
        if weighted:
            d = d * w
        dZ[i, j] = d / sw_sum


@scalar
def _softmax_loss_grad(Z, Y, sw, eps, dZ, work, tot, weighted, sw_sum):
    """output_loss_grad's softmax: returns the weighted sum of the rows' losses."""
    n, k = Z.shape
    P = work[:k * n].reshape(k, n)
    _softmax_transposed(Z, P, work[k * n:(k + 1) * n], tot)
    total = 0.0
    for i in range(n):
        w = sw[i] if weighted else 1.0
        row = 0.0
        for j in range(k):
            p = P[j, i]
            y = Y[i, j]
            # xlogy is 0 where y is (most of a one-hot row), unless p is NaN: no log
            if y != 0.0 or p != p:
                row -= _xlogy(y, _clip(p, eps))
            d = p - y
            if weighted:
                d = d * w
            dZ[i, j] = d / sw_sum
        total += w * row
    return total


@serial
def output_loss_grad(out_code, Z, Y, sw, eps, dZ, work, tot):
    """scikit-learn's loss of the outputs Z (n, k) against Y (n, k) for the output
    function ``out_code`` (module doc), as a float64; its gradient w.r.t. Z goes to
    dZ (n, k), which must not be Z. sw: (n,) sample weights, or an empty array for
    none; eps: the clipping bound of the log losses (np.finfo(dtype).eps); work and
    tot: softmax's workspaces (``softmax_workspaces(n, k, Z.dtype)`` or larger; unused
    by the other output functions, which may pass empty arrays).

    exp is elementary.exp (a few units in the last place, vectorisable; the C
    library's, one call per element, cost more than the rest of the pass), so P
    agrees with numpy's to rounding. One loop per output function, each free of
    branches on it."""
    n, k = Z.shape
    weighted = sw.shape[0] == n and n > 0
    sw_sum = weight_sum(sw, n)
    if out_code == SKLEARN_SOFTMAX:
        return _softmax_loss_grad(Z, Y, sw, eps, dZ, work, tot, weighted, sw_sum) / sw_sum
    total = 0.0
    for i in range(n):
        w = sw[i] if weighted else 1.0
        row = 0.0
        if out_code == SKLEARN_LOGISTIC:
            for j in range(k):
                dZ[i, j] = 1.0 / (1.0 + exp(-Z[i, j]))
                c = _clip(dZ[i, j], eps)
                row -= _xlogy(Y[i, j], c) + _xlogy(1.0 - Y[i, j], 1.0 - c)
            _gradient_row(dZ, Y, dZ, i, weighted, w, sw_sum)
        elif out_code == SKLEARN_EXP:
            for j in range(k):
                dZ[i, j] = exp(Z[i, j])
                y = Y[i, j]
                row += _xlogy(y, y / dZ[i, j]) - y + dZ[i, j]
            _gradient_row(dZ, Y, dZ, i, weighted, w, sw_sum)
        else:   # SKLEARN_IDENTITY
            for j in range(k):
                d = Y[i, j] - Z[i, j]
                row += 0.5 * d * d
            _gradient_row(Z, Y, dZ, i, weighted, w, sw_sum)
        total += w * row
    if out_code == SKLEARN_IDENTITY:
        return total / (sw_sum * k)
    return total / sw_sum


@scalar
def _weight_squares(params, grads, sizes, w_off, scale, add):
    """l2_penalty; with ``add`` false grads is left alone (only the sum is returned)."""
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
            if add:
                grads[i] += scale * w0
                grads[i + 1] += scale * w1
                grads[i + 2] += scale * w2
                grads[i + 3] += scale * w3
            i += 4
        while i < stop:
            w0 = params[i]
            s0 += w0 * w0
            if add:
                grads[i] += scale * w0
            i += 1
    return (s0 + s1) + (s2 + s3)


@serial
def l2_penalty(params, grads, sizes, w_off, scale):
    """grads[W_l] += scale * params[W_l] for every layer l's weights (biases untouched,
    as scikit-learn's alpha); returns the sum of the squared weights as a float64.
    params, grads: the flat buffers (n_params,); sizes (L+1,) and w_off (L,): the
    network's layout (fastbp/layout.py)."""
    return _weight_squares(params, grads, sizes, w_off, scale, True)


@scalar
def l2_slot(opt_code, hparams):
    """The entry of hparams holding the optimizer's coupled (L2) weight decay, which
    adds decay * p to the gradient before the update exactly as l2_penalty adds scale
    * W, when it is off: there the epoch folds alpha's penalty into the update
    (``update_with_penalty``). -1 where it cannot: AdamW's decay is decoupled, a decay
    of the caller's is on, or clipping needs the whole gradient first."""
    if hparams[HP_MAX_GRAD_NORM] > 0.0:
        return -1
    if opt_code == SGD:
        slot = HP_SGD_WEIGHT_DECAY
    elif opt_code == ADAM:
        slot = HP_ADAM_WEIGHT_DECAY
    elif opt_code == RMSPROP:
        slot = HP_RMSPROP_WEIGHT_DECAY
    else:
        return -1
    return slot if hparams[slot] == 0.0 else -1


@serial
def update_with_penalty(opt_code, params, grads, state, hparams, step, slot, scale,
                        sizes, w_off, b_off):
    """optim.optimizer_update (no clipping) with l2_penalty's ``grads[W] += scale * W``
    folded in: each layer's W is updated with hparams[slot] (``l2_slot``) set to scale,
    its b with it at 0 (where it is left). The same arithmetic as the penalty then the
    update, in one pass over the weights instead of two (the penalty's pass was 3% of
    a digits step); float32 gradients skip one rounding to float32 on the way.
    Returns how many parameters it left NaN or infinite."""
    bad = 0
    for l in range(w_off.shape[0]):
        w_end = w_off[l] + sizes[l] * sizes[l + 1]
        hparams[slot] = scale
        bad += update_span(opt_code, params, grads, state, hparams, step, 1.0, w_off[l],
                           w_end)
        hparams[slot] = 0.0
        bad += update_span(opt_code, params, grads, state, hparams, step, 1.0, b_off[l],
                           b_off[l] + sizes[l + 1])
    return bad


@scalar
def adam_eps_at(eps, beta2, step):
    """The eps that makes torch's Adam update (optim.py) scikit-learn's at step
    ``step``: scikit-learn divides by sqrt(v) + eps, torch by sqrt(v) / sqrt(1 -
    beta2^t) + eps (fastbp/_sklearn_solvers.py)."""
    # pow of two doubles, as Python's float ** int (an integer exponent would let LLVM
    # use repeated multiplication, which rounds differently)
    return eps / math.sqrt(1.0 - math.pow(beta2, float(step)))


@scalar
def _gather(rows, a, m, X, Y, sw, Xb, Yb, swb):
    """Rows rows[a:a+m] of X, Y (and sw, when not empty) into the first m rows of the
    workspaces Xb, Yb (and swb)."""
    for i in range(m):
        r = rows[a + i]
        for j in range(X.shape[1]):
            Xb[i, j] = X[r, j]
        for j in range(Y.shape[1]):
            Yb[i, j] = Y[r, j]
        if sw.shape[0] > 0:
            swb[i] = sw[r]


@serial
def forward_transposed(act_set, params, sizes, w_off, b_off, act_codes, slopes,
                       act_cum, pre_cum, X, acts, pres, WT):
    """network.forward_for (its arguments, then WT), except that every layer whose
    product stays on one thread (blocks.PARALLEL_MIN_FLOPS) and whose weights fit in
    WT (flat, of params' dtype, reused layer after layer: ``transposed_size``) goes
    through linear.linear_forward_transposed. An empty WT: forward_for's products."""
    batch = X.shape[0]
    out = X
    for l in range(act_codes.shape[0]):
        n_in, n_out = sizes[l], sizes[l + 1]
        if (WT.shape[0] < n_in * n_out
                or 2 * batch * n_in * n_out >= PARALLEL_MIN_FLOPS):
            out = _layer_forward(act_set, l, params, sizes, w_off, b_off, act_codes,
                                 slopes, act_cum, pre_cum, X, acts, pres)
            continue
        W, b = _weight_views(l, params, sizes, w_off, b_off)
        A, S = _output_views(l, batch, sizes, act_cum, pre_cum, acts, pres)
        layer_in = _layer_input(l, X, batch, sizes, act_cum, pre_cum, acts, pres)
        linear_forward_transposed(act_set, layer_in, W,
                                  WT[:n_in * n_out].reshape(n_in, n_out), b,
                                  act_codes[l], slopes[l], S, A)
        out = A
    return out


def transposed_size(sizes, batch):
    """The length of forward_transposed's WT for minibatches of up to ``batch`` rows
    of a network of widths ``sizes``: the largest weight matrix of the layers it
    transposes (0: none)."""
    return max([n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:])
                if 2 * batch * n_in * n_out < PARALLEL_MIN_FLOPS], default=0)


@functools.lru_cache(maxsize=None)
def sklearn_passes(act_set):
    """scikit-learn's training epoch compiled for the activation set ``act_set``
    (kernels/cpu/network.py, ``passes``): a namespace with ``train_epoch``.

    train_epoch(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                pre_cum, out_code, X, Y, sw, rows, batch_size, eps, alpha, Xb, Yb, swb,
                acts, pres, dbuf, WT, work, tot, opt_code, opt_state, opt_hparams,
                first_step, adam_eps, losses) -> (steps run, nonfinite)

    The minibatches are rows[0:batch_size], rows[batch_size:2 batch_size], ... (the
    last may be smaller) of X (N, sizes[0]), Y (N, sizes[-1]) and sw (N,) (or empty:
    no sample weights), gathered into the workspaces Xb (batch_size, sizes[0]), Yb
    (batch_size, sizes[-1]) and swb (batch_size,). For each: forward through the
    network (``forward_transposed``, WT its workspace), ``output_loss_grad`` into
    dbuf (work and tot its workspaces for batch_size rows), backward (grads),
    ``l2_penalty`` with scale alpha / sum(sw) (none for alpha == 0; the loss gains
    alpha * sum(W ** 2) / (2 sum(sw))), then the optimizer's update
    (optim.optimizer_update) as step first_step + i, the penalty folded into it
    where the optimizer allows (``l2_slot``, ``update_with_penalty``); with adam_eps
    > 0, scikit-learn's Adam: hparams' eps is first set to ``adam_eps_at(adam_eps,
    beta2, step)``. Each minibatch's loss before its update
    goes to losses (n_batches,) float64. Stops after the first update that leaves
    parameters NaN or infinite and returns how many steps ran and how many parameters
    that update spoiled (0: none). acts, pres and dbuf: the network's workspaces for
    batch_size rows.

    One call per epoch: each call into compiled code costs microseconds of argument
    checks and each numpy row gather about ten, together more than the loss pass of a
    small network's minibatch.
    """
    @serial
    def train_epoch(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                    pre_cum, out_code, X, Y, sw, rows, batch_size, eps, alpha, Xb, Yb,
                    swb, acts, pres, dbuf, WT, work, tot, opt_code, opt_state,
                    opt_hparams, first_step, adam_eps, losses):
        n_rows = rows.shape[0]
        n_batches = (n_rows + batch_size - 1) // batch_size
        k = Y.shape[1]
        for b in range(n_batches):
            a = b * batch_size
            m = min(batch_size, n_rows - a)
            _gather(rows, a, m, X, Y, sw, Xb, Yb, swb)
            X_b, Y_b = Xb[:m], Yb[:m]
            sw_b = swb[:m] if sw.shape[0] > 0 else sw
            out = forward_transposed(act_set, params, sizes, w_off, b_off, act_codes,
                                     slopes, act_cum, pre_cum, X_b, acts, pres, WT)
            loss = output_loss_grad(out_code, out, Y_b, sw_b, eps,
                                    dbuf[:m * k].reshape(m, k), work, tot)
            backprop_for(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                         act_cum, pre_cum, X_b, acts, pres, dbuf, dbuf[:0].reshape(0, 0))
            step = first_step + b
            if adam_eps > 0.0:
                opt_hparams[HP_ADAM_EPS] = adam_eps_at(adam_eps, opt_hparams[HP_ADAM_BETA2],
                                                       step)
            slot = l2_slot(opt_code, opt_hparams) if alpha != 0.0 else -1
            scale = 0.0
            if alpha != 0.0:
                sw_sum = weight_sum(sw_b, m)
                scale = alpha / sw_sum
                if slot < 0:
                    squares = l2_penalty(params, grads, sizes, w_off, scale)
                else:   # the penalty's gradient is added in the update
                    squares = _weight_squares(params, grads, sizes, w_off, scale, False)
                loss += 0.5 * alpha * squares / sw_sum
            if slot < 0:
                nonfinite = optimizer_update(opt_code, params, grads, opt_state,
                                             opt_hparams, step)
            else:
                nonfinite = update_with_penalty(opt_code, params, grads, opt_state,
                                                opt_hparams, step, slot, scale, sizes,
                                                w_off, b_off)
            losses[b] = loss
            if nonfinite:
                return b + 1, nonfinite
        return n_batches, 0

    return SimpleNamespace(act_set=act_set, train_epoch=train_epoch)
