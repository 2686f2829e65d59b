"""Optimizer updates: one fused pass over the flat parameter, gradient and state buffers.

Every optimizer is reached through one signature so the compiled training step can call
any of them:

    optimizer_update(opt_code, params, grads, state, hparams, step)
        opt_code  int, kernels.codes.OPTIMIZERS
        params    (n,) float32/float64, updated in place
        grads     (n,) same dtype, read (and left unchanged)
        state     (k, n) same dtype, the optimizer's state rows (k = 0 for plain SGD)
        hparams   (m,) float64, hparams[0] the learning rate; the rest per optimizer
        step      int, 1 for the first update (for bias corrections)
"""
from numba import prange

from .. import codes
from ._jit import parallel, serial


@parallel
def sgd_update(params, grads, lr):
    """Plain SGD in place: params -= lr * grads. params, grads: (n,), one float dtype."""
    for i in prange(params.shape[0]):
        params[i] -= lr * grads[i]


@serial
def optimizer_update(opt_code, params, grads, state, hparams, step):
    """Dispatch to the update of ``opt_code``; see the module docstring."""
    if opt_code == codes.SGD:
        sgd_update(params, grads, hparams[0])
