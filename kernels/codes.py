"""Integer codes that name activations and losses inside compiled code.

Compiled kernels cannot take Python strings or callables cheaply, so every activation
and loss is passed as a small integer. This module is the one place that maps names to
codes; the CPU kernels, the CUDA twins, the numpy reference and the API all read it.
"""

# Activations. The order is the code: ACTIVATIONS[code] is the name.
IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
LEAKY_RELU = 4
SOFTPLUS = 5
GELU = 6        # exact form: x * Phi(x), Phi the standard normal CDF (erf)
GELU_TANH = 7   # tanh approximation, PyTorch's approximate="tanh"

ACTIVATIONS = (
    "identity", "sigmoid", "tanh", "relu", "leaky_relu", "softplus", "gelu", "gelu_tanh",
)
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}

# sigma'(s) can be written as a function of a = sigma(s) for these, so backward needs
# only the layer's output and the pre-activation S need not be kept (DESIGN.md, Memory).
# leaky_relu qualifies because its slope is positive, so sign(a) == sign(s).
DERIVATIVE_FROM_OUTPUT = frozenset({IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU})

DEFAULT_LEAKY_RELU_SLOPE = 0.01

# Losses, each with mean reduction exactly as PyTorch defines it.
SOFTMAX_CROSS_ENTROPY = 0   # torch.nn.CrossEntropyLoss on integer class labels
MSE = 1                     # torch.nn.MSELoss, mean over every element
BCE_WITH_LOGITS = 2         # torch.nn.BCEWithLogitsLoss, mean over every element

LOSSES = ("softmax_cross_entropy", "mse", "bce_with_logits")
LOSS_CODES = {name: code for code, name in enumerate(LOSSES)}

# Optimizers. Each update is one fused pass over params, grads and its state rows
# (kernels/cpu/optim.py: optimizer_update). hparams is a float64 array whose first
# entry is always the learning rate; the rest depend on the optimizer.
SGD = 0

OPTIMIZERS = ("sgd",)
OPTIMIZER_CODES = {name: code for code, name in enumerate(OPTIMIZERS)}
