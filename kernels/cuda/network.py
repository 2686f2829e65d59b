"""Whole-network passes on the GPU (numba.cuda twin of kernels/cpu/network.py).

The same layout as on the CPU (see kernels/cpu/network.py): the small integer arrays
(sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum) are *host* numpy arrays that
drive a host loop; params, grads, X, labels, targets, acts, pres and dbuf are device
arrays, and every per-layer W, b, A, S and gradient is a view into them (no copies, no
allocation). Each layer costs a few kernel launches; nothing comes back to the host
except the loss (a handful of partial sums). Signatures and meaning are the CPU
twins'; the reductions' scratch is the launchers' own (reduce.scratch).
"""
import numpy as np

from .linear import linear_backward, linear_forward
from .losses import loss_forward_backward
from .optim import check_optimizer, optimizer_update

# backprop's dX when no gradient w.r.t. X is wanted: any array whose first extent is
# not the batch's (the CPU twin's convention); never read, so a host one costs nothing
_NO_DX = np.empty((0, 0))


def _output_views(l, batch, sizes, act_cum, pre_cum, acts, pres):
    """(A_l, S_l) of layer l as (batch, sizes[l+1]) views; S_l is A_l when not kept."""
    n = int(sizes[l + 1])
    a0 = batch * int(act_cum[l])
    A = acts[a0:a0 + batch * n].reshape(batch, n)
    if pre_cum[l] < 0:
        return A, A
    s0 = batch * int(pre_cum[l])
    return A, pres[s0:s0 + batch * n].reshape(batch, n)


def _weight_views(l, buf, sizes, w_off, b_off):
    """(W_l, b_l) of layer l as views into the flat device buffer ``buf``."""
    n_out = int(sizes[l + 1])
    n_in = int(sizes[l])
    w0 = int(w_off[l])
    b0 = int(b_off[l])
    return buf[w0:w0 + n_out * n_in].reshape(n_out, n_in), buf[b0:b0 + n_out]


def _layer_input(l, X, batch, sizes, act_cum, pre_cum, acts, pres):
    """The input of layer l: X for the first layer, else A_{l-1}."""
    if l == 0:
        return X
    return _output_views(l - 1, batch, sizes, act_cum, pre_cum, acts, pres)[0]


def _layer_forward(l, params, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
                   X, acts, pres):
    batch = X.shape[0]
    W, b = _weight_views(l, params, sizes, w_off, b_off)
    A, S = _output_views(l, batch, sizes, act_cum, pre_cum, acts, pres)
    layer_in = _layer_input(l, X, batch, sizes, act_cum, pre_cum, acts, pres)
    linear_forward(layer_in, W, b, int(act_codes[l]), float(slopes[l]), S, A)
    return A


def network_forward(params, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
                    X, acts, pres):
    """Forward through every layer; returns the last layer's output (a view of acts).

    X: (batch, sizes[0]) C-contiguous device array of params' dtype.
    """
    out = X
    for l in range(act_codes.shape[0]):
        out = _layer_forward(l, params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                             pre_cum, X, acts, pres)
    return out


def network_loss(params, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
                 loss_code, X, labels, targets, acts, pres, dbuf):
    """Forward and mean loss (no gradients kept), as a float."""
    out = network_forward(params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                          pre_cum, X, acts, pres)
    batch, n = out.shape
    dZ = dbuf[:batch * n].reshape(batch, n)
    return loss_forward_backward(loss_code, out, labels, targets, dZ)


def segment_start(l, act_cum):
    """First layer of the checkpoint segment that ends at layer l (as on the CPU)."""
    scratch = act_cum[-1]
    s = l
    while s > 0 and act_cum[s - 1] >= scratch:
        s -= 1
    return s


def backprop(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
             X, acts, pres, dbuf, dX):
    """Backward through every layer after network_forward, from the loss gradient the
    caller wrote into ``dbuf[:batch*sizes[-1]]``. Fills ``grads``; when dX (device)
    has X's shape it also receives the gradient w.r.t. X (pass an empty (0, 0) array,
    host or device, to skip that product, as on the CPU, whose compiled twin refuses
    None). Segment by segment, recomputing checkpointed layers, exactly as
    kernels/cpu/network.py's backprop."""
    if dX is None:
        raise TypeError("dX: expected an array, (batch, sizes[0]) to receive the "
                        "gradient w.r.t. X or an empty (0, 0) one to skip it, got None")
    batch = X.shape[0]
    half = batch * int(sizes.max())
    n_layers = act_codes.shape[0]
    want_dX = dX.shape[0] == batch
    cur = 0
    last = n_layers - 1
    while last >= 0:
        first = segment_start(last, act_cum)
        if last < n_layers - 1:
            for l in range(first, last):
                _layer_forward(l, params, sizes, w_off, b_off, act_codes, slopes,
                               act_cum, pre_cum, X, acts, pres)
        for l in range(last, first - 1, -1):
            n_out = int(sizes[l + 1])
            n_in = int(sizes[l])
            dA = dbuf[cur * half:cur * half + batch * n_out].reshape(batch, n_out)
            if l == 0 and want_dX:
                dX_l = dX
            else:
                o = (1 - cur) * half
                dX_l = dbuf[o:o + batch * n_in].reshape(batch, n_in)
            A, S = _output_views(l, batch, sizes, act_cum, pre_cum, acts, pres)
            layer_in = _layer_input(l, X, batch, sizes, act_cum, pre_cum, acts, pres)
            W, _ = _weight_views(l, params, sizes, w_off, b_off)
            dW, db = _weight_views(l, grads, sizes, w_off, b_off)
            linear_backward(dA, A, S, layer_in, W, int(act_codes[l]), float(slopes[l]),
                            dA, dX_l, dW, db, l > 0 or want_dX)
            cur = 1 - cur
        last = first - 1


def network_backward(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                     pre_cum, loss_code, X, labels, targets, acts, pres, dbuf):
    """Forward, loss and backward; fills ``grads`` and returns the mean loss."""
    out = network_forward(params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                          pre_cum, X, acts, pres)
    batch, n_out = out.shape
    dZ = dbuf[:batch * n_out].reshape(batch, n_out)
    loss = loss_forward_backward(loss_code, out, labels, targets, dZ)
    backprop(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
             X, acts, pres, dbuf, _NO_DX)
    return loss


def network_train_step(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                       pre_cum, loss_code, X, labels, targets, acts, pres, dbuf,
                       opt_code, opt_state, opt_hparams, opt_step):
    """One training step: forward, loss, backward, optimizer update, all on the device.
    Returns (loss, nonfinite): the mean loss before the update and how many parameters
    the update left NaN or infinite, as kernels/cpu/network.py's twin (which also
    raises ValueError for an unknown ``opt_code`` before anything runs)."""
    check_optimizer(opt_code)
    loss = network_backward(params, grads, sizes, w_off, b_off, act_codes, slopes,
                            act_cum, pre_cum, loss_code, X, labels, targets, acts, pres,
                            dbuf)
    count = optimizer_update(opt_code, params, grads, opt_state, opt_hparams, opt_step)
    return loss, count


def network_train_epoch(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                        pre_cum, loss_code, X, labels, targets, batch_size, acts, pres,
                        dbuf, opt_code, opt_state, opt_hparams, first_step, losses):
    """Consecutive training steps over the rows of X in minibatches of ``batch_size``
    (the last may be smaller), as kernels/cpu/network.py's twin: X (n, sizes[0]),
    labels (n,) int64 or empty, targets (n, sizes[-1]) or empty and opt_state are
    device arrays; opt_hparams and ``losses`` (n_batches,) float64 host arrays. Step i
    uses optimizer step number first_step + i and writes its mean loss into losses[i].
    Returns (steps run, nonfinite), counted up to the first step whose loss is not
    finite or whose update left parameters NaN or infinite (nonfinite of them; 0 when
    the stop was for the loss or there was none); ValueError for an unknown opt_code
    before any launch.

    Unlike the CPU, the GPU does not stop at a divergent step: every step is launched
    without waiting (a launch plan, plan.py), and the losses come back in one copy at
    the end, so the parameters after a divergent epoch hold the later steps' updates as
    well (callers restore them, as MLP.train_epoch does) and losses[steps run:] the
    later steps' losses (the CPU leaves them unwritten); the return value and
    losses[:steps run] are the CPU's."""
    check_optimizer(opt_code)
    from .plan import train_epoch   # plan.py is built on this module's passes
    return train_epoch(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                       pre_cum, loss_code, X, labels, targets, batch_size, acts, pres,
                       dbuf, opt_code, opt_state, opt_hparams, first_step, losses)
