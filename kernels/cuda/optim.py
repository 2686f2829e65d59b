"""Optimizer updates on the GPU (numba.cuda twin of kernels/cpu/optim.py): one fused
pass over the flat parameter, gradient and state device arrays.

    optimizer_update(opt_code, params, grads, state, hparams, step)
        opt_code  int, kernels.codes.OPTIMIZERS
        params    (n,) float32/float64 device array, updated in place
        grads     (n,) same dtype, read (and left unchanged)
        state     (k, n) same dtype device array, the optimizer's state rows
        hparams   (m,) float64 host array (numpy), hparams[0] the learning rate
        step      int, 1 for the first update (for bias corrections)

The hyperparameters stay on the host and travel as kernel arguments (scalars), so
changing the learning rate between steps costs no transfer.
"""
from numba import cuda

from .. import codes
from ._launch import blocks, config


@cuda.jit
def _sgd_kernel(params, grads, lr):
    i = cuda.grid(1)
    if i < params.shape[0]:
        params[i] = params[i] - lr * grads[i]


def sgd_update(params, grads, lr):
    """Plain SGD in place: params -= lr * grads. params, grads: (n,) device arrays."""
    n = params.shape[0]
    if n == 0:
        return
    tpb = config.block
    _sgd_kernel[blocks(n, tpb), tpb](params, grads, float(lr))


def optimizer_update(opt_code, params, grads, state, hparams, step):
    """Dispatch to the update of ``opt_code``; see the module docstring."""
    if opt_code == codes.SGD:
        sgd_update(params, grads, hparams[0])
    else:
        raise ValueError(f"opt_code: no CUDA update for optimizer code {opt_code}")
