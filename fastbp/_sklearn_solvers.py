"""The numerical side of fastbp's scikit-learn estimators, in scikit-learn's conventions.

scikit-learn's MLP (sklearn/neural_network, version 1.x) trains on these definitions,
which differ from fastbp's own ``MLP``/``fit`` (PyTorch's):

* the output layer's function is applied outside the network: softmax (multiclass),
  logistic (binary: one output; multilabel: one per label), identity (squared error)
  or exp (Poisson); the network itself ends in a linear ("identity") layer;
* the losses (sklearn/neural_network/_base.py): log loss of the clipped probabilities,
  summed over outputs and averaged over samples; *half* the squared error, averaged
  over samples and outputs; half the Poisson deviance, summed over outputs;
* sample weights: every average above is weighted, and the gradient is divided by the
  sum of the weights (the number of samples when there are none);
* the L2 penalty ``alpha``: ``loss += alpha / (2 * sw_sum) * sum(W ** 2)`` over the
  weights of every layer, biases excluded (sw_sum as above);
* each output function is the canonical link of its loss, so the gradient w.r.t. the
  last layer's pre-activation is ``(P - Y) * sample_weight / sw_sum``.

:class:`LossGrad` evaluates that loss and fills ``net.grads`` with its gradient, all in
compiled code: the forward pass and the backpropagation through the layers are the
network's passes (``network_forward``, ``backprop``), the output function, loss and
output gradient one pass over the (n, outputs) array (``output_loss_grad``, where the
formulas are written out) and the penalty another (``l2_penalty``).

The optimizers ``SGDOptimizer`` and ``AdamOptimizer`` make scikit-learn's updates
(sklearn/neural_network/_stochastic_optimizers.py) with fastbp's fused, compiled
torch.optim updates, translated exactly:

* scikit-learn's SGD keeps a velocity ``v = momentum * v - lr * g`` and adds it (or,
  Nesterov, ``momentum * v - lr * g``); torch's keeps ``b = momentum * b + g`` and
  subtracts ``lr * b`` (Nesterov ``lr * (g + momentum * b)``). With ``v = -lr * b`` the
  two are the same while lr is constant; when scikit-learn's schedule changes lr,
  ``b`` is rescaled by ``lr_old / lr_new`` so that ``v`` carries over unchanged.
* scikit-learn's Adam divides by ``sqrt(v) + eps``, torch's by
  ``sqrt(v) / sqrt(1 - beta2^t) + eps``; passing ``eps / sqrt(1 - beta2^t)`` to the
  torch form at step t gives scikit-learn's update.
"""
import contextlib
import math

import numpy as np
from scipy.special import expit

from . import device as _device
from .warmup import COLD_S, ESTIMATE_S, announced, tree_ready
from .divergence import Snapshot
from .kernels import codes
from .kernels import cpu as cpu_kernels
from .kernels.cpu.sklearn_loss import softmax_workspaces, transposed_size
from .optim import SGD, Adam, optimizer_from_state_dict
from .plan import plan_for


# -- output functions (scikit-learn's _base.py definitions) --------------------------
def _softmax(Z):
    Z -= Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


def _logistic(Z):
    return expit(Z, out=Z)


def _identity(Z):
    return Z


def _exp(Z):
    return np.exp(Z, out=Z)


# out_activation_ -> its output function, applied in place (prediction; training
# runs the same functions compiled, with the loss: kernels/cpu/sklearn_loss.py)
OUTPUTS = {"softmax": _softmax, "logistic": _logistic, "identity": _identity, "exp": _exp}
assert tuple(OUTPUTS) == codes.SKLEARN_OUTPUTS


def _first_compile_s(net):
    """Estimated seconds of compiling a scikit-learn pass for ``net``: the shared
    passes too when this process has not compiled them (fastbp.warmup)."""
    return COLD_S["train_epoch"] if not tree_ready(net) else ESTIMATE_S["train_epoch"]


def output_function(out_activation):
    """The in-place output function of ``out_activation_``."""
    return OUTPUTS[out_activation]


class LossGrad:
    """scikit-learn's MLP loss and its gradient on a fastbp network (either device).

    ``net`` must end in an "identity" layer; ``out_activation`` is one of OUTPUTS;
    ``alpha`` the L2 penalty. Calling ``loss_grad(X, Y, sample_weight)`` with X
    (n, n_in) C-contiguous of the network's dtype, Y (n, n_out) of that dtype and
    sample_weight (n,) or None (all numpy arrays) returns the loss (a float) and leaves
    its gradient in ``net.grads`` (the layout of ``net.params``).

    The forward pass and backpropagation are the network's compiled passes; the output
    function, loss and output gradient are one compiled pass over the (n, n_out)
    outputs (kernels/cpu/sklearn_loss.py, on the host: a CUDA network's outputs come
    over and their gradient goes back), and so is the alpha penalty (on the host too
    for CUDA, with params and grads copied across: correct, not fast).
    """

    def __init__(self, net, out_activation, alpha):
        self.net = net
        self.out_code = codes.SKLEARN_OUTPUT_CODES[out_activation]
        self.alpha = float(alpha)
        self.eps = float(np.finfo(net.dtype).eps)
        self._no_weights = np.zeros(0, net.dtype)
        self._no_dX = np.zeros((0, 0), net.dtype)
        # the rows of a minibatch (X, Y, sample_weight) and the epoch's other
        # workspaces (WT, work, tot: kernels/cpu/sklearn_loss.py)
        self._batch_workspace = None
        self._announce = True   # a compile on the first CPU call is announced
        self._announce_epoch = True   # and on the first epoch's

    def __call__(self, X, Y, sample_weight=None):
        if self._announce and self.net.device == "cpu":   # the first call compiles
            self._announce = False
            with announced(f"{self.net.dtype.name}: scikit-learn loss",
                                   _first_compile_s(self.net)):
                return self(X, Y, sample_weight)
        net = self.net
        n, n_out = X.shape[0], net.sizes[-1]
        plan = plan_for(net, n)
        passes = net._kernels   # on the CPU: compiled for this network's activations
        sw = self._no_weights if sample_weight is None else sample_weight
        if net.device == "cpu":
            Z = plan.forward(X)
            # the output gradient goes where backprop reads it
            dZ = plan.dbuf[:n * n_out].reshape(n, n_out)
            loss = cpu_kernels.output_loss_grad(self.out_code, Z, Y, sw, self.eps, dZ,
                                                *softmax_workspaces(n, n_out, net.dtype))
            passes.backprop(*plan.backprop_args(X, self._no_dX))
        else:
            X_dev = plan.place(X)[0]
            Z = passes.network_forward(*plan.forward_args(X_dev))
            dZ = np.empty((n, n_out), net.dtype)
            loss = cpu_kernels.output_loss_grad(self.out_code, Z.copy_to_host(), Y, sw,
                                                self.eps, dZ,
                                                *softmax_workspaces(n, n_out, net.dtype))
            plan.dbuf[:n * n_out].copy_to_device(dZ.reshape(-1))
            passes.backprop(*plan.backprop_args(X_dev, self._no_dX))
        if self.alpha:
            sw_sum = n if sample_weight is None else float(sample_weight.sum())
            params, grads = _device.to_host(net.params), _device.to_host(net.grads)
            squares = cpu_kernels.l2_penalty(params, grads, plan.layout[0],
                                             plan.layout[1], self.alpha / sw_sum)
            if grads is not net.grads:
                net.grads.copy_to_device(grads)
            loss += 0.5 * self.alpha * squares / sw_sum
        return float(loss)

    def _epoch_workspaces(self, batch_size):
        """The compiled epoch's workspaces for minibatches of batch_size rows: Xb, Yb,
        swb (the rows gathered), WT (weights transposed, sklearn_loss.py's
        forward_transposed), work and tot (the softmax's)."""
        net = self.net
        n_out = net.sizes[-1]
        return (np.empty((batch_size, net.sizes[0]), net.dtype),
                np.empty((batch_size, n_out), net.dtype),
                np.empty(batch_size, net.dtype),
                np.empty(transposed_size(net.sizes, batch_size), net.dtype),
                *softmax_workspaces(batch_size, n_out, net.dtype))

    def train_epoch(self, X, Y, sample_weight, rows, batch_size, opt, adam_eps=0.0):
        """Minibatches rows[0:batch_size], rows[batch_size:2 batch_size], ... of (X, Y,
        sample_weight) (numpy arrays as for calling this object, N rows; rows: int64
        indices): for each, the loss and gradient, then the update of ``opt`` (a fastbp
        Optimizer of this network); with adam_eps > 0 scikit-learn's Adam with that
        epsilon (module doc). Returns (the minibatches' losses (steps run,) float64,
        how many parameters the last update left NaN or infinite): it stops after the
        first such update. On the CPU the whole epoch is one compiled call
        (kernels/cpu/sklearn_loss.py, ``sklearn_passes``)."""
        net = self.net
        losses = np.empty(-(-len(rows) // batch_size))
        # state follows the network (device arrays on "cuda"), as in Optimizer.step;
        # compiled_args_for counts one step, the first of this epoch
        code, params, grads, state, hparams, step = opt.compiled_args_for(net)
        if net.device == "cpu":
            plan = plan_for(net, batch_size)
            ws = self._batch_workspace
            if ws is None or ws[0].shape[0] < batch_size:
                ws = self._batch_workspace = self._epoch_workspaces(batch_size)
            passes = cpu_kernels.sklearn_passes(net._kernels.act_set)
            # the first epoch says so if it compiles (the estimate costs ~30 us: once)
            notice = contextlib.nullcontext()
            if self._announce_epoch:
                self._announce_epoch = False
                notice = announced(f"{net.dtype.name}: scikit-learn epoch",
                                   _first_compile_s(net))
            with notice:
                steps, nonfinite = passes.train_epoch(
                    params, grads, *plan.layout, self.out_code, X, Y,
                    self._no_weights if sample_weight is None else sample_weight, rows,
                    batch_size, self.eps, self.alpha, *ws[:3], plan.acts, plan.pres,
                    plan.dbuf, *ws[3:],
                    code, state, hparams, step, adam_eps, losses)
            opt.steps += steps - 1
            return losses[:steps], nonfinite
        update = _device.kernels(net.device).optimizer_update
        for b in range(len(losses)):   # on the device: minibatch by minibatch
            if b:
                code, params, grads, state, hparams, step = opt.compiled_args_for(net)
            if adam_eps > 0:
                hparams[codes.HP_ADAM_EPS] = cpu_kernels.adam_eps_at(
                    adam_eps, hparams[codes.HP_ADAM_BETA2], step)
            batch = rows[b * batch_size:(b + 1) * batch_size]
            losses[b] = self(X[batch], Y[batch],
                             None if sample_weight is None else sample_weight[batch])
            nonfinite = update(code, params, grads, state, hparams, step)
            if nonfinite:
                return losses[:b + 1], nonfinite
        return losses, 0


def sklearn_order(net):
    """Indices into ``net.params`` in scikit-learn's packing: every layer's coefs_
    (n_in, n_out) raveled, then every layer's intercepts_."""
    index = np.arange(net.n_params)
    coefs, intercepts = [], []
    for l in range(len(net.layers)):
        w_slice, w_shape, b_slice = net.layout.weight_slice(l)
        coefs.append(index[w_slice].reshape(w_shape).T.ravel())
        intercepts.append(index[b_slice])
    return np.concatenate(coefs + intercepts)


# -- stochastic optimizers: scikit-learn's updates on fastbp's compiled ones ---------
class _Stochastic:
    """Shared by the optimizers below: ``train_epoch(loss_grad, X, Y, sample_weight,
    rows, batch_size)`` for an epoch's minibatches, ``iteration_ends(t)`` after each
    epoch, ``trigger_stopping(msg, verbose)`` when the loss stops improving
    (scikit-learn's interface), and pickling through fastbp's optimizer state_dict."""

    def __init__(self, opt):
        self._opt = opt

    @property
    def learning_rate(self):
        return self._opt.lr

    adam_eps = 0.0   # scikit-learn's Adam sets its epsilon here (LossGrad.train_epoch)

    def train_epoch(self, loss_grad, X, Y, sample_weight, rows, batch_size):
        """Minibatches of ``rows`` of (X, Y, sample_weight), each ``loss_grad``'s loss
        and gradient (a LossGrad of this optimizer's network) then this optimizer's
        update: LossGrad.train_epoch, whose (losses, nonfinite) it returns."""
        return loss_grad.train_epoch(X, Y, sample_weight, rows, batch_size, self._opt,
                                     self.adam_eps)

    def snapshot(self):
        """A fastbp.divergence.Snapshot of the network's parameters and this optimizer's
        state (``take()`` refreshes it), to restore when a step diverges."""
        return Snapshot(self._opt.net, self._opt)

    def iteration_ends(self, time_step):
        pass

    def trigger_stopping(self, msg, verbose):
        if verbose:
            print(msg + " Stopping.")
        return True

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_opt"] = self._opt.state_dict()
        return state

    def bind(self, net):
        """After unpickling: rebuild the fastbp optimizer for ``net``."""
        if isinstance(self._opt, dict):
            self._opt = optimizer_from_state_dict(net, self._opt)


class SGDOptimizer(_Stochastic):
    """scikit-learn's SGDOptimizer: momentum (Nesterov's or not) and the learning-rate
    schedules "constant", "invscaling" (lr_init / (t + 1) ** power_t, t the samples
    seen) and "adaptive" (lr / 5 each time the loss stops improving)."""

    def __init__(self, net, learning_rate_init=0.1, lr_schedule="constant", momentum=0.9,
                 nesterov=True, power_t=0.5):
        super().__init__(SGD(net, lr=learning_rate_init, momentum=momentum,
                             nesterov=bool(nesterov and momentum > 0)))
        self.learning_rate_init = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = float(momentum)
        self.power_t = float(power_t)

    def _set_learning_rate(self, lr):
        old = self._opt.lr
        if lr == old:
            return
        if self._opt.state.shape[0]:
            # keep scikit-learn's velocity v = -lr * b across the change (module doc)
            state = _device.to_host(self._opt.state)
            state *= old / lr
            self._opt.state = _device.move(state, self._opt.net.device)
        self._opt.hparams[codes.HP_LR] = lr

    def iteration_ends(self, time_step):
        if self.lr_schedule == "invscaling":
            self._set_learning_rate(self.learning_rate_init
                                    / (time_step + 1) ** self.power_t)

    def trigger_stopping(self, msg, verbose):
        if self.lr_schedule != "adaptive":
            return super().trigger_stopping(msg, verbose)
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set_learning_rate(self.learning_rate / 5.0)
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False


class AdamOptimizer(_Stochastic):
    """scikit-learn's AdamOptimizer; ``learning_rate`` is its bias-corrected rate
    lr_init * sqrt(1 - beta_2^t) / (1 - beta_1^t) of the last step."""

    def __init__(self, net, learning_rate_init=0.001, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8):
        super().__init__(Adam(net, lr=learning_rate_init, betas=(beta_1, beta_2),
                              eps=epsilon))
        self.learning_rate_init = float(learning_rate_init)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    @property
    def t(self):
        return self._opt.steps

    @property
    def learning_rate(self):
        t = max(self.t, 1)
        return (self.learning_rate_init * math.sqrt(1 - self.beta_2 ** t)
                / (1 - self.beta_1 ** t))

    @property
    def adam_eps(self):
        return self.epsilon


class TorchOptimizer(_Stochastic):
    """A fastbp optimizer (torch.optim's algorithm and meaning) for the solvers
    scikit-learn does not have ("adamw", "rmsprop")."""
