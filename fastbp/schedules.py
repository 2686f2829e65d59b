"""Learning-rate schedules, stepped once per epoch (by ``fit``, or by hand).

Each schedule reads the optimizer's learning rate when it is created (``base_lr``) and,
at every ``step()``, writes the learning rate of the next epoch into the optimizer's
``hparams[0]``, which the compiled update reads at every step. The rates are the
closed forms of torch.optim.lr_scheduler's schedules (``last_epoch`` counts the
``step()`` calls made, 0 at creation):

    StepLR(opt, step_size, gamma=0.1)        lr = base_lr * gamma ** (last_epoch // step_size)
    ExponentialLR(opt, gamma)                lr = base_lr * gamma ** last_epoch
    CosineAnnealingLR(opt, T_max, eta_min=0) lr = eta_min + (base_lr - eta_min)
                                                  * (1 + cos(pi * last_epoch / T_max)) / 2
    InverseScaling(opt, power_t=0.5)         lr = base_lr / (last_epoch + 1) ** power_t

InverseScaling is scikit-learn's "invscaling" (learning_rate_init / (t + 1) ** power_t),
here with t counting epochs. Like PyTorch, ``fit`` (or your loop) calls ``step()``
after each epoch's updates; call it after every minibatch instead to schedule per step.
"""
import math
import numbers

import numpy as np

from . import validation
from .kernels import codes
from .optim import Optimizer


class LRSchedule:
    """Base: subclasses define ``lr_at(epoch)``, the learning rate of that epoch."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected a fastbp optimizer, got {optimizer!r}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch):
        raise NotImplementedError

    @property
    def lr(self):
        """The learning rate the optimizer uses now."""
        return self.optimizer.lr

    def get_last_lr(self):
        """[lr], as torch.optim.lr_scheduler's method of the same name."""
        return [self.lr]

    def step(self):
        """Advance one epoch and set the optimizer's learning rate; returns it."""
        self.last_epoch += 1
        lr = float(self.lr_at(self.last_epoch))
        # Written directly: a schedule may reach 0 (cosine annealing to eta_min=0), which
        # the validating ``optimizer.lr`` setter would reject.
        self.optimizer.hparams[codes.HP_LR] = lr
        return lr

    def state_dict(self):
        """{"base_lr": float, "last_epoch": int}."""
        return {"base_lr": float(self.base_lr), "last_epoch": int(self.last_epoch)}

    def load_state_dict(self, d):
        """Restore ``base_lr`` and ``last_epoch`` and set the optimizer's learning rate
        to that epoch's."""
        self.base_lr = float(d["base_lr"])
        self.last_epoch = int(d["last_epoch"])
        self.optimizer.hparams[codes.HP_LR] = float(self.lr_at(self.last_epoch))

    def __repr__(self):
        return f"{type(self).__name__}(base_lr={self.base_lr}, last_epoch={self.last_epoch})"


def _positive_real(name, value):
    return validation.positive_float(name, value)


class StepLR(LRSchedule):
    """lr = base_lr * gamma ** (epoch // step_size), as torch's StepLR."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = validation.positive_int("step_size", step_size)
        self.gamma = _positive_real("gamma", gamma)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRSchedule):
    """lr = base_lr * gamma ** epoch, as torch's ExponentialLR."""

    def __init__(self, optimizer, gamma):
        super().__init__(optimizer)
        self.gamma = _positive_real("gamma", gamma)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** epoch


class CosineAnnealingLR(LRSchedule):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2, torch's
    CosineAnnealingLR in closed form (it rises again after T_max, period 2 * T_max)."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        super().__init__(optimizer)
        self.T_max = validation.positive_int("T_max", T_max)
        if isinstance(eta_min, (bool, np.bool_)) or not isinstance(eta_min, numbers.Real) \
                or not (math.isfinite(eta_min) and eta_min >= 0):
            raise ValueError(f"eta_min: expected a finite number >= 0, got {eta_min!r}")
        self.eta_min = float(eta_min)

    def lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (
            1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0


class InverseScaling(LRSchedule):
    """lr = base_lr / (epoch + 1) ** power_t, scikit-learn's "invscaling" per epoch."""

    def __init__(self, optimizer, power_t=0.5):
        super().__init__(optimizer)
        self.power_t = _positive_real("power_t", power_t)

    def lr_at(self, epoch):
        return self.base_lr / (epoch + 1) ** self.power_t
