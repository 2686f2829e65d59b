"""A layer's backward with its optimizer update fused in: W and b are updated while
their gradient and W itself are still in cache, right after the layer's last use of
the old W, instead of in a separate pass over every parameter after backward.

    linear_backward_update_for(act_set, dA, A, S, X, W, code, slope, dS, dX, dW, db,
                               compute_dX, fuse, opt_code, params, grads, state,
                               hparams, step, w_lo, b_lo)
        -> how many parameters the update left NaN or infinite (0 without ``fuse``:
           then it is linear_backward_for)

The layer's W (out, in) and b (out,) are the spans [w_lo, w_lo + out*in) and
[b_lo, b_lo + out) of the flat ``params`` (and of ``grads`` and each row of ``state``);
the optimizer arguments are optim.optimizer_update's. Order of the work:

- pass 1 as linear_backward: dS, db and dW in blocks of output columns;
- with dX (every layer but the first): dX[:, k0:k1] = dS W[:, k0:k1] in blocks of
  input columns, and each block then updates the columns W[:, k0:k1] it has just
  read (no other block reads them in this pass, so no block sees an updated W) and
  its share of b;
- without dX (the first layer, in training): the layer's whole span is updated right
  after pass 1 (optim.update_span).

Every parameter gets the same formula from the same values as in
optim.optimizer_update after backward, so the parameters and state come out bit for
bit the same; only the order in which elements are visited differs, and the
non-finite count is the sum of the layers' counts. Gradient clipping needs the norm of
the whole gradient before any update, so a clipping optimizer keeps the separate pass
(kernels/cpu/network.py, ``train_step_for``).
"""
import numpy as np
from numba import prange

from .blas import gemm
from .blocks import block_bounds
from .linear import input_grad_blocks, input_grad_for, weight_grad_for
from .optim import update_range, update_span
from ._jit import parallel, scalar

# The update's clipping factor: the fused path runs only without clipping.
_NO_CLIP = np.float64(1.0)


@parallel
def _input_grad_update_col_blocks(dS, W, dX, nblocks, opt_code, params, grads, state,
                                  hparams, step, w_lo, b_lo):
    n_out, n_in = W.shape
    bad = 0
    for blk in prange(nblocks):
        k0, k1 = block_bounds(blk, nblocks, n_in)
        gemm(False, False, 1.0, dS, W[:, k0:k1], 0.0, dX[:, k0:k1])
        # W[:, k0:k1]: n_out rows of k1 - k0 elements, n_in apart
        in_W = update_range(opt_code, params, grads, state, hparams, step, _NO_CLIP,
                            w_lo + k0, w_lo + k1, n_out, n_in)
        j0, j1 = block_bounds(blk, nblocks, n_out)
        in_b = update_range(opt_code, params, grads, state, hparams, step, _NO_CLIP,
                            b_lo + j0, b_lo + j1, np.int64(1), np.int64(0))
        bad += in_W + in_b   # one reduction statement, as numba's parfors require
    return bad


@scalar
def linear_backward_update_for(act_set, dA, A, S, X, W, code, slope, dS, dX, dW, db,
                               compute_dX, fuse, opt_code, params, grads, state, hparams,
                               step, w_lo, b_lo):
    """linear_backward_for, then, when ``fuse``, the optimizer's update of this layer's
    W and b, fused as the module doc describes; returns how many of them it left
    non-finite (0 without ``fuse``). One function for both, so that a training step,
    which needs both (clipping does not fuse), compiles the layer's backward once."""
    weight_grad_for(act_set, dA, A, S, X, code, slope, dS, dW, db)
    if compute_dX:
        nblocks = input_grad_blocks(dS, W)
        if fuse and nblocks > 1:
            return _input_grad_update_col_blocks(dS, W, dX, nblocks, opt_code, params,
                                                 grads, state, hparams, step, w_lo, b_lo)
        input_grad_for(dS, W, dX, nblocks)
    if not fuse:
        return 0
    # W then b: one span of params (fastbp/layout.py lays every layer out so)
    return update_span(opt_code, params, grads, state, hparams, step, _NO_CLIP, w_lo,
                       b_lo + W.shape[0])
