"""The one list of fastbp's kernels: each registered once, with all it takes to validate
it, time it and compile it, in the manner of llm.c's dev/cuda (a kernel's reference,
its versions, its launcher, validate-then-time, in one place).

A :class:`Kernel` names a public kernel whose CPU kernel and CUDA twin take the same
arguments, and gives

- ``inputs``: random host arrays for given sizes and dtype (never zero: no value sits
  on relu's kink or cancels to nothing) and the shapes of the arrays it writes;
- ``reference``: the float64 answers of kernels/reference.py for those inputs;
- ``launch``: the call of the kernel (the CPU's or the CUDA twin, alike) on them;
- ``flops``: the floating-point work of one call, for GFLOP/s;
- ``cuda_jit`` and ``products``: the ``@cuda.jit`` kernels it launches, with the
  argument types its launcher passes, for the compile check on a real GPU's target.

Who iterates :data:`KERNELS`, so that registering a kernel here is all it takes to have
it checked and timed everywhere:

- ``python -m fastbp compare`` (fastbp/compare.py) validates, then times, each on
  every device;
- tests/test_kernel_registry.py checks each on the CPU and in the CUDA simulator
  against the reference on tiny ragged shapes, in both dtypes, and that every public
  kernel of kernels.cpu and kernels.cuda is registered here or named in
  :data:`NOT_STANDALONE` with the reason;
- benchmarks/cuda_resources.py (the test suite's sm_90 compile check,
  tests/test_cuda_compile.py) compiles every kernel of :func:`cuda_compiled` and
  :func:`products`;
- benchmarks/bench_kernels.py times each under asv.

It lives in kernels/ (installed as ``fastbp.kernels.registry``) because it describes
kernels and needs nothing from fastbp: kernels never import fastbp. Importing it
imports numpy and kernels.codes/reference only; a device's kernels are looked up by
name when a call asks for them, so nothing here imports numba.cuda (or compiles a
kernel) on import.
"""
import importlib
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from . import codes
from . import reference as ref

# Largest relative error a kernel may show against the float64 reference and pass
# (max |got - want| / max |want| over an output): float32 products over k = 4096
# land near 1e-6, float64 near 1e-14.
TOLERANCE = {"float32": 1e-4, "float64": 1e-10}

DEVICES = ("cpu", "cuda")

# Inputs are drawn with |x| >= MIN_ABS: never zero, and clear of relu's kink by far
# more than a float32 rounding of a pre-activation.
MIN_ABS = 0.05

# Tiny and ragged: no size a multiple of a tile or of the simulator's product geometry
# (8, 8, 4, 2, 2), several blocks each way, and a layer of one input: the sizes the
# tests run every kernel at, on the CPU and in the CUDA simulator (one OS thread per
# CUDA thread there, so nothing bigger).
TEST_SIZES = ((11, 9, 10), (3, 1, 2))

# The launch geometry the GPU uses by default (kernels/cuda/_launch.py: tile 16 and
# blocks of tile*tile threads): the compile check compiles the kernels made for it.
_TILE = 16
_BLOCK = _TILE * _TILE


class Sizes(NamedTuple):
    """A layer's sizes: ``batch`` rows, ``n_in`` inputs, ``n_out`` outputs. Elementwise
    kernels work on (batch, n_out); the SGD update on n_out * n_in parameters."""
    batch: int
    n_in: int
    n_out: int

    def __str__(self):
        return f"{self.batch}x{self.n_in}x{self.n_out}"


class Compiled(NamedTuple):
    """A ``@cuda.jit`` kernel as the compile check compiles it: ``label`` (its row in
    benchmarks/cuda_resources.py), ``module`` of kernels/cuda, ``attr`` the kernel or,
    when ``factory_arg`` is not None, the cached factory called with it (a tuple: its
    arguments), and
    ``signature``: its argument types as tokens (see :func:`argument_types`)."""
    label: str
    module: str
    attr: str
    signature: str
    factory_arg: object = None

    def kernel(self):
        """The kernel object (imports kernels/cuda: numba.cuda)."""
        obj = getattr(importlib.import_module(f"{__package__}.cuda.{self.module}"), self.attr)
        if self.factory_arg is None:
            return obj
        return obj(*self.factory_arg) if isinstance(self.factory_arg, tuple) else \
            obj(self.factory_arg)


class Product(NamedTuple):
    """A variant of kernels/cuda/blas.py's product kernel a layer launches: ``label``,
    the transposes, the epilogue (a name in blas: STORE, BIAS_ACTIVATION, SCALE or SPLIT,
    a k-range's product into the split workspace) and the activation the epilogue
    applies (compiled for each geometry checked)."""
    label: str
    trans_a: bool
    trans_b: bool
    epilogue: str
    activation: str = "identity"


class Problem(NamedTuple):
    """One call of a kernel, ready to run and check: ``inputs`` (host arrays it reads,
    or updates in place), ``outputs`` (name -> shape of each array it writes, which the
    caller allocates in the kernel's dtype), ``want`` (name of an input or output ->
    its float64 value after the call; "value" -> the float the call returns) and
    ``flops`` (floating-point operations of the call)."""
    inputs: dict
    outputs: dict
    want: dict
    flops: int


@dataclass(frozen=True)
class Kernel:
    """One registered kernel (the module docstring says what each part is for).

    ``cpu`` and ``cuda`` are where the kernel lives in kernels.cpu / kernels.cuda:
    an attribute of the package, or "module.attribute" for one that the package does
    not export. ``activations``: the activation names it is checked and timed with
    (empty when it takes no activation code); ``bench_sizes``: the sizes asv times it
    at.
    """
    name: str
    inputs: Callable      # (rng, Sizes, dtype, code, slope) -> (host arrays, output shapes)
    reference: Callable   # (host arrays, code, slope) -> {name: float64 want}
    launch: Callable      # (kernel function, arrays, code, slope) -> returned value
    flops: Callable       # (Sizes) -> int
    bench_sizes: tuple
    cpu: str = None
    cuda: str = None
    activations: tuple = ()
    cuda_jit: tuple = ()
    products: tuple = ()

    def activation_codes(self):
        """The codes of :attr:`activations`; (TANH,) for a kernel that takes none (the
        code is then passed to nothing)."""
        return tuple(codes.ACTIVATION_CODES[a] for a in self.activations) or (codes.TANH,)

    def function(self, device):
        """The kernel of ``device`` ("cpu" or "cuda"), looked up now (so a patched
        attribute is seen); importing kernels.cuda for "cuda"."""
        where = self.cpu if device == "cpu" else self.cuda
        package = f"{__package__}.{device}"
        module, _, attr = (where or self.name).rpartition(".")
        return getattr(importlib.import_module(f"{package}.{module}" if module else package),
                       attr)

    def problem(self, rng, sizes, dtype, code=codes.TANH,
                slope=codes.DEFAULT_LEAKY_RELU_SLOPE, reference=True):
        """A :class:`Problem` of random inputs at ``sizes`` in ``dtype``, with its
        float64 answers (an empty ``want`` when ``reference`` is false: for timing
        alone). ``code``, ``slope``: the activation (ignored by kernels that take none)."""
        sizes = Sizes(*sizes)
        dtype = np.dtype(dtype)
        inputs, outputs = self.inputs(rng, sizes, dtype, code, slope)
        want = self.reference(inputs, code, slope) if reference else {}
        return Problem(inputs, outputs, want, self.flops(sizes))

    def call(self, device, arrays, code=codes.TANH, slope=codes.DEFAULT_LEAKY_RELU_SLOPE):
        """Run the kernel of ``device`` on ``arrays`` (from :func:`device_arrays`);
        returns what the kernel returns."""
        return self.launch(self.function(device), arrays, code, slope)

    def bound(self, device, arrays, code=codes.TANH, slope=codes.DEFAULT_LEAKY_RELU_SLOPE):
        """A call of no arguments, the kernel looked up once: what timings repeat."""
        function = self.function(device)
        return lambda: self.launch(function, arrays, code, slope)


def normal(rng, shape, dtype, scale=1.0):
    """C-contiguous random ``dtype`` data, scale * sign(z) * (MIN_ABS + |z|) for z
    standard normal: never zero."""
    z = rng.standard_normal(shape)
    return np.ascontiguousarray(np.copysign(MIN_ABS + np.abs(z), z) * scale, dtype=dtype)


def device_arrays(problem, device, dtype):
    """The arrays a call takes: copies of the problem's inputs (so the problem itself
    is never written) and fresh outputs, on the host for "cpu", on the GPU for "cuda"."""
    if device == "cuda":
        from numba import cuda
        arrays = {k: cuda.to_device(np.ascontiguousarray(v)) for k, v in problem.inputs.items()}
        arrays.update({k: cuda.device_array(s, dtype) for k, s in problem.outputs.items()})
        return arrays
    arrays = {k: np.array(v) for k, v in problem.inputs.items()}
    arrays.update({k: np.empty(s, dtype) for k, s in problem.outputs.items()})
    return arrays


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def relative_error(got, want):
    """max |got - want| / max |want| (want in float64)."""
    want = np.asarray(want, np.float64)
    got = np.asarray(got, np.float64)
    return float(np.abs(got - want).max(initial=0.0)
                 / max(np.abs(want).max(initial=0.0), 1e-300))


def max_error(problem, arrays, value):
    """The largest :func:`relative_error` of a call's results (the arrays after the
    call, and ``value``, what it returned) against ``problem.want``."""
    return max(relative_error(value if k == "value" else _host(arrays[k]), w)
               for k, w in problem.want.items())


def passes(error, dtype):
    """Whether a :func:`max_error` is within :data:`TOLERANCE` for ``dtype``."""
    return bool(error <= TOLERANCE[np.dtype(dtype).name])


# -- the kernels --------------------------------------------------------------------------

def _elems(s):
    return s.batch * s.n_out


def _activation_inputs(rng, s, dtype, code, slope):
    """S, dA (batch, out) and A = sigma(S) as the reference computes it: the backward
    is checked independently of the forward kernel."""
    S = normal(rng, (s.batch, s.n_out), dtype, scale=2.0)
    A = ref.activation_forward(S, code, slope).astype(dtype)
    return {"S": S, "A": A, "dA": normal(rng, (s.batch, s.n_out), dtype)}


def _activation_forward_inputs(rng, s, dtype, code, slope):
    return {"S": normal(rng, (s.batch, s.n_out), dtype, scale=2.0)}, {"A": (s.batch, s.n_out)}


def _backward_inputs(rng, s, dtype, code, slope):
    return _activation_inputs(rng, s, dtype, code, slope), {"dS": (s.batch, s.n_out)}


def _layer_inputs(rng, s, dtype, code, slope):
    """X (batch, in), W (out, in) scaled by 1/sqrt(in) as initialisations do, b (out,)."""
    return {"X": normal(rng, (s.batch, s.n_in), dtype),
            "W": normal(rng, (s.n_out, s.n_in), dtype, scale=s.n_in ** -0.5),
            "b": normal(rng, s.n_out, dtype)}


def _linear_forward_inputs(rng, s, dtype, code, slope):
    return _layer_inputs(rng, s, dtype, code, slope), {"S": (s.batch, s.n_out),
                                                       "A": (s.batch, s.n_out)}


def _linear_backward_inputs(rng, s, dtype, code, slope):
    arrays = _layer_inputs(rng, s, dtype, code, slope)
    del arrays["b"]
    arrays.update(_activation_inputs(rng, s, dtype, code, slope))
    return arrays, {"dS": (s.batch, s.n_out), "dX": (s.batch, s.n_in),
                    "dW": (s.n_out, s.n_in), "db": (s.n_out,)}


def _bias_activation_inputs(rng, s, dtype, code, slope):
    return ({"S": normal(rng, (s.batch, s.n_out), dtype, scale=2.0),
             "b": normal(rng, s.n_out, dtype)}, {"A": (s.batch, s.n_out)})


def _backward_bias_inputs(rng, s, dtype, code, slope):
    return _activation_inputs(rng, s, dtype, code, slope), {"dS": (s.batch, s.n_out),
                                                            "db": (s.n_out,)}


def _dS(a, code, slope):
    return ref.activation_derivative(a["S"], code, slope) * np.asarray(a["dA"], np.float64)


def _backward_bias_reference(a, code, slope):
    dS = _dS(a, code, slope)
    return {"dS": dS, "db": dS.sum(axis=0)}


def _loss_inputs(target):
    def inputs(rng, s, dtype, code, slope):
        Z = normal(rng, (s.batch, s.n_out), dtype, scale=3.0)
        if target == "labels":
            y = rng.integers(0, s.n_out, s.batch).astype(np.int64)
        else:   # in [0, 1]: bce's targets are probabilities
            y = np.ascontiguousarray(rng.random((s.batch, s.n_out)), dtype=dtype)
        return {"Z": Z, target: y}, {"dZ": (s.batch, s.n_out)}
    return inputs


def _loss_reference(name, target):
    def reference(a, code, slope):
        loss, dZ = getattr(ref, name)(a["Z"], a[target])
        return {"dZ": dZ, "value": loss}
    return reference


def _loss(name, target):
    return Kernel(
        name, _loss_inputs(target), _loss_reference(name, target),
        lambda f, a, code, slope: f(a["Z"], a[target], a["dZ"]), _elems,
        bench_sizes=(Sizes(1024, 1, 10), Sizes(256, 1, 512)),
        # labels are int64 for every loss (an empty array where targets are read)
        cuda_jit=(Compiled("loss", "losses", "_loss_kernel", "i64 m2 labels m2 m2 p1", _BLOCK),))


_LR = 0.01

_LINEAR_SIZES = (Sizes(64, 784, 128), Sizes(128, 512, 512), Sizes(256, 1024, 1024))
_ELEMENTWISE_SIZES = (Sizes(256, 1, 512),)

KERNELS = (
    Kernel("activation_forward", _activation_forward_inputs,
           lambda a, code, slope: {"A": ref.activation_forward(a["S"], code, slope)},
           lambda f, a, code, slope: f(a["S"], a["A"], code, slope), _elems,
           bench_sizes=_ELEMENTWISE_SIZES, activations=codes.ACTIVATIONS,
           cuda_jit=(Compiled("activation_forward", "activations",
                              "_activation_forward_kernel", "m2 m2 i64 f64"),)),
    Kernel("activation_backward", _backward_inputs,
           lambda a, code, slope: {"dS": _dS(a, code, slope)},
           lambda f, a, code, slope: f(a["dA"], a["A"], a["S"], a["dS"], code, slope), _elems,
           bench_sizes=_ELEMENTWISE_SIZES, activations=codes.ACTIVATIONS,
           cuda_jit=(Compiled("activation_backward", "activations",
                              "_activation_backward_kernel", "m2 m2 m2 m2 i64 f64"),)),
    # S += b in place, then A = sigma(S): linear_forward's epilogue on its own
    Kernel("bias_activation", _bias_activation_inputs,
           lambda a, code, slope: {
               "S": np.asarray(a["S"], np.float64) + a["b"],
               "A": ref.activation_forward(np.asarray(a["S"], np.float64) + a["b"], code,
                                           slope)},
           lambda f, a, code, slope: f(a["S"], a["b"], a["A"], code, slope), _elems,
           bench_sizes=_ELEMENTWISE_SIZES, activations=("tanh",),
           cpu="linear.bias_activation",
           cuda_jit=(Compiled("bias_activation", "linear", "_bias_activation_kernel",
                              "m2 v1 m2 i64 f64"),)),
    # dS = dA * sigma'(S) and db = dS.sum(0): linear_backward's first pass on its own
    Kernel("activation_backward_bias", _backward_bias_inputs,
           _backward_bias_reference,
           lambda f, a, code, slope: f(a["dA"], a["A"], a["S"], a["dS"], a["db"], code,
                                       slope), _elems,
           bench_sizes=_ELEMENTWISE_SIZES, activations=("tanh",),
           cpu="linear.activation_backward_bias",
           cuda_jit=(Compiled("backward_bias (dS, db)", "linear", "_backward_bias",
                              "m2 m2 m2 m2 v1 i64 f64", _TILE),)),
    # one product (2*batch*in*out) with the bias and activation fused into its epilogue
    Kernel("linear_forward", _linear_forward_inputs,
           lambda a, code, slope: dict(zip("SA", ref.linear_forward(a["X"], a["W"], a["b"],
                                                                    code, slope))),
           lambda f, a, code, slope: f(a["X"], a["W"], a["b"], code, slope, a["S"], a["A"]),
           lambda s: 2 * s.batch * s.n_in * s.n_out,
           bench_sizes=_LINEAR_SIZES, activations=("tanh",),
           products=tuple(Product(f"fwd +b {name}", False, True, "BIAS_ACTIVATION", name)
                          for name in ("identity", "relu", "tanh", "gelu"))),
    # the sigma'/db pass (activation_backward_bias's kernel), then dW and dX: 2 products
    Kernel("linear_backward", _linear_backward_inputs,
           lambda a, code, slope: dict(zip(("dS", "dX", "dW", "db"), ref.linear_backward(
               a["dA"], a["S"], a["X"], a["W"], code, slope))),
           lambda f, a, code, slope: f(a["dA"], a["A"], a["S"], a["X"], a["W"], code, slope,
                                       a["dS"], a["dX"], a["dW"], a["db"], True),
           lambda s: 4 * s.batch * s.n_in * s.n_out,
           bench_sizes=_LINEAR_SIZES, activations=("tanh",),
           products=(Product("dW = dS.T@X", True, False, "STORE"),
                     Product("dX = dS@W", False, False, "STORE"))),
    _loss("softmax_cross_entropy", "labels"),
    _loss("mse", "T"),
    _loss("bce_with_logits", "T"),
    # params -= lr * grads over n_out * n_in parameters (a layer's W): two flops each.
    # The parameters are of the size of one step, so that the check sees the step: with
    # parameters of 1 a learning rate off by 1% would change them by only 1e-4.
    Kernel("sgd_update",
           lambda rng, s, dtype, code, slope: (
               {"p": normal(rng, s.n_out * s.n_in, dtype, scale=_LR),
                "g": normal(rng, s.n_out * s.n_in, dtype)}, {}),
           lambda a, code, slope: {"p": ref.sgd_update(a["p"], a["g"], _LR)},
           lambda f, a, code, slope: f(a["p"], a["g"], _LR),
           lambda s: 2 * s.n_out * s.n_in,
           bench_sizes=(Sizes(1, 1024, 64), Sizes(1, 1024, 1024)),
           cuda_jit=(Compiled("sgd", "optim", "_sgd_kernel", "counter v1 v1 p1"),)),
)

BY_NAME = {k.name: k for k in KERNELS}
assert len(BY_NAME) == len(KERNELS), "a kernel is registered twice"

# Public names of kernels.cpu / kernels.cuda that are not registered kernels, and why.
_NETWORK = ("a whole network's pass, composed of the registered layer, loss and update "
            "kernels; checked against reference.network_* in tests/test_kernels_cpu.py, "
            "the CUDA passes against the CPU ones in tests/test_cuda_network.py")
_OPTIMIZER = ("an optimizer's update (optimizer_update or what it launches), stateful over "
              "steps; its float64 references are numpy forms of torch.optim's documented "
              "algorithms in tests/test_optim.py (and torch.optim itself there), the CUDA "
              "twin is checked against the CPU one in tests/test_cuda_kernels.py")
_SKLEARN = ("scikit-learn's MLP training (output losses, L2 term, Adam's epsilon, whole "
            "epochs), run on the host for either device; checked against scikit-learn "
            "itself in tests/test_estimators.py and tests/test_sklearn_mlp_suite.py")
NOT_STANDALONE = {
    "loss_forward_backward": "the dispatcher over the three registered losses, each of "
                             "which runs through it",
    "network_forward": _NETWORK, "network_backward": _NETWORK, "backprop": _NETWORK,
    "network_loss": _NETWORK, "network_train_step": _NETWORK,
    "network_train_epoch": _NETWORK, "network_passes": _NETWORK,
    "training_passes": ("chooses the whole-network training passes compiled for one "
                        "optimizer (" + _NETWORK + "); each optimizer's update compiled "
                        "alone is checked against the general update (to rounding) in "
                        "tests/test_optim_specialised.py"),
    "optimizer_update": _OPTIMIZER,
    "grad_norm": "gradient clipping's norm inside optimizer_update (max_grad_norm); "
                 "tests/test_cuda_kernels.py and tests/test_cuda_clipping.py",
    "clip_scale": "gradient clipping's factor inside optimizer_update (max_grad_norm); "
                  "tests/test_cuda_clipping.py",
    "gemm": "the product core of linear_forward and linear_backward (which are "
            "registered, with their product variants), BLAS's ?gemm on both devices; "
            "tests/test_cuda_kernels.py checks every transpose and geometry of the CUDA "
            "one, tests/test_odd_strides.py and tests/test_twins.py the CPU one",
    "network_jacobian": _NETWORK,
    "output_loss_grad": _SKLEARN, "l2_penalty": _SKLEARN, "adam_eps_at": _SKLEARN,
    "sklearn_passes": _SKLEARN,
    "config": "the CUDA launch settings, not a kernel",
    "launch_config": "a context manager that changes the CUDA launch settings, not a kernel",
}

# @cuda.jit kernels launched by something in NOT_STANDALONE (or by host code outside the
# kernels' API), compiled by the compile check like the registered kernels' own.
LAUNCHED_ELSEWHERE = (
    Compiled("sum_squares", "optim", "_sum_squares_kernel", "v1 p1", _BLOCK),
    # the clipping factor: a one-element float64 device array (p1) the updates read
    Compiled("clip_factor", "optim", "_clip_factor_kernel", "p1 i64 f64 p1"),
    # the updates: their clipping factor and their hyperparameters (plan.DeviceScalars)
    # are one-element and six-element float64 device arrays (p1)
    Compiled("sgd_weight_decay", "optim", "_sgd_weight_decay_kernel",
             "counter v1 v1 p1 p1"),
    Compiled("sgd_momentum", "optim", "_sgd_momentum_kernel",
             "counter v1 v1 v1 p1 p1 b b"),
    Compiled("adam", "optim", "_adam_kernel", "counter v1 v1 v1 v1 v1 p1 p1 cursor b"),
    Compiled("rmsprop", "optim", "_rmsprop_kernel", "counter v1 v1 v1 v1 v1 p1 p1 b"),
    Compiled("store_scalars", "plan", "_store_scalars", "p1 f64 f64 f64 f64 f64 f64"),
    # fit's shuffle of a data set on the GPU: rows of X or targets, and of int64 labels
    Compiled("take_rows", "rows", "_take_rows_2d", "m2 labels m2"),
    Compiled("take_rows (1-D)", "rows", "_take_rows_1d", "labels labels labels"),
    Compiled("divide (all-reduced gradients)", "optim", "_divide_kernel", "v1 f64"),
    # the launch plan's loss ring: partials, nblocks, counters, ring, cursor ([slot,
    # step], plan.RingCursor), capacity; and the cursor's move
    Compiled("record_step", "plan", "_record_step", "p1 i64 counter counter p1 cursor i64"),
    Compiled("move_cursor", "plan", "_move_cursor", "cursor i64 i64"),
    Compiled("check_inputs", "plan", "_check_inputs", "m2 labels m2 i64 b counter"),
    # the jacobian's one-hot seed and its copy of dX into J[:, k, :]
    Compiled("one_hot", "jacobian", "_one_hot", "m2 i64"),
    Compiled("store_column", "jacobian", "_store_column", "m2 m3 i64"),
    # a split product's sum of its k-ranges with each epilogue (blas.STORE = 0, SCALE =
    # 2, BIAS_ACTIVATION = 1 with tanh = 2): workspace, C, bias, out, slope, alpha, beta
    Compiled("split_sum (store)", "blas", "_split_sum", "m3 m2 v1 m2 f64 f64 f64", (0, 0)),
    Compiled("split_sum (scale)", "blas", "_split_sum", "m3 m2 v1 m2 f64 f64 f64", (2, 0)),
    Compiled("split_sum (+b tanh)", "blas", "_split_sum", "m3 m2 v1 m2 f64 f64 f64",
             (1, 2)),
    # the fused step of a narrow network (the launch plan's, for rows 8, tiles of 64,
    # 256 threads): params, the layout (sizes, w_off, b_off, act_codes as int64, slopes
    # float64), loss code, X, labels, targets, WA, WS, out, dZ, partial grads, partials
    Compiled("fused_step", "fused", "_fused_kernel",
             "v1 labels labels labels labels p1 i64 m2 labels m2 v1 v1 m2 m2 m2 p1",
             (8, 64, _BLOCK, "float32")),
    Compiled("reduce_partial_grads", "fused", "_reduce_partial_grads", "m2 i64 v1"),
)

# Product variants launched by something in NOT_STANDALONE: gemm with BLAS's alpha and
# beta (C = alpha op(A) op(B) + beta C).
PRODUCTS_ELSEWHERE = (Product("C = a*A@B + b*C", False, False, "SCALE"),)

# The split products (kernels/cuda/blas.py, SPLIT: one k-range's product into a
# workspace), run on the smallest geometry only: a layer's forward, dW and dX.
SPLIT_PRODUCTS = (Product("fwd split", False, True, "SPLIT"),
                  Product("dW split", True, False, "SPLIT"),
                  Product("dX split", False, False, "SPLIT"))


def argument_types(signature, dtype):
    """numba types of a :class:`Compiled` signature for the dtype name ``dtype``:
    m3 / m2 / v1 a C-contiguous 3-D / 2-D / 1-D array of dtype; p1 of float64 (partial sums, the
    clipping factor); labels of int64; counter of int32 (the updates' non-finite
    count); cursor of int64 (a step's ring slot and number, plan.RingCursor); i64, f64, b the
    int64, float64 and bool scalars the launchers pass."""
    from numba import types
    f = getattr(types, dtype)
    table = {"m3": types.Array(f, 3, "C"), "m2": types.Array(f, 2, "C"), "v1": types.Array(f, 1, "C"),
             "p1": types.Array(types.float64, 1, "C"),
             "labels": types.Array(types.int64, 1, "C"),
             "counter": types.Array(types.int32, 1, "C"),
             "cursor": types.Array(types.int64, 1, "C"),
             "i64": types.int64, "f64": types.float64, "b": types.boolean}
    return tuple(table[token] for token in signature.split())


def cuda_compiled():
    """Every :class:`Compiled` kernel, each once: the registered kernels' own, then
    :data:`LAUNCHED_ELSEWHERE` (a kernel launched by several, as the losses' one, is
    listed once)."""
    seen, out = set(), []
    for c in [c for k in KERNELS for c in k.cuda_jit] + list(LAUNCHED_ELSEWHERE):
        if c.label not in seen:
            seen.add(c.label)
            out.append(c)
    return out


def products():
    """Every :class:`Product` variant the registered kernels (and PRODUCTS_ELSEWHERE's
    callers) launch."""
    return [p for k in KERNELS for p in k.products] + list(PRODUCTS_ELSEWHERE)


def bench_cases():
    """(kernel, activation or None, Sizes) for every size and activation each kernel
    is timed with (benchmarks/bench_kernels.py)."""
    return [(k, act, s) for k in KERNELS for act in (k.activations or (None,))
            for s in k.bench_sizes]
