"""Optimizer updates on the GPU (numba.cuda twin of kernels/cpu/optim.py): one fused
pass over the flat parameter, gradient and state device arrays, same formulas (see the
CPU module's docstring: torch.optim's algorithms, clipping by global L2 norm folded in
as a scalar factor, float64 arithmetic per element, state rounded to the buffer dtype
before further use).

    optimizer_update(opt_code, params, grads, state, hparams, step)
        opt_code  int, kernels.codes.OPTIMIZERS (SGD, ADAM, ADAMW, RMSPROP)
        params    (n,) float32/float64 device array, updated in place
        grads     (n,) same dtype, read only
        state     (k, n) same dtype device array, the optimizer's state rows
        hparams   (m,) float64 host array (numpy), layout in codes.py
        step      int, 1 for the first update
        raises    ValueError (codes.UNKNOWN_OPTIMIZER) for an opt_code outside
                  codes.OPTIMIZERS, before any launch, as the CPU twin
        returns   int, how many parameters the update left NaN or infinite (0: all
                  finite), counted by the update kernels into a one-element int32
                  device counter (the calling thread's, reduce.scratch)

The signatures are the CPU twins': the gradient norm's partial sums and the
non-finite counter are the launchers' own scratch (reduce.scratch). The update
kernels read their scalar hyperparameters (learning rate, momentum, betas, ...) from
a small float64 device array (plan.DeviceScalars: a launch plan's own, or the calling
thread's for an update launched alone), written by one one-thread launch only when
they change, and the step number that Adam's bias corrections need from another
(``steps[STEP]``: a launch plan's RingCursor, advanced on the device;
``step_counter`` for an update launched alone): a schedule that changes the learning
rate changes no launch argument, so a CUDA graph of the step stays valid. Clipping
needs the gradient norm: a block-reduced sum of squares. ``optimizer_update`` reads its
few partials back to the host; the training step's plan instead turns them into the
factor on the device (``clip_scale_into``), and the update kernels read the factor from
a one-element device array (``scale``), so a clipped step waits for nothing.
"""
import functools
import math

import numba
import numpy as np
from numba import cuda

from .. import codes
from ._jit import kernel
from ._launch import blocks, config, is_recording, launch
from .reduce import _held, block_sum, scratch

STEP = 1   # the entry of a steps array that holds the step number (plan.RingCursor's)


@functools.lru_cache(maxsize=None)
def _sum_squares_kernel(block):
    NT = block

    @kernel
    def sum_squares(x, partials):
        tid = cuda.threadIdx.x
        total = 0.0
        for i in range(cuda.grid(1), x.shape[0], cuda.gridDim.x * NT):
            v = numba.float64(x[i])
            total += v * v
        part = cuda.shared.array(NT, numba.float64)
        part[tid] = total
        block_sum(part, tid)
        if tid == 0:
            partials[cuda.blockIdx.x] = part[0]

    return sum_squares


def grad_norm(grads):
    """Global L2 norm of grads (n,) as a float, summed in float64 (block reduction)."""
    tpb = config.block
    partials = scratch("partials")
    nblocks = min(blocks(grads.shape[0], tpb), config.max_reduce_blocks, partials.shape[0])
    launch(_sum_squares_kernel(tpb), nblocks, tpb, (grads, partials))
    return math.sqrt(float(partials[:nblocks].copy_to_host().sum()))


def clip_scale(grads, max_norm):
    """min(1, max_norm / (norm + 1e-6)); 1.0 when max_norm <= 0 or the norm is NaN."""
    if max_norm <= 0.0:
        return 1.0
    coef = max_norm / (grad_norm(grads) + 1e-6)
    return coef if coef < 1.0 else 1.0


@kernel
def _clip_factor_kernel(partials, nblocks, max_norm, scale):
    """scale[0] = clip_scale's factor from the sum of squares in partials[:nblocks]
    (one thread; the same expression as clip_scale, so NaN gives 1.0)."""
    if cuda.grid(1) == 0:
        total = 0.0
        for i in range(nblocks):
            total += partials[i]
        coef = max_norm / (math.sqrt(total) + 1e-6)
        scale[0] = coef if coef < 1.0 else 1.0


def clip_scale_into(grads, max_norm, partials, scale):
    """clip_scale computed on the device into the one-element float64 device array
    ``scale``, which the update kernels read: nothing comes back to the host, so a
    clipped step needs no synchronisation. ``max_norm`` > 0; ``partials`` float64
    scratch of the sum of squares."""
    tpb = config.block
    nblocks = min(blocks(grads.shape[0], tpb), config.max_reduce_blocks, partials.shape[0])
    launch(_sum_squares_kernel(tpb), nblocks, tpb, (grads, partials))
    launch(_clip_factor_kernel, 1, 1, (partials, nblocks, float(max_norm), scale))


def new_scale(value=1.0):
    """A one-element float64 device array holding the clipping factor ``value`` (the
    ``scale`` argument of the update launchers below)."""
    return cuda.to_device(np.full(1, value, np.float64))


@cuda.jit(device=True)
def _count_nonfinite(nonfinite, params, i):
    """Add 1 to the counter nonfinite[0] when the stored params[i] is NaN or infinite
    (x - x is NaN exactly then), as the CPU update loops count."""
    p = params[i]
    if not (p - p == 0.0):
        cuda.atomic.add(nonfinite, 0, 1)


# The update kernels read their scalar hyperparameters from ``hp``, a float64 device
# array written by the host when they change (plan.DeviceScalars), in the order
# launch_update sets them (each launcher below lists its kernel's): a learning rate
# that a schedule changes then changes no launch argument, so a CUDA graph of the step
# stays valid.
@kernel
def _sgd_kernel(nonfinite, params, grads, hp):
    i = cuda.grid(1)
    if i < params.shape[0]:
        lr = hp[0]
        params[i] = params[i] - lr * grads[i]
        _count_nonfinite(nonfinite, params, i)


@kernel
def _sgd_weight_decay_kernel(nonfinite, params, grads, scale, hp):
    i = cuda.grid(1)
    if i < params.shape[0]:
        lr, weight_decay = hp[0], hp[1]
        p = params[i]
        params[i] = p - lr * (scale[0] * grads[i] + weight_decay * p)
        _count_nonfinite(nonfinite, params, i)


@kernel
def _sgd_momentum_kernel(nonfinite, params, grads, buf, scale, hp, nesterov, first):
    i = cuda.grid(1)
    if i < params.shape[0]:
        lr, momentum, dampening, weight_decay = hp[0], hp[1], hp[2], hp[3]
        p = params[i]
        g = scale[0] * grads[i] + weight_decay * p
        if first:
            buf[i] = g
        else:
            buf[i] = momentum * buf[i] + (1.0 - dampening) * g
        b = buf[i]
        if nesterov:
            params[i] = p - lr * (g + momentum * b)
        else:
            params[i] = p - lr * b
        _count_nonfinite(nonfinite, params, i)


@kernel
def _adam_kernel(nonfinite, params, grads, m, v, vmax, scale, hp, steps, amsgrad):
    i = cuda.grid(1)
    if i < params.shape[0]:
        lr, beta1, beta2, eps, l2, shrink = hp[0], hp[1], hp[2], hp[3], hp[4], hp[5]
        # the bias corrections of step t = steps[STEP], read on the device so that the
        # launch's arguments stay the same from one step to the next (a CUDA graph of
        # the step stays valid)
        t = numba.float64(steps[STEP])
        step_size = lr / (1.0 - math.pow(beta1, t))
        bias2_sqrt = math.sqrt(1.0 - math.pow(beta2, t))
        p = params[i]
        g = scale[0] * grads[i]
        if l2 != 0.0:
            g = g + l2 * p
        if shrink != 1.0:
            p = p * shrink
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * (g * g)
        vi = v[i]
        if amsgrad:
            vmax[i] = max(vmax[i], vi)
            vi = vmax[i]
        params[i] = p - step_size * m[i] / (math.sqrt(vi) / bias2_sqrt + eps)
        _count_nonfinite(nonfinite, params, i)


@kernel
def _rmsprop_kernel(nonfinite, params, grads, square_avg, grad_avg, buf, scale, hp,
                    centered):
    i = cuda.grid(1)
    if i < params.shape[0]:
        lr, alpha, eps, weight_decay, momentum = hp[0], hp[1], hp[2], hp[3], hp[4]
        p = params[i]
        g = scale[0] * grads[i]
        if weight_decay != 0.0:
            g = g + weight_decay * p
        square_avg[i] = alpha * square_avg[i] + (1.0 - alpha) * (g * g)
        if centered:
            grad_avg[i] = alpha * grad_avg[i] + (1.0 - alpha) * g
            a = grad_avg[i]
            denom = math.sqrt(square_avg[i] - a * a) + eps
        else:
            denom = math.sqrt(square_avg[i]) + eps
        if momentum > 0.0:
            buf[i] = momentum * buf[i] + g / denom
            params[i] = p - lr * buf[i]
        else:
            params[i] = p - lr * g / denom
        _count_nonfinite(nonfinite, params, i)


@kernel
def _divide_kernel(x, divisor):
    i = cuda.grid(1)
    if i < x.shape[0]:
        x[i] = x[i] / divisor


def divide_inplace(x, divisor):
    """x /= divisor in place, for an (n,) float32/float64 device array: an
    all-reduced gradient sum divided by the number of ranks (fastbp.distributed), as
    numpy divides the host buffer (the float64 quotient rounded once to x's dtype is
    the correctly rounded quotient)."""
    if x.shape[0]:
        launch(_divide_kernel, *_grid(x), (x, float(divisor)))


def _grid(params):
    tpb = config.block
    return blocks(params.shape[0], tpb), tpb


def new_counter():
    """A zeroed one-element int32 device counter for the update kernels' non-finite
    count (``nonfinite`` of the launchers below). Between calls it holds 0: the kernels
    only add to it when a value is NaN or infinite, and ``_read_count`` zeroes it again
    only then, so a finite step costs one 4-byte read and no write."""
    return cuda.to_device(np.zeros(1, np.int32))


def _read_count(nonfinite):
    """The counter's value, leaving it at 0 for the next update."""
    count = int(nonfinite.copy_to_host()[0])
    if count:
        nonfinite.copy_to_device(np.zeros(1, np.int32))
    return count


def sgd_update(params, grads, lr):
    """Plain SGD in place: params -= lr * grads. params, grads: (n,) device arrays.
    Returns how many parameters it left NaN or infinite (as the CPU twin)."""
    nonfinite = scratch("counter")
    hp = _standalone_scalars()
    hp.set((lr,))
    _sgd_plain_update(nonfinite, params, grads, hp)
    return _read_count(nonfinite)


def _flushed(hp):
    """``hp``'s device array, its pending values written first unless this thread is
    recording these launches for a plan, whose ``run`` writes its own DeviceScalars
    before the step (so only a plan's own may be recorded: an update launched alone
    under ``recording()`` would keep its old values)."""
    if not is_recording():
        hp.flush()
    return hp.array


def _sgd_plain_update(nonfinite, params, grads, hp):
    if params.shape[0]:
        launch(_sgd_kernel, *_grid(params), (nonfinite, params, grads, _flushed(hp)))


def sgd_weight_decay_update(nonfinite, params, grads, scale, hp):
    """SGD without momentum: p -= lr * (scale * g + weight_decay * p); ``hp`` holds
    (lr, weight_decay)."""
    if params.shape[0]:
        launch(_sgd_weight_decay_kernel, *_grid(params),
               (nonfinite, params, grads, scale, _flushed(hp)))


def sgd_momentum_update(nonfinite, params, grads, buf, scale, hp, nesterov, first):
    """SGD with momentum / Nesterov (CPU twin's formulas); buf (n,) device row; ``hp``
    holds (lr, momentum, dampening, weight_decay)."""
    if params.shape[0]:
        launch(_sgd_momentum_kernel, *_grid(params),
               (nonfinite, params, grads, buf, scale, _flushed(hp), bool(nesterov),
                bool(first)))


def adam_update(nonfinite, params, grads, m, v, vmax, scale, hp, amsgrad, steps):
    """Adam or AdamW; vmax used only with amsgrad; ``hp`` holds (lr, beta1, beta2, eps,
    l2, shrink) (AdamW's decay is the shrink 1 - lr * weight_decay, Adam's the l2
    term: launch_update);
    ``steps``: an int64 device array whose entry STEP holds the step number t (1 for
    the first update), read by the kernel (``step_counter``)."""
    if params.shape[0]:
        launch(_adam_kernel, *_grid(params),
               (nonfinite, params, grads, m, v, vmax, scale, _flushed(hp), steps,
                bool(amsgrad)))


def rmsprop_update(nonfinite, params, grads, square_avg, grad_avg, buf, scale, hp,
                   centered):
    """RMSprop; grad_avg used only when centered, buf only when momentum > 0; ``hp``
    holds (lr, alpha, eps, weight_decay, momentum)."""
    if params.shape[0]:
        launch(_rmsprop_kernel, *_grid(params),
               (nonfinite, params, grads, square_avg, grad_avg, buf, scale, _flushed(hp),
                bool(centered)))


def check_optimizer(opt_code):
    """Raise ValueError unless ``opt_code`` is one of codes.OPTIMIZERS (the CPU twin's
    check, made before anything is launched)."""
    if not 0 <= opt_code < len(codes.OPTIMIZERS):
        raise ValueError(codes.UNKNOWN_OPTIMIZER + str(opt_code))


def optimizer_update(opt_code, params, grads, state, hparams, step):
    """Dispatch to the update of ``opt_code``; returns how many parameters it left NaN
    or infinite. See the module docstring."""
    check_optimizer(opt_code)
    scale = new_scale(clip_scale(grads, float(hparams[codes.HP_MAX_GRAD_NORM])))
    nonfinite = scratch("counter")
    # only Adam reads the step from the device: the others need no copy of it there
    steps = step_counter(step) if opt_code in (codes.ADAM, codes.ADAMW) else None
    launch_update(opt_code, params, grads, [state[r] for r in range(state.shape[0])],
                  hparams, step, steps, scale, nonfinite, _standalone_scalars())
    return _read_count(nonfinite)


def step_counter(step):
    """The calling thread's int64 steps array (reduce.scratch) holding ``step`` at
    STEP, for an update launched outside a launch plan (the plan keeps its own on the
    device, advanced by the step's record)."""
    steps = scratch("steps")
    steps.copy_to_device(np.array([0, step], np.int64))
    return steps


def _standalone_scalars():
    """The calling thread's DeviceScalars (plan.py) for updates launched outside a
    launch plan, per GPU (reduce._held); a plan has its own, which its graph holds."""
    from .plan import DeviceScalars
    return _held(("update scalars",), DeviceScalars)


def launch_update(opt_code, params, grads, rows, hparams, step, steps, scale, nonfinite,
                  hp):
    """Launch the update of ``opt_code``; ``scale``: the clipping factor as a
    one-element float64 device array (``new_scale``, or written by ``clip_scale_into``
    on the device), read by the kernels; ``rows``: the state's rows as (n,) device
    arrays (a launch plan keeps them, so a step builds no views); ``step``: the step
    number, and ``steps``: an int64 device array holding it at STEP, which Adam reads
    (the others may pass None; SGD's momentum reads ``step`` for its first step only);
    ``hp``: a plan.DeviceScalars that takes the kernel's scalar hyperparameters from
    ``hparams`` (written to the device before the launch, or, while a plan records,
    before the plan's step). Adds the non-finite count to ``nonfinite[0]``; reads
    nothing back."""
    lr = float(hparams[codes.HP_LR])
    clipping = hparams[codes.HP_MAX_GRAD_NORM] > 0.0
    if opt_code == codes.SGD:
        momentum = float(hparams[codes.HP_SGD_MOMENTUM])
        weight_decay = float(hparams[codes.HP_SGD_WEIGHT_DECAY])
        if momentum != 0.0:
            hp.set((lr, momentum, hparams[codes.HP_SGD_DAMPENING], weight_decay))
            sgd_momentum_update(nonfinite, params, grads, rows[0], scale, hp,
                                hparams[codes.HP_SGD_NESTEROV] != 0.0, step == 1)
        elif not clipping and weight_decay == 0.0:
            hp.set((lr,))
            _sgd_plain_update(nonfinite, params, grads, hp)
        else:
            hp.set((lr, weight_decay))
            sgd_weight_decay_update(nonfinite, params, grads, scale, hp)
    elif opt_code == codes.ADAM or opt_code == codes.ADAMW:
        amsgrad = hparams[codes.HP_ADAM_AMSGRAD] != 0.0
        vmax = rows[2] if amsgrad else rows[1]
        weight_decay = float(hparams[codes.HP_ADAM_WEIGHT_DECAY])
        decoupled = opt_code == codes.ADAMW
        hp.set((lr, hparams[codes.HP_ADAM_BETA1], hparams[codes.HP_ADAM_BETA2],
                hparams[codes.HP_ADAM_EPS], 0.0 if decoupled else weight_decay,
                1.0 - lr * weight_decay if decoupled else 1.0))
        adam_update(nonfinite, params, grads, rows[0], rows[1], vmax, scale, hp, amsgrad,
                    steps)
    elif opt_code == codes.RMSPROP:
        centered = hparams[codes.HP_RMSPROP_CENTERED] != 0.0
        momentum = float(hparams[codes.HP_RMSPROP_MOMENTUM])
        row = 1
        grad_avg = rows[0]
        if centered:
            grad_avg = rows[row]
            row += 1
        buf = rows[row] if momentum > 0.0 else rows[0]
        hp.set((lr, hparams[codes.HP_RMSPROP_ALPHA], hparams[codes.HP_RMSPROP_EPS],
                hparams[codes.HP_RMSPROP_WEIGHT_DECAY], momentum))
        rmsprop_update(nonfinite, params, grads, rows[0], grad_avg, buf, scale, hp,
                       centered)
    else:
        check_optimizer(opt_code)
