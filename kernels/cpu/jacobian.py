"""Jacobian of a network's outputs with respect to its inputs, by backpropagation.

    network_jacobian   J[i, k, :] = d out[i, k] / d X[i, :]
                       X (batch, in)  J (batch, out, in)

Rows of a batch do not interact, so one backward pass per output k, started from the
one-hot output gradient e_k on every row, gives column k of every row's Jacobian at
once: ``sizes[-1]`` backward passes after a single forward pass (one forward per
output for checkpointed networks), all in one call.
"""
import functools

from .activations import ALL
from ._jit import scalar, serial
from .network import backprop_for, forward_for, segment_start


@scalar
def jacobian_for(act_set, params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                 pre_cum, X, acts, pres, dbuf, grads, dX, J):
    """network_jacobian for networks whose activations are in ``act_set`` (a
    compile-time constant; see network.passes)."""
    batch = X.shape[0]
    n_out = sizes[sizes.shape[0] - 1]
    n_in = sizes[0]
    # With checkpointing, backprop recomputes dropped layers into shared scratch, which
    # the next pass would read as the forward's: such networks run forward again each time.
    checkpointed = False
    for l in range(act_codes.shape[0]):
        if segment_start(l, act_cum) != l:
            checkpointed = True
    for k in range(n_out):
        if k == 0 or checkpointed:
            forward_for(act_set, params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                        pre_cum, X, acts, pres)
        # backprop overwrites dbuf as it goes, so the seed is written afresh each time.
        seed = dbuf[:batch * n_out].reshape(batch, n_out)
        seed[:, :] = 0.0
        seed[:, k] = 1.0
        backprop_for(act_set, params, grads, sizes, w_off, b_off, act_codes, slopes,
                     act_cum, pre_cum, X, acts, pres, dbuf, dX)
        for i in range(batch):
            for j in range(n_in):
                J[i, k, j] = dX[i, j]


@functools.lru_cache(maxsize=None)
def jacobian_pass(act_set):
    """network_jacobian compiled for the activation set ``act_set`` only (as
    network.passes)."""
    act_set = int(act_set)

    @serial
    def network_jacobian(params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                         pre_cum, X, acts, pres, dbuf, grads, dX, J):
        """Fill J (batch, sizes[-1], sizes[0]) with d output / d input per row.

        X: (batch, sizes[0]); acts, pres, dbuf: workspaces as for network_forward and
        backprop; grads (n_params,) scratch that receives parameter gradients nobody
        reads; dX (batch, sizes[0]) scratch. All one float dtype, C-contiguous. See
        network.py for the layout arguments.
        """
        jacobian_for(act_set, params, sizes, w_off, b_off, act_codes, slopes, act_cum,
                     pre_cum, X, acts, pres, dbuf, grads, dX, J)
    return network_jacobian


network_jacobian = jacobian_pass(ALL)
