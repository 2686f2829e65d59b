"""Optimizers over a network's flat buffers.

An optimizer is described to compiled code by an integer code, a (k, n_params) state
array and a float64 hyperparameter array (first entry: the learning rate); see
kernels/cpu/optim.py. ``step()`` runs that update alone; ``net.train_step`` runs it
inside the same compiled call as forward and backward.
"""
import numpy as np

from . import validation
from .kernels import codes
from .kernels import cpu as cpu_kernels


class Optimizer:
    """Base: holds the network, the state rows, the hyperparameters and the step count.

    Subclasses set ``code`` and pass their hyperparameters (learning rate first) and
    the number of state rows to ``__init__``.
    """

    code = None

    def __init__(self, net, hparams, n_state_rows=0):
        self.net = net
        self.hparams = np.asarray(hparams, dtype=np.float64)
        self.state = np.zeros((n_state_rows, net.n_params), dtype=net.dtype)
        self.steps = 0

    @property
    def lr(self):
        return float(self.hparams[0])

    @lr.setter
    def lr(self, value):
        self.hparams[0] = validation.positive_float("lr", value)

    def compiled_args(self):
        """(code, state, hparams, step) for the step about to run; counts the step."""
        self.steps += 1
        return self.code, self.state, self.hparams, self.steps

    def step(self):
        """Update the network's parameters from the gradients in ``net.grads``."""
        cpu_kernels.optimizer_update(*self.compiled_args_for(self.net))

    def compiled_args_for(self, net):
        if net is not self.net:
            raise ValueError("optimizer: it was created for a different network")
        code, state, hparams, step = self.compiled_args()
        return code, net.params, net.grads, state, hparams, step


class SGD(Optimizer):
    """Plain stochastic gradient descent: params -= lr * grads."""

    code = codes.SGD

    def __init__(self, net, lr=0.01):
        super().__init__(net, [validation.positive_float("lr", lr)])

    def __repr__(self):
        return f"SGD(lr={self.lr})"
