"""Optimizers: each update is one fused compiled pass over the flat buffers."""
from . import validation
from .kernels import cpu as cpu_kernels


class SGD:
    """Plain stochastic gradient descent: params -= lr * grads.

    ``net`` is an MLP; ``lr`` a positive learning rate. ``step()`` applies the update
    using the gradients the last ``net.backward`` left in ``net.grads``.
    """

    def __init__(self, net, lr=0.01):
        self.net = net
        self.lr = validation.positive_float("lr", lr)

    def step(self):
        cpu_kernels.sgd_update(self.net.params, self.net.grads, self.lr)

    def __repr__(self):
        return f"SGD(lr={self.lr})"
