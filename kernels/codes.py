"""Integer codes that name activations and losses inside compiled code.

Compiled kernels cannot take Python strings or callables cheaply, so every activation
and loss is passed as a small integer. This module is the one place that maps names to
codes; the CPU kernels, the CUDA twins, the numpy reference and the API all read it.

Activations live in one table, ``ACTIVATION_TABLE`` (scikit-learn's
sklearn/neural_network/_base.py ACTIVATIONS/DERIVATIVES tables are the model). To add
an activation:

1. append an ``Activation`` row (its position is its code; never reorder rows: the
   compiled kernels and the tests use codes, saved models store names);
2. write its pair of scalar functions, sigma(s, slope) and sigma'(a, s, slope), on each
   device and append the pair to that device's table: kernels/cpu/activations.py
   ``PAIRS``, kernels/cuda/activations.py ``FORWARD`` and ``DERIVATIVE``;
3. write its float64 numpy form and its derivative (from s) in kernels/reference.py
   ``FORWARD`` and ``DERIVATIVE``.

Everything else derives from the table: names and codes, the command line's and the
estimators' choices, saved-model checks, the weight initialisation, which layers keep
their pre-activation S, the CUDA epilogue's unrolling and the compiled dispatch on both
devices. tests/test_activation_table.py checks that every row has all of its entries
(tests/test_torch_oracle.py also needs the PyTorch form, to compare against).
"""
from typing import NamedTuple

# Activations: the table every other list of them derives from (module doc).


class Activation(NamedTuple):
    """One row of the activation table.

    name : the public name (fastbp.ACTIVATIONS, the CLI, saved models).
    derivative_from : "output" when sigma'(s) can be written as a function of
        a = sigma(s), so backward needs only the layer's output and S need not be
        kept; "input" when sigma' needs s itself.
    init : "he" (He uniform, limit sqrt(6 / fan_in), for relu-like functions) or
        "glorot" (Glorot uniform, limit sqrt(6 / (fan_in + fan_out))): MLP.init_params.
    cheap : True when sigma is a few arithmetic instructions (no exp, tanh, erf): the
        CUDA matrix-product epilogue inlines and unrolls only these.
    """
    name: str
    derivative_from: str
    init: str
    cheap: bool


ACTIVATION_TABLE = (
    #          name          derivative_from  init      cheap
    Activation("identity",   "output",        "glorot", True),
    Activation("sigmoid",    "output",        "glorot", False),
    Activation("tanh",       "output",        "glorot", False),
    Activation("relu",       "output",        "he",     True),
    # leaky_relu's slope is positive, so sign(a) == sign(s): sigma' from the output
    Activation("leaky_relu", "output",        "he",     True),
    Activation("softplus",   "input",         "glorot", False),
    # exact form: x * Phi(x), Phi the standard normal CDF (erf)
    Activation("gelu",       "input",         "he",     False),
    # tanh approximation, PyTorch's approximate="tanh"
    Activation("gelu_tanh",  "input",         "he",     False),
)

ACTIVATIONS = tuple(row.name for row in ACTIVATION_TABLE)   # ACTIVATIONS[code]: the name
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}


def _codes_where(**fields):
    return frozenset(code for code, row in enumerate(ACTIVATION_TABLE)
                     if all(getattr(row, k) == v for k, v in fields.items()))


# sigma'(s) as a function of a = sigma(s): backward needs only A (see Activation).
DERIVATIVE_FROM_OUTPUT = _codes_where(derivative_from="output")
HE_INIT = _codes_where(init="he")         # He uniform; the others Glorot uniform
CHEAP = _codes_where(cheap=True)          # unrolled in the CUDA epilogue

# Names for the codes the kernels and tests refer to directly (a new activation needs
# none).
IDENTITY = ACTIVATION_CODES["identity"]
SIGMOID = ACTIVATION_CODES["sigmoid"]
TANH = ACTIVATION_CODES["tanh"]
RELU = ACTIVATION_CODES["relu"]
LEAKY_RELU = ACTIVATION_CODES["leaky_relu"]
SOFTPLUS = ACTIVATION_CODES["softplus"]
GELU = ACTIVATION_CODES["gelu"]
GELU_TANH = ACTIVATION_CODES["gelu_tanh"]

DEFAULT_LEAKY_RELU_SLOPE = 0.01

# Losses, each with mean reduction exactly as PyTorch defines it.
SOFTMAX_CROSS_ENTROPY = 0   # torch.nn.CrossEntropyLoss on integer class labels
MSE = 1                     # torch.nn.MSELoss, mean over every element
BCE_WITH_LOGITS = 2         # torch.nn.BCEWithLogitsLoss, mean over every element

LOSSES = ("softmax_cross_entropy", "mse", "bce_with_logits")
LOSS_CODES = {name: code for code, name in enumerate(LOSSES)}

# scikit-learn's output functions (its MLPs' ``out_activation_``), each with the loss
# it is the canonical link of (kernels/cpu/sklearn_loss.py): log loss for softmax and
# logistic, half squared error for identity, half Poisson deviance for exp.
SKLEARN_SOFTMAX = 0
SKLEARN_LOGISTIC = 1
SKLEARN_IDENTITY = 2
SKLEARN_EXP = 3

SKLEARN_OUTPUTS = ("softmax", "logistic", "identity", "exp")
SKLEARN_OUTPUT_CODES = {name: code for code, name in enumerate(SKLEARN_OUTPUTS)}

# Optimizers. Each update is one fused pass over params, grads and its state rows
# (kernels/cpu/optim.py: optimizer_update, where the formula of each is written out).
# They follow torch.optim's documented algorithms (PyTorch 2.x, maximize=False).
SGD = 0        # SGD with optional momentum, dampening, Nesterov, L2 weight decay
ADAM = 1       # Adam; weight_decay is L2 (added to the gradient), optional AMSGrad
ADAMW = 2      # AdamW; weight_decay is decoupled (params *= 1 - lr * weight_decay)
RMSPROP = 3    # RMSprop with optional L2 weight decay, momentum, centering

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
OPTIMIZER_CODES = {name: code for code, name in enumerate(OPTIMIZERS)}
# What an update given a code outside OPTIMIZERS raises (ValueError), the same on both
# devices, with the code appended: an update that silently did nothing would be a
# silent wrong result.
UNKNOWN_OPTIMIZER = ("opt_code: expected one of "
                     + ", ".join(f"{c} ({n})" for c, n in enumerate(OPTIMIZERS)) + ", got ")

# hparams: a float64 array. Entries 0 and 1 mean the same for every optimizer; flags
# are stored as 0.0 (off) or 1.0 (on).
HP_LR = 0                # learning rate (schedules rewrite this entry between steps)
HP_MAX_GRAD_NORM = 1     # clip by global L2 norm first, as clip_grad_norm_; <= 0: off
# SGD: hparams (6,); state rows: [momentum_buffer] if momentum != 0 else none
HP_SGD_MOMENTUM = 2
HP_SGD_DAMPENING = 3
HP_SGD_WEIGHT_DECAY = 4
HP_SGD_NESTEROV = 5
# ADAM and ADAMW: hparams (7,); state rows: [exp_avg, exp_avg_sq(, max_exp_avg_sq)]
HP_ADAM_BETA1 = 2
HP_ADAM_BETA2 = 3
HP_ADAM_EPS = 4
HP_ADAM_WEIGHT_DECAY = 5
HP_ADAM_AMSGRAD = 6
# RMSPROP: hparams (7,); state rows: [square_avg(, grad_avg if centered)
#          (, momentum_buffer if momentum > 0)], in that order
HP_RMSPROP_ALPHA = 2
HP_RMSPROP_EPS = 3
HP_RMSPROP_WEIGHT_DECAY = 4
HP_RMSPROP_MOMENTUM = 5
HP_RMSPROP_CENTERED = 6

N_HPARAMS = (6, 7, 7, 7)   # N_HPARAMS[code]: length of that optimizer's hparams
