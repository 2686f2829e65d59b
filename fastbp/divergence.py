"""Divergence: a training step whose loss or update is NaN or infinite.

The compiled update counts how many parameters it left NaN or infinite: each loop keeps
the largest exponent it stores and counts its range again only when that shows one
(kernels/cpu/optim.py), so a finite step pays no extra pass over memory; the loss before
the update is checked too. What each entry point does
when a step diverges:

- ``MLP.train_step`` and ``Optimizer.step``: raise :class:`TrainingDiverged`. They keep
  no copy of the parameters (that would cost a pass over them every step), so the
  parameters are left as the update wrote them, NaN or infinite, as the message says.
- ``MLP.train_epoch``: restores the parameters, optimizer state and step count it
  started from (one :class:`Snapshot` per call), then raises.
- ``fit`` (and what is built on it): restores the start of the epoch, then raises or,
  with ``on_nonfinite="stop"``, warns and returns. Every step is checked, so the
  snapshot taken at the start of an epoch is always finite.
"""
import math

from .optim import copy_back, host_copy


class TrainingDiverged(FloatingPointError):
    """A training step's loss, or the parameters after its update, became NaN or
    infinite.

    Attributes: ``epoch`` and ``batch`` (1-based; None where the caller has no such
    count: ``train_step`` has neither, ``train_epoch`` no epoch), ``loss`` (the step's
    loss before its update; None from ``Optimizer.step``), ``nonfinite`` (how many parameters the update left NaN or
    infinite; 0 when the loss itself was not finite and the update was), ``history``
    (fit: the epochs completed before; else None). Where it is raised says what the
    parameters hold then (module docstring): fit and train_epoch restore theirs.
    """

    def __init__(self, message, epoch, batch, loss, history, nonfinite=0):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.loss = loss
        self.history = history
        self.nonfinite = nonfinite


def diverged(loss, nonfinite):
    """True when a step with this loss (before its update) and this count of non-finite
    parameters after its update diverged."""
    return nonfinite > 0 or not math.isfinite(loss)


def describe(loss, nonfinite, n_params):
    """What went non-finite in a step, as a phrase for error messages (``loss`` None:
    not known to the caller)."""
    if nonfinite:
        return (f"the update left {nonfinite} of {n_params} parameters NaN or infinite"
                + ("" if loss is None else f" (the loss before it was {loss})"))
    return f"the training loss became {loss}"


class Snapshot:
    """Host copies of a network's parameters and an optimizer's state and step count,
    taken with :meth:`take` and put back with :meth:`restore` (buffers reused)."""

    def __init__(self, net, optimizer):
        self.net, self.optimizer = net, optimizer
        self.params = host_copy(net.params)
        self.state = host_copy(optimizer.state)
        self.steps = optimizer.steps

    def take(self):
        host_copy(self.net.params, self.params)
        if self.state.shape != self.optimizer.state.shape:   # a callback swapped state
            self.state = host_copy(self.optimizer.state)
        else:
            host_copy(self.optimizer.state, self.state)
        self.steps = self.optimizer.steps

    def restore(self):
        copy_back(self.net.params, self.params)
        copy_back(self.optimizer.state, self.state)
        self.optimizer.steps = self.steps
