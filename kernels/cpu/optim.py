"""Optimizer updates: one fused pass over the flat parameter, gradient and state buffers.

Every optimizer is reached through one signature so the compiled training step can call
any of them:

    optimizer_update(opt_code, params, grads, state, hparams, step)
        opt_code  int, kernels.codes.OPTIMIZERS (SGD, ADAM, ADAMW, RMSPROP)
        params    (n,) float32/float64, updated in place
        grads     (n,) same dtype, read only: clipping is folded into the update as a
                  scalar factor, never written back
        state     (k, n) same dtype, the optimizer's state rows (row order: codes.py)
        hparams   (m,) float64, layout in codes.py: [lr, max_grad_norm, ...]
        step      int, 1 for the first update (bias corrections, first momentum step)
        raises    ValueError (codes.UNKNOWN_OPTIMIZER) for an opt_code outside
                  codes.OPTIMIZERS, before anything is updated, as the CUDA twin
        returns   int, how many parameters the update left NaN or infinite (0: all
                  finite). Each update loop keeps the largest exponent field of the
                  values it stores and counts its range again only when that shows a
                  NaN or infinity, so a finite step pays no extra pass over memory.

The formulas are torch.optim's documented algorithms (PyTorch 2.x, maximize=False,
foreach/fused off), applied elementwise; ``g`` is the gradient entry after clipping:

    clipping (every optimizer, when max_norm = hparams[1] > 0), as
    torch.nn.utils.clip_grad_norm_ before optimizer.step():
        norm  = sqrt(sum_i grads[i]^2)           (accumulated in float64)
        scale = min(1, max_norm / (norm + 1e-6)) (1 when clipping is off, or norm NaN)
        g     = scale * grads[i]

    SGD     (lr, mu = momentum, tau = dampening, wd = weight_decay, nesterov)
        g = g + wd * p
        if mu != 0:  b = g                        at step 1
                     b = mu * b + (1 - tau) * g   after
                     g = g + mu * b   if nesterov   else   g = b
        p = p - lr * g

    ADAM    (lr, beta1, beta2, eps, wd, amsgrad); t = step
        g = g + wd * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2
        if amsgrad: vmax = max(vmax, v), and vmax replaces v below
        p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    ADAMW   as ADAM, except that weight decay is decoupled: no "g + wd * p"; instead
        p = p * (1 - lr * wd) first, then the ADAM update of that p

    RMSPROP (lr, alpha, eps, wd, mu = momentum, centered)
        g = g + wd * p
        s = alpha * s + (1 - alpha) * g^2
        if centered: a = alpha * a + (1 - alpha) * g;  d = sqrt(s - a^2) + eps
        else:        d = sqrt(s) + eps
        if mu > 0:   b = mu * b + g / d;  p = p - lr * b
        else:        p = p - lr * g / d

Arithmetic is done in float64 per element (the scalars are float64) and each stored
state value is rounded to the buffer's dtype before it is used further, as PyTorch's
in-place updates do. State is written back before params within an element; every
element is independent, so blocks of elements need no synchronisation. Each update is
written once, over an element range [i0, i1) (or rows of such ranges); ``optimizer_update``
runs it as one range on the calling thread for small networks and as one block per
thread otherwise (blocks.PARALLEL_MIN_ELEMENTS). The training step runs the same ranges
inside backward instead, layer by layer (backward_update.py).
"""
import functools

import numpy as np
from llvmlite import ir
from numba import prange, types, uint64
from numba.extending import intrinsic, overload

from .. import codes
from .blocks import PARALLEL_MIN_ELEMENTS, block_bounds, n_blocks
from ._jit import parallel, scalar, serial


@scalar
def _sum_squares_range(grads, i0, i1):
    total = 0.0
    for i in range(uint64(i0), uint64(i1)):
        g = np.float64(grads[i])
        total += g * g
    return total


@parallel
def _sum_squares_blocks(grads, nblocks):
    total = 0.0
    for blk in prange(nblocks):
        i0, i1 = block_bounds(blk, nblocks, grads.shape[0])
        total += _sum_squares_range(grads, i0, i1)
    return total


@serial
def grad_norm(grads):
    """Global L2 norm of grads (n,) as a float64, summed in float64."""
    n = grads.shape[0]
    nblocks = n_blocks(n, n, PARALLEL_MIN_ELEMENTS)
    if nblocks == 1:
        return np.sqrt(_sum_squares_range(grads, 0, n))
    return np.sqrt(_sum_squares_blocks(grads, nblocks))


@serial
def clip_scale(grads, max_norm):
    """The factor clip_grad_norm_ multiplies grads by: min(1, max_norm / (norm + 1e-6)),
    norm = grad_norm(grads). 1.0 when max_norm <= 0 (clipping off) or norm is NaN."""
    if max_norm <= 0.0:
        return 1.0
    coef = max_norm / (grad_norm(grads) + 1e-6)
    if coef < 1.0:
        return coef
    return 1.0


@scalar
def _nonfinite(x):
    """1 when x is NaN or infinite, else 0. x - x is NaN exactly then (the kernels'
    fastmath flags leave out nnan/ninf, so LLVM may not fold it to 0); a select, not a
    branch, so a loop that counts with it still vectorises."""
    return 0 if x - x == 0.0 else 1


# The update loops do not count non-finite parameters as they go: each keeps the
# largest exponent field it stores (the float's bits masked to its exponent, as an
# integer: a max reduction, one vector instruction an element) and, only where that
# field is all ones (some stored value is NaN or infinite), counts the range again.
# Counting in the loop cost a subtract, a compare and two integer instructions per
# vector: SGD's float32 loop took 0.30 ns an element with it, 0.26 with the maximum
# (benchmarks/README.md, "numba's reference counts, and the update's non-finite count").
@intrinsic
def _exponent_field(typingctx, x):
    """The bits of the float ``x`` that hold its exponent, as an integer of x's width
    (float32: int32, float64: int64): all ones exactly when x is NaN or infinite."""
    if x not in (types.float32, types.float64):
        return None
    width = x.bitwidth
    mask = 0x7F800000 if width == 32 else 0x7FF0000000000000

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], ir.IntType(width))
        return builder.and_(bits, ir.Constant(ir.IntType(width), mask))
    return (types.int32 if width == 32 else types.int64)(x), codegen


@scalar
def _no_exponent(params):
    """The zero of _exponent_field's type for ``params``' dtype: a max's start."""
    return _exponent_field(params.dtype.type(0.0))


@scalar
def _nonfinite_in(params, worst, i0, i1):
    """How many of params[i0:i1] are NaN or infinite, given ``worst``, the largest
    _exponent_field among them: 0 at once unless it is all ones."""
    if worst != _exponent_field(params.dtype.type(np.inf)):
        return 0
    bad = 0
    for i in range(uint64(i0), uint64(i1)):
        bad += _nonfinite(params[i])
    return bad


@scalar
def _sgd_plain_range(params, grads, scale, lr, weight_decay, i0, i1):
    """SGD without momentum: p = p - lr * (g + wd * p)."""
    worst = _no_exponent(params)
    if scale == 1.0:
        # clipping off (or not needed): no multiplication by 1; 0.26 -> 0.23 ns an
        # element, float32. Exact as compiled: LLVM fuses the weight decay's product
        # into the sum either way, fma(wd, p, 1 * g) before and fma(wd, p, g) now
        # (checked bit for bit against acf3404, with and without weight decay and
        # momentum: benchmarks/README.md, "Buffers on 64-byte boundaries", its end)
        for i in range(uint64(i0), uint64(i1)):
            p = params[i]
            params[i] = p - lr * (grads[i] + weight_decay * p)
            worst = max(worst, _exponent_field(params[i]))
    else:
        for i in range(uint64(i0), uint64(i1)):
            p = params[i]
            params[i] = p - lr * (scale * grads[i] + weight_decay * p)
            worst = max(worst, _exponent_field(params[i]))
    return _nonfinite_in(params, worst, i0, i1)


@scalar
def _sgd_momentum_range(params, grads, buf, scale, lr, momentum, dampening,
                        weight_decay, nesterov, first, i0, i1):
    """SGD with momentum (see the module doc); buf (n,) the momentum buffer."""
    take = 1.0 - dampening
    worst = _no_exponent(params)
    for i in range(uint64(i0), uint64(i1)):
        p = params[i]
        g = scale * grads[i] + weight_decay * p
        if first:
            buf[i] = g
        else:
            buf[i] = momentum * buf[i] + take * g
        b = buf[i]
        if nesterov:
            g = g + momentum * b
        else:
            g = b
        params[i] = p - lr * g
        worst = max(worst, _exponent_field(params[i]))
    return _nonfinite_in(params, worst, i0, i1)


@scalar
def _second_moment(vmax, i, v):
    """Adam's second moment as used: v itself (AMSGrad off; vmax is not touched)."""
    return v


@scalar
def _second_moment_amsgrad(vmax, i, v):
    """AMSGrad: the running maximum vmax[i] = max(vmax[i], v), which is used."""
    vmax[i] = max(vmax[i], v)
    return vmax[i]


@scalar
def _adam_range(params, grads, m, v, vmax, second_moment, scale, lr, beta1, beta2, eps,
                weight_decay, decoupled, step, i0, i1):
    """Adam (decoupled=False, weight_decay is L2) or AdamW (decoupled=True). step >= 1.
    ``second_moment`` is _second_moment or _second_moment_amsgrad: passing the function
    compiles one loop for each, and the plain one never stores into vmax (which then
    may be any row: a possible store into an aliased row stops vectorisation)."""
    step_size = lr / (1.0 - beta1 ** step)
    bias2_sqrt = np.sqrt(1.0 - beta2 ** step)
    l2 = 0.0 if decoupled else weight_decay
    shrink = 1.0 - lr * weight_decay if decoupled else 1.0
    worst = _no_exponent(params)
    for i in range(uint64(i0), uint64(i1)):
        p = params[i]
        g = scale * grads[i]
        if l2 != 0.0:
            g += l2 * p
        if shrink != 1.0:
            p = p * shrink
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * (g * g)
        vi = second_moment(vmax, i, v[i])
        params[i] = p - step_size * m[i] / (np.sqrt(vi) / bias2_sqrt + eps)
        worst = max(worst, _exponent_field(params[i]))
    return _nonfinite_in(params, worst, i0, i1)


@scalar
def _rmsprop_range(params, grads, square_avg, grad_avg, buf, scale, lr, alpha, eps,
                   weight_decay, momentum, centered, i0, i1):
    """RMSprop; grad_avg is used only when centered, buf only when momentum > 0."""
    worst = _no_exponent(params)
    for i in range(uint64(i0), uint64(i1)):
        p = params[i]
        g = scale * grads[i]
        if weight_decay != 0.0:
            g += weight_decay * p
        square_avg[i] = alpha * square_avg[i] + (1.0 - alpha) * (g * g)
        if centered:
            grad_avg[i] = alpha * grad_avg[i] + (1.0 - alpha) * g
            a = grad_avg[i]
            denom = np.sqrt(square_avg[i] - a * a) + eps
        else:
            denom = np.sqrt(square_avg[i]) + eps
        if momentum > 0.0:
            buf[i] = momentum * buf[i] + g / denom
            params[i] = p - lr * buf[i]
        else:
            params[i] = p - lr * g / denom
        worst = max(worst, _exponent_field(params[i]))
    return _nonfinite_in(params, worst, i0, i1)


def _update_rows(opt_code, params, grads, state, hparams, step, scale, i0, i1, n_rows,
                 row_stride):
    """update_range's work (compiled code only): the branches of every optimizer for a
    run-time ``opt_code``, of that optimizer alone for a literal one (_update_rows_of)."""
    raise NotImplementedError("compiled code only")


@overload(_update_rows, prefer_literal=True)
def _update_rows_typed(opt_code, params, grads, state, hparams, step, scale, i0, i1,
                       n_rows, row_stride):
    if isinstance(opt_code, types.IntegerLiteral):
        return _update_rows_of(opt_code.literal_value)
    return _update_rows_of(None)


@functools.lru_cache(maxsize=None)
def _update_rows_of(code):
    """The body of update_range with the branches of optimizer ``code`` only (every
    optimizer's for None). The training passes of a network pass its optimizer's code
    as a compile-time constant (kernels/cpu/network.py, ``passes``), so their machine
    code holds one optimizer's loops instead of all five (SGD with and without
    momentum, Adam/AdamW with and without AMSGrad, RMSprop): numba prunes a branch
    whose condition is a constant before typing it, and each compiled function between
    the training step and these loops compiles the loops again (kernels/cpu/_jit.py)."""
    sgd = code is None or code == codes.SGD
    adam = code is None or code == codes.ADAM or code == codes.ADAMW
    rmsprop = code is None or code == codes.RMSPROP

    def impl(opt_code, params, grads, state, hparams, step, scale, i0, i1, n_rows,
             row_stride):
        bad = 0
        lr = hparams[codes.HP_LR]
        if sgd and opt_code == codes.SGD:
            momentum = hparams[codes.HP_SGD_MOMENTUM]
            weight_decay = hparams[codes.HP_SGD_WEIGHT_DECAY]
            # Separate loops, not one with an aliased dummy buffer: a buffer that might
            # be params keeps LLVM from vectorising (its overlap check fails at run time).
            if momentum == 0.0:
                for r in range(n_rows):
                    o = r * row_stride
                    bad += _sgd_plain_range(params, grads, scale, lr, weight_decay,
                                            i0 + o, i1 + o)
                return bad
            dampening = hparams[codes.HP_SGD_DAMPENING]
            nesterov = hparams[codes.HP_SGD_NESTEROV] != 0.0
            for r in range(n_rows):
                o = r * row_stride
                bad += _sgd_momentum_range(params, grads, state[0], scale, lr, momentum,
                                           dampening, weight_decay, nesterov, step == 1,
                                           i0 + o, i1 + o)
            return bad
        if adam and (opt_code == codes.ADAM or opt_code == codes.ADAMW):
            beta1 = hparams[codes.HP_ADAM_BETA1]
            beta2 = hparams[codes.HP_ADAM_BETA2]
            eps = hparams[codes.HP_ADAM_EPS]
            weight_decay = hparams[codes.HP_ADAM_WEIGHT_DECAY]
            decoupled = opt_code == codes.ADAMW
            if hparams[codes.HP_ADAM_AMSGRAD] != 0.0:
                for r in range(n_rows):
                    o = r * row_stride
                    bad += _adam_range(params, grads, state[0], state[1], state[2],
                                       _second_moment_amsgrad, scale, lr, beta1, beta2,
                                       eps, weight_decay, decoupled, step, i0 + o, i1 + o)
                return bad
            for r in range(n_rows):
                o = r * row_stride
                bad += _adam_range(params, grads, state[0], state[1], state[1],
                                   _second_moment, scale, lr, beta1, beta2, eps,
                                   weight_decay, decoupled, step, i0 + o, i1 + o)
            return bad
        if rmsprop and opt_code == codes.RMSPROP:
            centered = hparams[codes.HP_RMSPROP_CENTERED] != 0.0
            momentum = hparams[codes.HP_RMSPROP_MOMENTUM]
            row = 1
            grad_avg = state[0]
            if centered:
                grad_avg = state[row]
                row += 1
            buf = state[0]
            if momentum > 0.0:
                buf = state[row]
            alpha = hparams[codes.HP_RMSPROP_ALPHA]
            eps = hparams[codes.HP_RMSPROP_EPS]
            weight_decay = hparams[codes.HP_RMSPROP_WEIGHT_DECAY]
            for r in range(n_rows):
                o = r * row_stride
                bad += _rmsprop_range(params, grads, state[0], grad_avg, buf, scale, lr,
                                      alpha, eps, weight_decay, momentum, centered,
                                      i0 + o, i1 + o)
            return bad
        # Unreachable for an unknown code: the entry points raise first (check_optimizer
        # for a run-time code; a constant one is checked where it is made constant).
        return bad
    return impl


# compiled once per optimizer code kind (a run-time code, or each literal one), not
# inlined, shared by the one-thread path, the parallel loop and the updates fused into
# backward (backward_update.py). Its row count and stride are passed as int64 values,
# never as constants: a constant argument of a compiled function makes numba compile a
# copy of it for that constant (which is what a literal ``opt_code`` is for).
@serial
def update_range(opt_code, params, grads, state, hparams, step, scale, i0, i1, n_rows,
                 row_stride):
    """The update of ``opt_code`` on elements [i0 + r * row_stride, i1 + r * row_stride)
    for r in range(n_rows) (one range: n_rows 1; a column block of a layer's W: its
    rows), picking the state rows; returns how many of those elements it left
    non-finite. The row loop sits inside each optimizer's branch, so a block of many
    short rows pays the branch and the scalar set-up once."""
    return _update_rows(opt_code, params, grads, state, hparams, step, scale, i0, i1,
                        n_rows, row_stride)


@parallel
def update_blocks(opt_code, params, grads, state, hparams, step, scale, lo, hi, nblocks):
    """The update of elements [lo, hi) in ``nblocks`` blocks across the thread pool;
    returns how many it left non-finite."""
    bad = 0
    for blk in prange(nblocks):
        i0, i1 = block_bounds(blk, nblocks, hi - lo)
        bad += update_range(opt_code, params, grads, state, hparams, step, scale, lo + i0,
                             lo + i1, np.int64(1), np.int64(0))
    return bad


@scalar
def update_span(opt_code, params, grads, state, hparams, step, scale, lo, hi):
    """The update of elements [lo, hi): on the calling thread when they are few
    (blocks.PARALLEL_MIN_ELEMENTS), else in one block per thread. Returns how many it
    left non-finite."""
    nblocks = n_blocks(hi - lo, hi - lo, PARALLEL_MIN_ELEMENTS)
    if nblocks == 1:
        return update_range(opt_code, params, grads, state, hparams, step, scale, lo, hi,
                             np.int64(1), np.int64(0))
    return update_blocks(opt_code, params, grads, state, hparams, step, scale, lo, hi,
                         nblocks)


_N_OPTIMIZERS = len(codes.OPTIMIZERS)


@scalar
def check_optimizer(opt_code):
    """Raise ValueError unless ``opt_code`` is one of codes.OPTIMIZERS. Called once per
    update or training step by its entry points (two integer compares), never inside
    the update loops, which would then skip an unknown code silently."""
    if opt_code < 0 or opt_code >= _N_OPTIMIZERS:
        raise ValueError(codes.UNKNOWN_OPTIMIZER + str(opt_code))


@scalar
def optimizer_update_for(opt_code, params, grads, state, hparams, step):
    """optimizer_update without the check of ``opt_code``, inlined into its callers
    (the training step calls it when clipping, after checking the code at its entry:
    one compiled function less between it and update_range to re-optimise)."""
    scale = clip_scale(grads, hparams[codes.HP_MAX_GRAD_NORM])
    # bounds as run-time values: a constant 0 would compile a second update_range
    lo, hi = block_bounds(0, 1, params.shape[0])
    return update_span(opt_code, params, grads, state, hparams, step, scale, lo, hi)


@serial
def optimizer_update(opt_code, params, grads, state, hparams, step):
    """One update of ``opt_code``, in place; returns how many parameters it left NaN
    or infinite. See the module docstring."""
    check_optimizer(opt_code)
    return optimizer_update_for(opt_code, params, grads, state, hparams, step)


@serial
def sgd_update(params, grads, lr):
    """Plain SGD in place: params -= lr * grads. params, grads: (n,), one float dtype.
    Returns how many parameters it left NaN or infinite."""
    hparams = np.zeros(codes.N_HPARAMS[codes.SGD])
    hparams[codes.HP_LR] = lr
    # step 1 as an int64, not a literal: the literal would compile a second chain of
    # update kernels (sgd_update's compile: 5.8 s before, 0.9 s after, float32, under load)
    return optimizer_update(codes.SGD, params, grads, params[:0].reshape(0, 0), hparams,
                            np.int64(1))
