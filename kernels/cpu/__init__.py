"""``@njit(parallel=True)`` CPU kernels. Each module has a ``numba.cuda`` twin of the
same name in ``kernels/cuda`` (the names both packages export, and those both twin
modules define, have the same signatures and meaning: tests/test_twins.py), and a
numpy float64 reference in ``kernels/reference.py``, except five: ``backward_update``
(the CPU training step's fusion of linear's backward with optim's update, checked
against the two run apart), ``checks`` (the API's checks of a host batch's values,
whatever the device), ``sklearn_loss`` (scikit-learn's output losses, run on the host
for either device and checked against scikit-learn's own functions), ``blocks`` (how a
loop splits across the CPU's threads; a launch grid does that on the GPU) and
``elementary`` (exp and tanh written for LLVM's vectoriser; the GPU has its own math
library).

Conventions: batch-major arrays, C-contiguous, float32 or float64 (one dtype per call);
W is (out, in) as in torch.nn.Linear; outputs go into caller-allocated arrays.
"""
from .activations import activation_backward, activation_forward
from .blas import gemm
from .jacobian import network_jacobian
from .linear import (activation_backward_bias, bias_activation, linear_backward,
                     linear_forward)
from .losses import bce_with_logits, loss_forward_backward, mse, softmax_cross_entropy
from .network import (backprop, network_backward, network_forward, network_loss,
                      network_passes, network_train_epoch, network_train_step,
                      training_passes)
from .optim import clip_scale, grad_norm, optimizer_update, sgd_update
from .sklearn_loss import adam_eps_at, l2_penalty, output_loss_grad, sklearn_passes

__all__ = [
    "activation_forward", "activation_backward", "gemm",
    "linear_forward", "linear_backward", "bias_activation", "activation_backward_bias",
    "softmax_cross_entropy", "mse", "bce_with_logits", "loss_forward_backward",
    "network_forward", "network_backward", "backprop", "network_loss", "network_train_step",
    "network_train_epoch", "network_jacobian", "network_passes", "training_passes",
    "sgd_update", "grad_norm", "clip_scale", "optimizer_update",
    "output_loss_grad", "l2_penalty", "adam_eps_at", "sklearn_passes",
]
