"""Elementwise activations sigma and their derivatives on the GPU (numba.cuda twin of
kernels/cpu/activations.py).

    activation_forward   A = sigma(S)                  S, A: (batch, n) device arrays
    activation_backward  dS = dA * sigma'(S)            dA, A, S, dS: (batch, n)

The scalar device functions ``sigmoid``, ``activate`` (or ``FORWARD[code]``, the same
functions one per activation) and ``activation_derivative`` are the one CUDA definition
of every activation: the matrix-product epilogue, the fused sigma'/db pass and the
losses call them. sigma' comes from the output A where the
function allows it (codes.DERIVATIVE_FROM_OUTPUT) and from S otherwise; S may be A and
dS may be dA, as on the CPU.
"""
import math

from numba import cuda

from .. import codes
from ._jit import kernel
from ._launch import blocks, config, launch

_SQRT_HALF = 0.7071067811865476          # 1/sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327       # 1/sqrt(2*pi)
_SQRT_2_OVER_PI = 0.7978845608028654     # sqrt(2/pi)
_GELU_TANH_C = 0.044715

_IDENTITY = codes.IDENTITY
_SIGMOID = codes.SIGMOID
_TANH = codes.TANH
_RELU = codes.RELU
_LEAKY_RELU = codes.LEAKY_RELU
_SOFTPLUS = codes.SOFTPLUS
_GELU = codes.GELU


@cuda.jit(device=True)
def sigmoid(s):
    """Logistic function, without overflow for large |s|."""
    if s >= 0:
        return 1.0 / (1.0 + math.exp(-s))
    e = math.exp(s)
    return e / (1.0 + e)


@cuda.jit(device=True)
def _identity(s, slope):
    return s * 1.0


@cuda.jit(device=True)
def _sigmoid(s, slope):
    return sigmoid(s)


@cuda.jit(device=True)
def _tanh(s, slope):
    return math.tanh(s)


@cuda.jit(device=True)
def _relu(s, slope):
    return s if s > 0 else 0.0 * s


@cuda.jit(device=True)
def _leaky_relu(s, slope):
    return s if s > 0 else slope * s


@cuda.jit(device=True)
def _softplus(s, slope):
    return max(s, 0.0) + math.log1p(math.exp(-abs(s)))


@cuda.jit(device=True)
def _gelu(s, slope):
    return 0.5 * s * (1.0 + math.erf(s * _SQRT_HALF))


@cuda.jit(device=True)
def _gelu_tanh(s, slope):
    inner = _SQRT_2_OVER_PI * (s + _GELU_TANH_C * s * s * s)
    return 0.5 * s * (1.0 + math.tanh(inner))


# FORWARD[code](s, slope) = sigma(s): one small device function per activation, for
# kernels that fix the activation at compile time (the matrix-product epilogue, whose
# unrolled loop would not stay in registers around a branch over every activation).
FORWARD = (_identity, _sigmoid, _tanh, _relu, _leaky_relu, _softplus, _gelu, _gelu_tanh)
assert len(FORWARD) == len(codes.ACTIVATIONS)
# Activations of a few instructions: a fully unrolled loop of them stays small enough
# for the compiler to unroll it (the others call exp/tanh/erf; see blas.py's epilogue).
CHEAP = frozenset((codes.IDENTITY, codes.RELU, codes.LEAKY_RELU))


@cuda.jit(device=True)
def activate(s, code, slope):
    """sigma(s) for the activation ``code``; ``slope`` is leaky_relu's negative slope."""
    if code == _IDENTITY:
        return _identity(s, slope)
    if code == _SIGMOID:
        return _sigmoid(s, slope)
    if code == _TANH:
        return _tanh(s, slope)
    if code == _RELU:
        return _relu(s, slope)
    if code == _LEAKY_RELU:
        return _leaky_relu(s, slope)
    if code == _SOFTPLUS:
        return _softplus(s, slope)
    if code == _GELU:
        return _gelu(s, slope)
    return _gelu_tanh(s, slope)


@cuda.jit(device=True)
def activation_derivative(a, s, code, slope):
    """sigma'(s), computed from the output ``a`` where possible, else from ``s``."""
    if code == _IDENTITY:
        return 1.0
    if code == _SIGMOID:
        return a * (1.0 - a)
    if code == _TANH:
        return 1.0 - a * a
    if code == _RELU:
        return 1.0 if a > 0 else 0.0
    if code == _LEAKY_RELU:
        return 1.0 if a > 0 else slope
    if code == _SOFTPLUS:
        return sigmoid(s)
    if code == _GELU:
        return (0.5 * (1.0 + math.erf(s * _SQRT_HALF))
                + s * _INV_SQRT_2PI * math.exp(-0.5 * s * s))
    # GELU_TANH
    inner = _SQRT_2_OVER_PI * (s + _GELU_TANH_C * s * s * s)
    t = math.tanh(inner)
    dinner = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * s * s)
    return 0.5 * (1.0 + t) + 0.5 * s * (1.0 - t * t) * dinner


@kernel
def _activation_forward_kernel(S, A, code, slope):
    n = S.shape[1]
    idx = cuda.grid(1)
    if idx < S.shape[0] * n:
        i = idx // n
        j = idx - i * n
        A[i, j] = activate(S[i, j], code, slope)


@kernel
def _activation_backward_kernel(dA, A, S, dS, code, slope):
    n = dA.shape[1]
    idx = cuda.grid(1)
    if idx < dA.shape[0] * n:
        i = idx // n
        j = idx - i * n
        dS[i, j] = dA[i, j] * activation_derivative(A[i, j], S[i, j], code, slope)


def activation_forward(S, A, code, slope):
    """A = sigma(S), elementwise. S, A: (batch, n) device arrays, one dtype; A may be S."""
    total = S.shape[0] * S.shape[1]
    if total == 0:
        return
    tpb = config.block
    launch(_activation_forward_kernel, blocks(total, tpb), tpb, (S, A, code, slope))


def activation_backward(dA, A, S, dS, code, slope):
    """dS = dA * sigma'(S), elementwise. All (batch, n) device arrays; dS may be dA.

    A is read for derivatives from the output, S for the others; pass A for S when
    ``code`` is in ``codes.DERIVATIVE_FROM_OUTPUT`` and S was not kept.
    """
    total = dA.shape[0] * dA.shape[1]
    if total == 0:
        return
    tpb = config.block
    launch(_activation_backward_kernel, blocks(total, tpb), tpb, (dA, A, S, dS, code, slope))
