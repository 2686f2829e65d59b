"""``@njit(parallel=True)`` CPU kernels. Each module has a ``numba.cuda`` twin of the
same name in ``kernels/cuda`` and a numpy float64 reference in ``kernels/reference.py``,
except three: ``backward_update`` (the CPU training step's fusion of linear's backward
with optim's update, checked against the two run apart), ``checks`` (the API's
checks of a host batch's values, whatever the device) and ``sklearn_loss``
(scikit-learn's output losses, run on the host for either device and checked against
scikit-learn's own functions).

Conventions: batch-major arrays, C-contiguous, float32 or float64 (one dtype per call);
W is (out, in) as in torch.nn.Linear; outputs go into caller-allocated arrays.
"""
from .activations import activation_backward, activation_forward
from .linear import linear_backward, linear_forward
from .losses import bce_with_logits, loss_forward_backward, mse, softmax_cross_entropy
from .network import (backprop, network_backward, network_forward, network_loss,
                      network_passes, network_train_epoch, network_train_step)
from .optim import optimizer_update, sgd_update
from .sklearn_loss import adam_eps_at, l2_penalty, output_loss_grad, sklearn_passes

__all__ = [
    "activation_forward", "activation_backward",
    "linear_forward", "linear_backward",
    "softmax_cross_entropy", "mse", "bce_with_logits", "loss_forward_backward",
    "network_forward", "network_backward", "backprop", "network_loss", "network_train_step",
    "network_train_epoch", "network_passes",
    "sgd_update", "optimizer_update",
    "output_loss_grad", "l2_penalty", "adam_eps_at", "sklearn_passes",
]
