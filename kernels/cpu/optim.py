"""Optimizer updates: one fused pass over the flat parameter and gradient buffers."""
from numba import prange

from ._jit import parallel


@parallel
def sgd_update(params, grads, lr):
    """Plain SGD in place: params -= lr * grads. params, grads: (n,), one float dtype."""
    for i in prange(params.shape[0]):
        params[i] -= lr * grads[i]
