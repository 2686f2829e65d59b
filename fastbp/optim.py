"""Optimizers over a network's flat buffers.

An optimizer is described to compiled code by an integer code, a (k, n_params) state
array and a float64 hyperparameter array (kernels/codes.py gives the layout: entry 0 is
the learning rate, entry 1 the max_grad_norm of gradient clipping, then the optimizer's
own); kernels/cpu/optim.py writes out each update's formula. ``step()`` runs that update
alone; ``net.train_step`` and ``fit`` run it inside the same compiled call as forward and
backward.

Every class takes torch.optim's argument names and follows its documented algorithm, so
a fastbp optimizer and the matching torch.optim one, given the same gradients, make the
same updates. One addition: ``max_grad_norm`` clips the gradients by their global L2
norm first, exactly as ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` before
``optimizer.step()``; the clipping factor is folded into the update pass, so
``net.grads`` is left as backward wrote it.

Every setting lives in ``hparams`` and every buffer in ``state``, so
``state_dict()`` (plain numpy arrays and numbers) captures an optimizer completely and
``optimizer_from_state_dict(net, d)`` rebuilds it.
"""
import inspect
import numbers

import numpy as np

from . import aligned
from . import device as _device
from . import validation
from .concurrency import using
from .kernels import codes


def _nonnegative_float(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number >= 0, got {value!r}")
    value = float(value)
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return value


def _unit_float(name, value):
    """A number in [0, 1)."""
    value = _nonnegative_float(name, value)
    if value >= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")
    return value


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return 1.0 if value else 0.0


def _max_grad_norm(value):
    """None (no clipping) -> 0.0, else a positive float."""
    return 0.0 if value is None else validation.positive_float("max_grad_norm", value)


def host_copy(a, out=None):
    """A numpy copy of ``a`` (a numpy or numba.cuda device array), into ``out`` if given."""
    if hasattr(a, "copy_to_host"):
        return a.copy_to_host(out) if out is not None else a.copy_to_host()
    if out is None:
        return np.array(a, copy=True)
    np.copyto(out, a)
    return out


def copy_back(dst, src):
    """Copy the numpy array ``src`` into ``dst`` (numpy or numba.cuda device array)."""
    if hasattr(dst, "copy_to_device"):
        dst.copy_to_device(src)
    else:
        np.copyto(dst, src)


def _hparam(index, doc, flag=False):
    """A read-only property over hparams[index] (bool for 0/1 flags)."""
    if flag:
        return property(lambda self: bool(self.hparams[index]), doc=doc)
    return property(lambda self: float(self.hparams[index]), doc=doc)


class Optimizer:
    """Base: holds the network, the state rows, the hyperparameters and the step count.

    Subclasses set ``code`` and ``n_state_rows(hparams)`` and pass their
    hyperparameters (the layout of kernels/codes.py: lr, max_grad_norm, ...) to
    ``__init__``. ``state`` is (k, n_params) of the network's dtype, zeros at first;
    ``steps`` counts the updates made (the next update is step ``steps + 1``).
    """

    code = None

    def __init__(self, net, hparams, n_state_rows=0):
        self.net = net
        self.hparams = np.asarray(hparams, dtype=np.float64).copy()
        self.state = aligned.zeros((n_state_rows, net.n_params), net.dtype)
        self.steps = 0

    @staticmethod
    def n_state_rows(hparams):
        """How many (n_params,) state rows an optimizer with these hparams keeps."""
        return 0

    @property
    def name(self):
        return codes.OPTIMIZERS[self.code]

    @property
    def lr(self):
        """The learning rate the next update uses (hparams[0]); schedules change it."""
        return float(self.hparams[codes.HP_LR])

    @lr.setter
    def lr(self, value):
        self.hparams[codes.HP_LR] = validation.positive_float("lr", value)

    @property
    def max_grad_norm(self):
        """Clip gradients to this global L2 norm before each update; None: no clipping."""
        value = float(self.hparams[codes.HP_MAX_GRAD_NORM])
        return value if value > 0 else None

    def compiled_args(self):
        """(code, state, hparams, step) for the step about to run; counts the step."""
        self.steps += 1
        return self.code, self.state, self.hparams, self.steps

    def step(self):
        """Update the network's parameters from the gradients in ``net.grads``.

        Raises fastbp.TrainingDiverged when the update left any parameter NaN or
        infinite; the parameters then hold those values (no copy is kept: see
        fastbp.divergence)."""
        kernels = _device.kernels(getattr(self.net, "device", "cpu"))
        with using(self.net, "step"):
            nonfinite = kernels.optimizer_update(*self.compiled_args_for(self.net))
        if nonfinite:
            from .divergence import TrainingDiverged, describe
            raise TrainingDiverged(
                f"{type(self).__name__}.step: "
                f"{describe(None, nonfinite, self.net.n_params)} at step {self.steps}; "
                f"the parameters now hold those values.", None, None, None, None, nonfinite)

    def compiled_args_for(self, net):
        if net is not self.net:
            raise ValueError("optimizer: it was created for a different network")
        # state lives where the network does (device arrays on "cuda"); it is created
        # or restored on the host and follows the network here, before each update
        # (a numpy array on the CPU is where it belongs: asked first, as the cheapest
        # question on a path taken every step)
        device = getattr(net, "device", "cpu")
        if type(self.state) is not np.ndarray or device != "cpu":
            self.state = _device.move(self.state, device)
        code, state, hparams, step = self.compiled_args()
        return code, net.params, net.grads, state, hparams, step

    # -- saving and restoring -------------------------------------------------------
    def state_dict(self):
        """Everything the optimizer holds, as copies: {"code": int, "name": str,
        "hparams": (m,) float64, "state": (k, n_params) array, "steps": int}."""
        return {"code": int(self.code), "name": self.name, "hparams": self.hparams.copy(),
                "state": _device.to_host(self.state).copy(), "steps": int(self.steps)}

    def load_state_dict(self, d):
        """Restore from ``state_dict()`` output (of an optimizer of the same kind on a
        network with the same number of parameters). Copies the arrays."""
        code = int(d["code"])
        if code != self.code:
            raise ValueError(f"state_dict: expected a {self.name} optimizer's state "
                             f"(code {self.code}), got code {code}")
        hparams = np.asarray(d["hparams"], dtype=np.float64)
        if hparams.shape != self.hparams.shape:
            raise ValueError(f"state_dict: hparams: expected shape {self.hparams.shape}, "
                             f"got {hparams.shape}")
        rows = self.n_state_rows(hparams)
        state = np.asarray(d["state"])
        if state.shape != (rows, self.net.n_params):
            raise ValueError(f"state_dict: state: expected shape "
                             f"{(rows, self.net.n_params)}, got {state.shape}")
        steps = int(d["steps"])
        if steps < 0:
            raise ValueError(f"state_dict: steps: expected >= 0, got {steps}")
        self.hparams = hparams.copy()
        self.state = aligned.empty(state.shape, self.net.dtype)
        self.state[...] = state
        self.steps = steps

    def _settings(self):
        return f"lr={self.lr}"

    def __repr__(self):
        clip = f", max_grad_norm={self.max_grad_norm}" if self.max_grad_norm else ""
        return f"{type(self).__name__}({self._settings()}{clip})"


class SGD(Optimizer):
    """Stochastic gradient descent, torch.optim.SGD's algorithm.

    g = grad (+ weight_decay * p); with momentum: b = momentum * b + (1 - dampening) * g
    (b = g on the first step), then g = g + momentum * b (nesterov) or g = b;
    p -= lr * g. State: one row (the momentum buffer) when momentum != 0.

    ``lr`` defaults to 0.01 (fastbp's historical default; torch's is 0.001).
    """

    code = codes.SGD

    def __init__(self, net, lr=0.01, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, max_grad_norm=None):
        momentum = _nonnegative_float("momentum", momentum)
        dampening = _nonnegative_float("dampening", dampening)
        nesterov = _flag("nesterov", nesterov)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"nesterov: needs momentum > 0 and dampening == 0, got "
                             f"momentum={momentum}, dampening={dampening}")
        hparams = [validation.positive_float("lr", lr), _max_grad_norm(max_grad_norm),
                   momentum, dampening, _nonnegative_float("weight_decay", weight_decay),
                   nesterov]
        super().__init__(net, hparams, self.n_state_rows(hparams))

    @staticmethod
    def n_state_rows(hparams):
        return 1 if hparams[codes.HP_SGD_MOMENTUM] != 0 else 0

    momentum = _hparam(codes.HP_SGD_MOMENTUM, "momentum factor")
    dampening = _hparam(codes.HP_SGD_DAMPENING, "dampening of the momentum")
    weight_decay = _hparam(codes.HP_SGD_WEIGHT_DECAY, "L2 penalty added to the gradient")
    nesterov = _hparam(codes.HP_SGD_NESTEROV, "Nesterov momentum", flag=True)

    def _settings(self):
        s = f"lr={self.lr}"
        if self.momentum:
            s += f", momentum={self.momentum}"
            if self.dampening:
                s += f", dampening={self.dampening}"
            if self.nesterov:
                s += ", nesterov=True"
        if self.weight_decay:
            s += f", weight_decay={self.weight_decay}"
        return s


class Adam(Optimizer):
    """Adam, torch.optim.Adam's algorithm (weight_decay is an L2 term added to the
    gradient; amsgrad keeps the running maximum of the second moment).

    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
    State rows: exp_avg, exp_avg_sq (, max_exp_avg_sq with amsgrad).
    """

    code = codes.ADAM

    def __init__(self, net, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, max_grad_norm=None):
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}") from None
        hparams = [validation.positive_float("lr", lr), _max_grad_norm(max_grad_norm),
                   _unit_float("betas[0]", beta1), _unit_float("betas[1]", beta2),
                   _nonnegative_float("eps", eps),
                   _nonnegative_float("weight_decay", weight_decay),
                   _flag("amsgrad", amsgrad)]
        super().__init__(net, hparams, self.n_state_rows(hparams))

    @staticmethod
    def n_state_rows(hparams):
        return 3 if hparams[codes.HP_ADAM_AMSGRAD] else 2

    @property
    def betas(self):
        return (float(self.hparams[codes.HP_ADAM_BETA1]),
                float(self.hparams[codes.HP_ADAM_BETA2]))

    eps = _hparam(codes.HP_ADAM_EPS, "term added to the denominator")
    weight_decay = _hparam(codes.HP_ADAM_WEIGHT_DECAY, "weight decay")
    amsgrad = _hparam(codes.HP_ADAM_AMSGRAD, "AMSGrad variant", flag=True)

    def _settings(self):
        s = f"lr={self.lr}, betas={self.betas}, eps={self.eps}"
        if self.weight_decay:
            s += f", weight_decay={self.weight_decay}"
        if self.amsgrad:
            s += ", amsgrad=True"
        return s


class AdamW(Adam):
    """AdamW, torch.optim.AdamW's algorithm: Adam with decoupled weight decay,
    p *= 1 - lr * weight_decay before the Adam update (no L2 term in the gradient).
    weight_decay defaults to 0.01, as in PyTorch."""

    code = codes.ADAMW

    def __init__(self, net, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 amsgrad=False, max_grad_norm=None):
        super().__init__(net, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, max_grad_norm=max_grad_norm)


class RMSprop(Optimizer):
    """RMSprop, torch.optim.RMSprop's algorithm.

    s = alpha s + (1 - alpha) g^2; d = sqrt(s) + eps (centered: sqrt(s - a^2) + eps with
    a = alpha a + (1 - alpha) g); p -= lr * g / d, or with momentum b = momentum b + g / d,
    p -= lr * b. State rows: square_avg (, grad_avg if centered) (, momentum_buffer if
    momentum > 0).
    """

    code = codes.RMSPROP

    def __init__(self, net, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, max_grad_norm=None):
        hparams = [validation.positive_float("lr", lr), _max_grad_norm(max_grad_norm),
                   _unit_float("alpha", alpha), _nonnegative_float("eps", eps),
                   _nonnegative_float("weight_decay", weight_decay),
                   _nonnegative_float("momentum", momentum), _flag("centered", centered)]
        super().__init__(net, hparams, self.n_state_rows(hparams))

    @staticmethod
    def n_state_rows(hparams):
        return (1 + (hparams[codes.HP_RMSPROP_CENTERED] != 0)
                + (hparams[codes.HP_RMSPROP_MOMENTUM] > 0))

    alpha = _hparam(codes.HP_RMSPROP_ALPHA, "smoothing constant")
    eps = _hparam(codes.HP_RMSPROP_EPS, "term added to the denominator")
    weight_decay = _hparam(codes.HP_RMSPROP_WEIGHT_DECAY, "L2 penalty")
    momentum = _hparam(codes.HP_RMSPROP_MOMENTUM, "momentum factor")
    centered = _hparam(codes.HP_RMSPROP_CENTERED, "centered RMSprop", flag=True)

    def _settings(self):
        s = f"lr={self.lr}, alpha={self.alpha}, eps={self.eps}"
        if self.weight_decay:
            s += f", weight_decay={self.weight_decay}"
        if self.momentum:
            s += f", momentum={self.momentum}"
        if self.centered:
            s += ", centered=True"
        return s


OPTIMIZER_CLASSES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def make_optimizer(name, net, **kwargs):
    """An optimizer by name ("sgd", "adam", "adamw", "rmsprop"), with the class's
    keyword arguments (torch.optim's names) and defaults."""
    name = validation.choice("optimizer", name, codes.OPTIMIZERS)
    return OPTIMIZER_CLASSES[name](net, **kwargs)


def optimizer_from_state_dict(net, d):
    """A new optimizer of the kind ``d`` (from ``Optimizer.state_dict()``) describes,
    for ``net``, with its hyperparameters, state and step count."""
    code = int(d["code"])
    if not 0 <= code < len(codes.OPTIMIZERS):
        raise ValueError(f"state_dict: unknown optimizer code {code}")
    cls = OPTIMIZER_CLASSES[codes.OPTIMIZERS[code]]
    hparams = np.asarray(d["hparams"], dtype=np.float64)
    if hparams.shape != (codes.N_HPARAMS[code],):
        raise ValueError(f"state_dict: hparams: expected shape ({codes.N_HPARAMS[code]},) "
                         f"for {codes.OPTIMIZERS[code]}, got {hparams.shape}")
    opt = cls(net, **_constructor_kwargs(cls, net, hparams))
    if not np.array_equal(opt.hparams, hparams):
        raise ValueError(f"state_dict: hparams {hparams.tolist()} are not settings "
                         f"{cls.__name__} makes (it would use {opt.hparams.tolist()})")
    opt.load_state_dict(d)
    return opt


def _constructor_kwargs(cls, net, hparams):
    """The keyword arguments of ``cls(net, ...)`` that give ``hparams``, read through
    the class's own properties, so that rebuilding runs the constructor's checks."""
    shell = cls.__new__(cls)
    Optimizer.__init__(shell, net, hparams, 0)
    names = [name for name in inspect.signature(cls.__init__).parameters
             if name not in ("self", "net")]
    return {name: getattr(shell, name) for name in names}
