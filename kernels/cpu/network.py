"""Whole-network passes: every layer, the loss and backward in one compiled call.

The network travels as small integer arrays (its *layout*) plus flat buffers:

    params, grads  (n_params,)  every layer's W (out, in) then b (out,), at w_off/b_off
    sizes          (L+1,) int64 widths, sizes[0] = inputs
    act_codes      (L,)   int64 activation code per layer (kernels.codes)
    slopes         (L,)   float64 leaky_relu slope per layer
    act_cum        (L+1,) int64 row offsets: layer l's output A_l is the (batch,
                   sizes[l+1]) view of acts starting at batch*act_cum[l]. Layers with
                   act_cum[l] < act_cum[L] keep their output until backward; the others
                   (checkpointing, fastbp/layout.py) share a scratch region from row
                   act_cum[L] on, and backward recomputes them segment by segment
    pre_cum        (L,)   int64 row offset of layer l's S in ``pres``, or -1 when
                   sigma' comes from the output and S shares A's memory
    acts, pres     flat workspaces of NetworkLayout.act_rows and .pre_rows rows
    dbuf           flat workspace of at least 2*batch*max(sizes): backward ping-pongs the
                   gradient w.r.t. the current layer's output and input between its halves

Python touches each minibatch once; the per-layer loop runs in compiled code.

Compiled functions: the entry points that ``passes`` makes for each activation set
(and optimizer), and the two passes they share that do work, _layer_forward and
_backprop_layers, each compiled once per activation set and dtype and called by the
entries, not inlined into them. With those inlined (numba's ``inline="always"``), every
entry re-copied the whole forward and backward in numba's IR before typing it again:
compiling the general passes for one dtype took 91 s of CPU, 59 s with them compiled
once and called (benchmarks/README.md, "Compile time"); a call between compiled
functions costs nanoseconds against a layer's products. The thin drivers between the
entries and those two (forward_for, loss_for, backprop_for, _backward_update_for,
backward_for, train_step_for, train_epoch_for: calls and loops over calls) are inlined
into the entries: numba compiles a caller with its compiled callees' code linked in, so
a driver compiled on its own cost the LLVM work of everything below it once more (the
default train's cold compile: 10% less CPU inlined; the suite's general passes: 16%
less). The small view helpers stay inlined. The work of a layer's column blocks stays
compiled once in kernels/cpu/linear.py and backward_update.py, shared by every entry.

The training entries (network_backward, network_train_step, network_train_epoch) pass
their arrays on as ``borrowed`` (borrow.py): the hundreds of views and calls below them
then update no reference counts, which took 18% of a 64-64-10 network's compiled
step. They return numbers only, as borrowing requires. network_forward returns a view
of ``acts`` and borrows nothing.
"""
import functools
import os
from types import SimpleNamespace

import numpy as np

from ..codes import HP_MAX_GRAD_NORM, OPTIMIZERS
from .activations import ALL, activation_set
from ._jit import inlined, scalar, serial
from .backward_update import linear_backward_update_for
from .borrow import borrowed
from .linear import linear_forward_for
from .losses import loss_forward_backward
from .optim import check_optimizer, optimizer_update_for


@scalar
def _output_views(l, batch, sizes, act_cum, pre_cum, acts, pres):
    """(A_l, S_l) of layer l as (batch, sizes[l+1]) views; S_l is A_l when not kept."""
    n = sizes[l + 1]
    a0 = batch * act_cum[l]
    A = acts[a0:a0 + batch * n].reshape(batch, n)
    if pre_cum[l] < 0:
        return A, A
    s0 = batch * pre_cum[l]
    return A, pres[s0:s0 + batch * n].reshape(batch, n)


@scalar
def _weight_views(l, buf, sizes, w_off, b_off):
    """(W_l, b_l) of layer l as views into the flat buffer ``buf`` (params or grads)."""
    n_out = sizes[l + 1]
    n_in = sizes[l]
    W = buf[w_off[l]:w_off[l] + n_out * n_in].reshape(n_out, n_in)
    b = buf[b_off[l]:b_off[l] + n_out]
    return W, b


@scalar
def _layer_input(l, X, batch, sizes, act_cum, pre_cum, acts, pres):
    """The input of layer l: X for the first layer, else A_{l-1}."""
    if l == 0:
        return X
    A, _ = _output_views(l - 1, batch, sizes, act_cum, pre_cum, acts, pres)
    return A


@serial
def _layer_forward(act_set, l, params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                   pre_cum, X, acts, pres):
    batch = X.shape[0]
    W, b = _weight_views(l, params, sizes, w_off, b_off)
    A, S = _output_views(l, batch, sizes, act_cum, pre_cum, acts, pres)
    layer_in = _layer_input(l, X, batch, sizes, act_cum, pre_cum, acts, pres)
    linear_forward_for(act_set, layer_in, W, b, act_codes[l], slopes[l], S, A)
    return A


@inlined
def forward_for(act_set, params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                pre_cum, X, acts, pres):
    """network_forward for networks whose activations are in ``act_set``."""
    out = X
    for l in range(act_codes.shape[0]):
        out = _layer_forward(act_set, l, params, sizes, w_off, b_off, act_codes, slopes,
                             act_cum, pre_cum, X, acts, pres)
    return out


@inlined
def loss_for(act_set, params, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
             loss_code, X, labels, targets, acts, pres, dbuf):
    """network_loss for networks whose activations are in ``act_set``."""
    out = forward_for(act_set, params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                      pre_cum, X, acts, pres)
    batch, n = out.shape
    dZ = dbuf[:batch * n].reshape(batch, n)
    return loss_forward_backward(loss_code, out, labels, targets, dZ)


@scalar
def segment_start(l, act_cum):
    """First layer of the checkpoint segment that ends at layer l: walk down while the
    layer below keeps no output of its own (act_cum[j] >= act_cum[L], the scratch)."""
    scratch = act_cum[act_cum.shape[0] - 1]
    s = l
    while s > 0 and act_cum[s - 1] >= scratch:
        s -= 1
    return s


@serial
def _backprop_layers(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                     act_cum, pre_cum, X, acts, pres, dbuf, dX, fuse, opt_code,
                     opt_state, opt_hparams, opt_step):
    """backprop_for; with ``fuse`` true each layer's optimizer update (the arguments
    of optim.optimizer_update, without clipping) runs inside its backward
    (backward_update.py), and the count of parameters it left non-finite is returned
    (0 without ``fuse``)."""
    batch = X.shape[0]
    half = batch * sizes.max()
    want_dX = dX.shape[0] == batch
    cur = 0  # which half of dbuf holds dA of the current layer
    last = act_codes.shape[0] - 1
    bad = 0
    while last >= 0:
        first = segment_start(last, act_cum)
        if last < act_codes.shape[0] - 1:
            # recomputed from the old W: layers below ``last`` are not updated yet
            for l in range(first, last):
                _layer_forward(act_set, l, params, sizes, w_off, b_off, act_codes,
                               slopes, act_cum, pre_cum, X, acts, pres)
        for l in range(last, first - 1, -1):
            n_out = sizes[l + 1]
            n_in = sizes[l]
            dA = dbuf[cur * half:cur * half + batch * n_out].reshape(batch, n_out)
            if l == 0 and want_dX:
                dX_l = dX
            else:
                dX_l = dbuf[(1 - cur) * half:(1 - cur) * half + batch * n_in].reshape(
                    batch, n_in)
            A, S = _output_views(l, batch, sizes, act_cum, pre_cum, acts, pres)
            layer_in = _layer_input(l, X, batch, sizes, act_cum, pre_cum, acts, pres)
            W, _ = _weight_views(l, params, sizes, w_off, b_off)
            dW, db = _weight_views(l, grads, sizes, w_off, b_off)
            # dS overwrites dA in place: dA is not needed once sigma' is applied.
            bad += linear_backward_update_for(
                act_set, dA, A, S, layer_in, W, act_codes[l], slopes[l], dA, dX_l, dW, db,
                l > 0 or want_dX, fuse, opt_code, params, grads, opt_state, opt_hparams,
                opt_step, w_off[l], b_off[l])
            cur = 1 - cur
        last = first - 1
    return bad


@scalar
def _no_optimizer(params):
    """Stand-ins of the optimizer arguments for passes that update nothing:
    (fuse, opt_code, opt_state, opt_hparams, opt_step). ``fuse`` is False, as a bool
    numba types as known only at run time: a literal False would compile a second
    _backprop_layers for these passes (6 s of CPU per dtype and activation set)."""
    opt_code = np.int64(-1)
    return (opt_code >= 0, opt_code, params[:0].reshape(0, 0), np.empty(0, np.float64),
            np.int64(0))


@inlined
def backprop_for(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                 pre_cum, X, acts, pres, dbuf, dX):
    """backprop for networks whose activations are in ``act_set``: backward through
    every layer after network_forward, from the gradient of the loss w.r.t. the
    network's output, which the caller has written into ``dbuf[:batch*sizes[-1]]`` (viewed (batch, sizes[-1])). Fills ``grads``; when dX
    has X's shape it also receives the gradient w.r.t. the input X (pass an empty
    (0, 0) array to skip that product, as training does).

    Goes segment by segment from the last: each segment's scratch layers are first
    recomputed from its kept input (except the last segment's, still in place after
    the forward), then backward runs through the segment. Without checkpointing every
    segment is one layer and nothing is recomputed.
    """
    fuse, opt_code, opt_state, opt_hparams, opt_step = _no_optimizer(params)
    _backprop_layers(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                     act_cum, pre_cum, X, acts, pres, dbuf, dX, fuse, opt_code,
                     opt_state, opt_hparams, opt_step)


@inlined
def _backward_update_for(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                         act_cum, pre_cum, loss_code, X, labels, targets, acts, pres,
                         dbuf, fuse, opt_code, opt_state, opt_hparams, opt_step):
    """Forward, loss and backward (with the fused update when ``fuse``): returns
    (loss, non-finite count of the fused update)."""
    out = forward_for(act_set, params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                      pre_cum, X, acts, pres)
    batch, n_out = out.shape
    dZ = dbuf[:batch * n_out].reshape(batch, n_out)
    loss = loss_forward_backward(loss_code, out, labels, targets, dZ)
    bad = _backprop_layers(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                           act_cum, pre_cum, X, acts, pres, dbuf, dbuf[:0].reshape(0, 0),
                           fuse, opt_code, opt_state, opt_hparams, opt_step)
    return loss, bad


@inlined
def backward_for(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                 pre_cum, loss_code, X, labels, targets, acts, pres, dbuf):
    """network_backward for networks whose activations are in ``act_set``."""
    fuse, opt_code, opt_state, opt_hparams, opt_step = _no_optimizer(params)
    loss, _ = _backward_update_for(act_set, params, grads, sizes, w_off, b_off, act_codes,
                                   slopes, act_cum, pre_cum, loss_code, X, labels, targets,
                                   acts, pres, dbuf, fuse, opt_code, opt_state,
                                   opt_hparams, opt_step)
    return loss


@inlined
def train_step_for(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                   act_cum, pre_cum, loss_code, X, labels, targets, acts, pres, dbuf,
                   opt_code, opt_state, opt_hparams, opt_step):
    """network_train_step for networks whose activations are in ``act_set``: returns
    (loss, nonfinite), the mean loss before the update and how many parameters the
    update left NaN or infinite (0 when all are finite).

    Each layer's update runs inside backward, right after the layer's last use of its
    old W (backward_update.py): one pass over the parameters less, and the gradient
    still in cache. Gradient clipping scales every update by the norm of the whole
    gradient, known only after backward: with it, the update is a separate pass.
    ``opt_code`` is checked by the caller (the entry's ``_opt_code_for``)."""
    fuse = not opt_hparams[HP_MAX_GRAD_NORM] > 0.0
    loss, nonfinite = _backward_update_for(
        act_set, params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
        loss_code, X, labels, targets, acts, pres, dbuf, fuse, opt_code, opt_state,
        opt_hparams, opt_step)
    if not fuse:
        nonfinite = optimizer_update_for(opt_code, params, grads, opt_state, opt_hparams,
                                         opt_step)
    return loss, nonfinite


@inlined
def train_epoch_for(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                    act_cum, pre_cum, loss_code, X, labels, targets, batch_size, acts,
                    pres, dbuf, opt_code, opt_state, opt_hparams, first_step, losses):
    """network_train_epoch for networks whose activations are in ``act_set``:
    consecutive training steps over the rows of X in minibatches of ``batch_size``
    (the last may be smaller), in one call: no return to Python between steps.

    X (n, sizes[0]); labels (n,) or empty; targets (n, sizes[-1]) or empty; the
    workspaces sized for ``batch_size`` rows. Step i uses optimizer step number
    first_step + i. Writes each step's mean loss into losses (n_batches,) float64 and
    returns (steps run, nonfinite): it stops after the first step whose loss is not
    finite or whose update left parameters NaN or infinite (nonfinite of them, 0 when
    the stop was for the loss or there was no stop), so the caller can see where
    training diverged.
    """
    n = X.shape[0]
    n_batches = (n + batch_size - 1) // batch_size
    for i in range(n_batches):
        a = i * batch_size
        b = min(a + batch_size, n)
        lab = labels[a:b] if labels.shape[0] > 0 else labels
        tgt = targets[a:b] if targets.shape[0] > 0 else targets
        loss, nonfinite = train_step_for(act_set, params, grads, sizes, w_off, b_off,
                                         act_codes, slopes, act_cum, pre_cum, loss_code,
                                         X[a:b], lab, tgt, acts, pres, dbuf, opt_code,
                                         opt_state, opt_hparams, first_step + i)
        losses[i] = loss
        if nonfinite or not (loss - loss == 0.0):   # NaN or infinite
            return i + 1, nonfinite
    return n_batches, 0


ANY_OPTIMIZER = -1
_OTHER_OPTIMIZER = ("opt_code: these training passes are compiled for another optimizer "
                    "alone (kernels/cpu/network.py, training_passes)")


@scalar
def _opt_code_for(opt_code, only):
    """The optimizer code a training pass's update runs, inlined at its entry: the
    run-time ``opt_code`` when ``only`` is ANY_OPTIMIZER (ValueError for an unknown
    one); else ``only``, a compile-time constant of the entry (numba prunes the other
    branch), so that only its optimizer's loops are compiled (optim._update_rows_of),
    after a ValueError if ``opt_code`` differs. ``only`` is an int, not a function of
    the closure: numba's cache key of a closure pickles its variables, and a compiled
    function pickles differently in every process."""
    if only < 0:
        check_optimizer(opt_code)
        return opt_code
    if opt_code != only:
        raise ValueError(_OTHER_OPTIMIZER)
    return only


@functools.lru_cache(maxsize=None)
def passes(act_set, optimizer=None):
    """The whole-network passes compiled for the activation set ``act_set`` (the bit
    mask ``activations.activation_set`` of a network's activation codes): a namespace
    with network_forward, network_loss, backprop, network_backward, network_train_step
    and network_train_epoch, each with the arguments of the module-level function of
    that name, for networks whose activations are all in the set (and
    layer_backward_update, for compiling ahead only).

    Each set gets functions of its own, so its machine code holds only its
    activations' loops (compiled on first use, then cached on disk): ``act_set`` is a
    closure variable of the functions below, which numba types as a compile-time
    constant and makes part of their cache key. The module-level functions are the
    passes of ``ALL``, which run any network but compile every activation.

    ``optimizer``: None, or an optimizer code (kernels.codes) whose update alone the
    training passes (network_train_step, network_train_epoch) compile in, likewise as
    a constant; they then raise ValueError for any other ``opt_code`` (results may
    differ from the general passes' by a rounding: SPECIALISED_OPTIMIZERS). With None they
    take any optimizer at run time (and raise ValueError for an unknown code).
    ``training_passes`` chooses. Raises ValueError for an act_set outside (0, ALL] or
    an optimizer code outside kernels.codes.
    """
    act_set = int(act_set)
    if not 0 < act_set <= ALL:
        raise ValueError(f"act_set: expected a bit mask of activation codes in "
                         f"(0, {ALL}], got {act_set}")
    if optimizer is None:
        only = ANY_OPTIMIZER
    else:
        only = int(optimizer)
        if not 0 <= only < len(OPTIMIZERS):
            raise ValueError(f"optimizer: expected None or an optimizer code in "
                             f"[0, {len(OPTIMIZERS)}), got {optimizer}")

    @serial
    def network_forward(params, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
                        X, acts, pres):
        """Forward through every layer; returns the last layer's output (a view of
        acts). X: (batch, sizes[0]) C-contiguous, params' dtype. See the module doc
        for the rest."""
        return forward_for(act_set, params, sizes, w_off, b_off, act_codes, slopes,
                           act_cum, pre_cum, X, acts, pres)

    @serial
    def network_loss(params, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
                     loss_code, X, labels, targets, acts, pres, dbuf):
        """Forward and mean loss (no gradients kept). labels (batch,) int64 for
        softmax_cross_entropy, targets (batch, sizes[-1]) otherwise; the other may be
        empty."""
        return loss_for(act_set, params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                        pre_cum, loss_code, X, labels, targets, acts, pres, dbuf)

    @serial
    def backprop(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
                 X, acts, pres, dbuf, dX):
        """Backward through every layer after network_forward (see backprop_for)."""
        backprop_for(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                     act_cum, pre_cum, X, acts, pres, dbuf, dX)

    @serial
    def network_backward(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum,
                         pre_cum, loss_code, X, labels, targets, acts, pres, dbuf):
        """Forward, loss and backward; fills ``grads`` (same layout as params) and
        returns the mean loss. Arguments as network_loss, plus grads (n_params,)."""
        B = borrowed   # nothing borrowed is returned (borrow.py)
        return backward_for(act_set, B(params), B(grads), B(sizes), B(w_off), B(b_off),
                            B(act_codes), B(slopes), B(act_cum), B(pre_cum), loss_code,
                            B(X), B(labels), B(targets), B(acts), B(pres), B(dbuf))

    @serial
    def network_train_step(params, grads, sizes, w_off, b_off, act_codes, slopes,
                           act_cum, pre_cum, loss_code, X, labels, targets, acts, pres,
                           dbuf, opt_code, opt_state, opt_hparams, opt_step):
        """One training step in one call: forward, loss, backward, optimizer update.

        Arguments as network_backward, then the optimizer's (see
        optim.optimizer_update). Returns (loss, nonfinite): the mean loss before the
        update and how many parameters the update left NaN or infinite.
        """
        B = borrowed   # nothing borrowed is returned (borrow.py)
        return train_step_for(act_set, B(params), B(grads), B(sizes), B(w_off), B(b_off),
                              B(act_codes), B(slopes), B(act_cum), B(pre_cum), loss_code,
                              B(X), B(labels), B(targets), B(acts), B(pres), B(dbuf),
                              _opt_code_for(opt_code, only), B(opt_state),
                              B(opt_hparams), opt_step)

    @serial
    def network_train_epoch(params, grads, sizes, w_off, b_off, act_codes, slopes,
                            act_cum, pre_cum, loss_code, X, labels, targets, batch_size,
                            acts, pres, dbuf, opt_code, opt_state, opt_hparams,
                            first_step, losses):
        """Consecutive training steps over the rows of X in minibatches of
        ``batch_size``, in one call; see train_epoch_for."""
        B = borrowed   # nothing borrowed is returned (borrow.py)
        return train_epoch_for(act_set, B(params), B(grads), B(sizes), B(w_off),
                               B(b_off), B(act_codes), B(slopes), B(act_cum), B(pre_cum),
                               loss_code, B(X), B(labels), B(targets), batch_size,
                               B(acts), B(pres), B(dbuf), _opt_code_for(opt_code, only),
                               B(opt_state), B(opt_hparams), first_step, B(losses))

    @serial
    def layer_backward_update(dA, A, S, X, W, code, slope, dX, dW, db, compute_dX, fuse,
                              opt_code, params, grads, opt_state, opt_hparams, opt_step,
                              w_lo, b_lo):
        """One layer's backward with its fused update, called with the argument types
        _backprop_layers calls it with (dS is dA): never run, only compiled, so that
        a second process can compile the kernels of training's backward while the
        first compiles the forward's (fastbp/warmup.py), and a training step then
        loads them from numba's cache."""
        return linear_backward_update_for(
            act_set, dA, A, S, X, W, code, slope, dA, dX, dW, db, compute_dX, fuse,
            _opt_code_for(opt_code, only), params, grads, opt_state, opt_hparams,
            opt_step, w_lo, b_lo)

    return SimpleNamespace(
        act_set=act_set, optimizer=optimizer, network_forward=network_forward,
        network_loss=network_loss,
        backprop=backprop, network_backward=network_backward,
        network_train_step=network_train_step, network_train_epoch=network_train_epoch,
        layer_backward_update=layer_backward_update)


# A process gives its own passes to the first SPECIALISED_SETS activation sets it meets;
# networks with other sets share the passes of ALL. One set's passes compile in about a
# fifth of the time of ALL's (benchmarks/README.md, "Compile time"), which is what a
# first run (one network) waits for; but each set pays that again, so a process that
# builds networks of many different activation sets (a test suite, a search over
# activations) is better served by compiling ALL once. Results are bit-identical either
# way: the same loops run, only the choice between them is made at compile time.
# FASTBP_SPECIALISED_SETS sets the count for a process and the processes it starts
# (0: every network runs the passes of ALL, which a machine then compiles once for all
# its processes and loads from numba's cache in each new one).
SPECIALISED_SETS_ENV = "FASTBP_SPECIALISED_SETS"


def _specialised_sets():
    """SPECIALISED_SETS from the environment (a count >= 0), else 2; ValueError naming
    the variable for anything else."""
    value = os.environ.get(SPECIALISED_SETS_ENV)
    if value is None:
        return 2
    try:
        count = int(value.strip())
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError(f"{SPECIALISED_SETS_ENV}: expected a count of activation sets "
                         f"(an integer >= 0), got {value!r}")
    return count


SPECIALISED_SETS = _specialised_sets()
_specialised = []


def network_passes(act_codes):
    """The passes for a network whose layers have the activation codes ``act_codes``:
    those of its activation set (``passes``) for the first SPECIALISED_SETS sets this
    process asks for, those of ALL after that."""
    act_set = activation_set(act_codes)
    if act_set not in _specialised:
        if len(_specialised) >= SPECIALISED_SETS:
            return passes(ALL)
        _specialised.append(act_set)
    return passes(act_set)


# Likewise a network's training passes are compiled for the first SPECIALISED_OPTIMIZERS
# optimizers (codes) it is trained with in a process: one optimizer's update compiles
# into the training step instead of every optimizer's, about 3 s less of the default
# train's cold compile (benchmarks/README.md, "Compile time"); the next optimizers share
# passes that take any optimizer at run time. The passes of ALL always do.
# The same formulas run either way, but not always to the same bits: with the code a
# constant LLVM may fuse a multiply-add of Adam's second moment the other way round
# ("contract", kernels/cpu/_jit.py), so some elements can come out one rounding apart
# from the general passes' (seen in 14-16% of the second moment's elements for Adam and
# AdamW in some compile contexts, none in others; tests/test_optim_specialised.py bounds
# it at four roundings of the arrays' largest entries).
SPECIALISED_OPTIMIZERS = 1
_specialised_optimizers = {}


@functools.lru_cache(maxsize=None)
def training_passes(act_set, opt_code):
    """The passes whose network_train_step and network_train_epoch a network of the
    activation set ``act_set`` (``passes(act_set)`` are its passes) trains with the
    optimizer ``opt_code``: compiled for that optimizer alone for the first
    SPECIALISED_OPTIMIZERS codes a process asks for with this set (not for ALL), else
    those of ``passes(act_set)``, which take any optimizer."""
    act_set, opt_code = int(act_set), int(opt_code)
    if act_set == ALL or not 0 <= opt_code < len(OPTIMIZERS):
        return passes(act_set)   # an unknown code: the general passes raise for it
    given = _specialised_optimizers.setdefault(act_set, [])
    if opt_code not in given:
        if len(given) >= SPECIALISED_OPTIMIZERS:
            return passes(act_set)
        given.append(opt_code)
    return passes(act_set, opt_code)


_ALL_PASSES = passes(ALL)
network_forward = _ALL_PASSES.network_forward
network_loss = _ALL_PASSES.network_loss
backprop = _ALL_PASSES.backprop
network_backward = _ALL_PASSES.network_backward
network_train_step = _ALL_PASSES.network_train_step
network_train_epoch = _ALL_PASSES.network_train_epoch
