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
# (kernels/cpu/optim.py: optimizer_update, where the formula of each is written out).
# They follow torch.optim's documented algorithms (PyTorch 2.x, maximize=False).
SGD = 0        # SGD with optional momentum, dampening, Nesterov, L2 weight decay
ADAM = 1       # Adam; weight_decay is L2 (added to the gradient), optional AMSGrad
ADAMW = 2      # AdamW; weight_decay is decoupled (params *= 1 - lr * weight_decay)
RMSPROP = 3    # RMSprop with optional L2 weight decay, momentum, centering

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
OPTIMIZER_CODES = {name: code for code, name in enumerate(OPTIMIZERS)}

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
