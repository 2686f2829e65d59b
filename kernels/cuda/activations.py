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


@cuda.jit(device=True)
def _identity_grad(a, s, slope):
    return 1.0


@cuda.jit(device=True)
def _sigmoid_grad(a, s, slope):
    return a * (1.0 - a)


@cuda.jit(device=True)
def _tanh_grad(a, s, slope):
    return 1.0 - a * a


@cuda.jit(device=True)
def _relu_grad(a, s, slope):
    return 1.0 if a > 0 else 0.0


@cuda.jit(device=True)
def _leaky_relu_grad(a, s, slope):
    return 1.0 if a > 0 else slope


@cuda.jit(device=True)
def _softplus_grad(a, s, slope):
    return sigmoid(s)


@cuda.jit(device=True)
def _gelu_grad(a, s, slope):
    return (0.5 * (1.0 + math.erf(s * _SQRT_HALF))
            + s * _INV_SQRT_2PI * math.exp(-0.5 * s * s))


@cuda.jit(device=True)
def _gelu_tanh_grad(a, s, slope):
    inner = _SQRT_2_OVER_PI * (s + _GELU_TANH_C * s * s * s)
    t = math.tanh(inner)
    dinner = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * s * s)
    return 0.5 * (1.0 + t) + 0.5 * s * (1.0 - t * t) * dinner


# FORWARD[code](s, slope) = sigma(s) and DERIVATIVE[code](a, s, slope) = sigma'(s), one
# small device function per activation, indexed by its code (kernels/codes.py). Kernels
# that fix the activation at compile time take FORWARD[code] directly (the
# matrix-product epilogue, whose unrolled loop would not stay in registers around a
# branch over every activation); the others call ``activate`` and
# ``activation_derivative``, which branch on the code.
FORWARD = (_identity, _sigmoid, _tanh, _relu, _leaky_relu, _softplus, _gelu, _gelu_tanh)
DERIVATIVE = (_identity_grad, _sigmoid_grad, _tanh_grad, _relu_grad, _leaky_relu_grad,
              _softplus_grad, _gelu_grad, _gelu_tanh_grad)
assert len(FORWARD) == len(DERIVATIVE) == len(codes.ACTIVATIONS)
# Activations of a few instructions: a fully unrolled loop of them stays small enough
# for the compiler to unroll it (the others call exp/tanh/erf; see blas.py's epilogue).
CHEAP = codes.CHEAP


def _dispatch(table, code0=0):
    """``f(x..., code, slope)``: ``table[code](x..., slope)`` for the codes from
    ``code0`` on, as a chain of device functions that each test one code; the last
    entry takes every code not matched before it (an unknown code runs it, as on the
    CPU). The chain is built from the table, so it grows with it."""
    f = table[code0]
    if code0 == len(table) - 1:
        if table is FORWARD:
            @cuda.jit(device=True)
            def last(s, code, slope):
                return f(s, slope)
        else:
            @cuda.jit(device=True)
            def last(a, s, code, slope):
                return f(a, s, slope)
        return last
    rest = _dispatch(table, code0 + 1)
    if table is FORWARD:
        @cuda.jit(device=True)
        def test(s, code, slope):
            if code == code0:
                return f(s, slope)
            return rest(s, code, slope)
    else:
        @cuda.jit(device=True)
        def test(a, s, code, slope):
            if code == code0:
                return f(a, s, slope)
            return rest(a, s, code, slope)
    return test


# activate(s, code, slope) = sigma(s) for the activation ``code``; ``slope`` is
# leaky_relu's negative slope.
activate = _dispatch(FORWARD)
# activation_derivative(a, s, code, slope) = sigma'(s), from the output ``a`` where the
# activation allows it (codes.DERIVATIVE_FROM_OUTPUT), else from ``s``.
activation_derivative = _dispatch(DERIVATIVE)


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
