"""Jacobian of a network's outputs with respect to its inputs on the GPU (numba.cuda
twin of kernels/cpu/jacobian.py), by backpropagation.

    network_jacobian   J[i, k, :] = d out[i, k] / d X[i, :]
                       X (batch, in)  J (batch, out, in)   device arrays

As on the CPU: one forward pass (one per output for checkpointed networks), then for
each output k one backward pass from the one-hot output gradient e_k on every row,
whose gradient w.r.t. X is column k of every row's Jacobian. Two small kernels write
the seed and copy dX into J[:, k, :]; everything stays on the device.
"""
from numba import cuda

from ._jit import kernel
from ._launch import blocks, config, launch
from .network import backprop, network_forward, segment_start


@kernel
def _one_hot(seed, k):
    """seed[i, :] = e_k for every row i."""
    idx = cuda.grid(1)
    n = seed.shape[1]
    if idx < seed.shape[0] * n:
        seed[idx // n, idx % n] = 1.0 if idx % n == k else 0.0


@kernel
def _store_column(dX, J, k):
    """J[i, k, j] = dX[i, j]."""
    idx = cuda.grid(1)
    n = dX.shape[1]
    if idx < dX.shape[0] * n:
        i = idx // n
        J[i, k, idx - i * n] = dX[i, idx - i * n]


def network_jacobian(params, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
                     X, acts, pres, dbuf, grads, dX, J):
    """Fill J (batch, sizes[-1], sizes[0]) with d output / d input per row.

    X: (batch, sizes[0]); acts, pres, dbuf: workspaces as for network_forward and
    backprop; grads (n_params,) scratch that receives parameter gradients nobody
    reads; dX (batch, sizes[0]) scratch. All device arrays of one float dtype,
    C-contiguous (the CPU twin's arguments)."""
    batch = X.shape[0]
    n_out = int(sizes[-1])
    checkpointed = any(segment_start(l, act_cum) != l for l in range(act_codes.shape[0]))
    seed = dbuf[:batch * n_out].reshape(batch, n_out)
    tpb = config.block
    for k in range(n_out):
        if k == 0 or checkpointed:
            network_forward(params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                            pre_cum, X, acts, pres)
        # backprop overwrites dbuf as it goes, so the seed is written afresh each time
        launch(_one_hot, blocks(batch * n_out, tpb), tpb, (seed, k))
        backprop(params, grads, sizes, w_off, b_off, act_codes, slopes, act_cum, pre_cum,
                 X, acts, pres, dbuf, dX)
        launch(_store_column, blocks(dX.shape[0] * dX.shape[1], tpb), tpb, (dX, J, k))
