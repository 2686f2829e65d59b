"""``numba.cuda`` twins of the CPU kernels in ``kernels/cpu``, file for file and name for
name, taking device arrays: what both packages export, and the names both twin modules
define, have the same signatures and meaning (tests/test_twins.py lists the
exceptions and why). Each module holds host-side launchers with the CPU names and
the ``@cuda.jit`` kernels and device functions they launch; the launch geometry (the
reduction tile, the matrix-product tile shape) lives in ``_launch.config``. ``plan.py``
(launch plans: a step's launches prepared once and fired many times) has no CPU twin:
there a whole step is already one compiled call; nor has ``rows.py`` (row gathers that
shuffle a data set living on the GPU), which is numpy's ``take`` on the host; nor has
``reduce.py`` (block reductions and their scratch: a CPU reduction sums in registers).

Importing this package imports ``numba.cuda`` (numba's built-in one, or the numba-cuda
package where installed); it needs a CUDA driver and GPU only when a kernel launches,
or neither under ``NUMBA_ENABLE_CUDASIM=1``. ``fastbp.device`` checks availability
before anything here runs.
"""
from ._launch import config, launch_config
from .activations import activation_backward, activation_forward
from .blas import gemm
from .jacobian import network_jacobian
from .linear import activation_backward_bias, bias_activation, linear_backward, linear_forward
from .losses import bce_with_logits, loss_forward_backward, mse, softmax_cross_entropy
from .network import (backprop, network_backward, network_forward, network_loss,
                      network_train_epoch, network_train_step)
from .optim import clip_scale, grad_norm, optimizer_update, sgd_update

__all__ = [
    "activation_forward", "activation_backward", "gemm",
    "linear_forward", "linear_backward", "bias_activation", "activation_backward_bias",
    "softmax_cross_entropy", "mse", "bce_with_logits", "loss_forward_backward",
    "network_forward", "network_backward", "backprop", "network_loss", "network_train_step",
    "network_train_epoch", "network_jacobian",
    "sgd_update", "grad_norm", "clip_scale", "optimizer_update", "config", "launch_config",
]
