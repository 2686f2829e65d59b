"""Elementwise activations sigma and their derivatives, fused into single passes.

    activation_forward   A = sigma(S)                  S, A: (batch, n)
    activation_backward  dS = dA * sigma'(S)            dA, A, S, dS: (batch, n)

sigma' is taken from the output A where the function allows it (identity, sigmoid,
tanh, relu, leaky_relu) and from the pre-activation S otherwise (softplus, gelu,
gelu_tanh); see ``codes.DERIVATIVE_FROM_OUTPUT``. Callers may pass the same array for
S and A when the derivative comes from the output, and for dA and dS (in place).
"""
import math

from numba import prange

from .. import codes
from . import elementary
from ._jit import parallel, scalar

_SQRT_HALF = 0.7071067811865476          # 1/sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327       # 1/sqrt(2*pi)
_SQRT_2_OVER_PI = 0.7978845608028654     # sqrt(2/pi)
_GELU_TANH_C = 0.044715


sigmoid = elementary.sigmoid


@scalar
def activate(s, code, slope):
    """sigma(s) for the activation ``code``; ``slope`` is leaky_relu's negative slope."""
    if code == codes.IDENTITY:
        return s
    if code == codes.SIGMOID:
        return sigmoid(s)
    if code == codes.TANH:
        return elementary.tanh(s)
    if code == codes.RELU:
        return s if s > 0 else 0.0 * s
    if code == codes.LEAKY_RELU:
        return s if s > 0 else slope * s
    if code == codes.SOFTPLUS:
        # log(1 + e^s) = max(s, 0) + log1p(e^-|s|): no overflow for large s.
        return max(s, 0.0) + math.log1p(elementary.exp(-abs(s)))
    if code == codes.GELU:
        return 0.5 * s * (1.0 + math.erf(s * _SQRT_HALF))
    # GELU_TANH
    inner = _SQRT_2_OVER_PI * (s + _GELU_TANH_C * s * s * s)
    return 0.5 * s * (1.0 + elementary.tanh(inner))


@scalar
def activation_derivative(a, s, code, slope):
    """sigma'(s), computed from the output ``a`` where possible, else from ``s``."""
    if code == codes.IDENTITY:
        return 1.0
    if code == codes.SIGMOID:
        return a * (1.0 - a)
    if code == codes.TANH:
        return 1.0 - a * a
    if code == codes.RELU:
        return 1.0 if a > 0 else 0.0
    if code == codes.LEAKY_RELU:
        return 1.0 if a > 0 else slope
    if code == codes.SOFTPLUS:
        return sigmoid(s)
    if code == codes.GELU:
        return (0.5 * (1.0 + math.erf(s * _SQRT_HALF))
                + s * _INV_SQRT_2PI * elementary.exp(-0.5 * s * s))
    # GELU_TANH
    inner = _SQRT_2_OVER_PI * (s + _GELU_TANH_C * s * s * s)
    t = elementary.tanh(inner)
    dinner = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * s * s)
    return 0.5 * (1.0 + t) + 0.5 * s * (1.0 - t * t) * dinner


@parallel
def activation_forward(S, A, code, slope):
    """A = sigma(S), elementwise. S, A: (batch, n), same float dtype; A may be S."""
    batch, n = S.shape
    for i in prange(batch):
        for j in range(n):
            A[i, j] = activate(S[i, j], code, slope)


@parallel
def activation_backward(dA, A, S, dS, code, slope):
    """dS = dA * sigma'(S), elementwise. All (batch, n); dS may be dA (in place).

    A is read for derivatives from the output, S for the others; pass A for S when
    ``code`` is in ``codes.DERIVATIVE_FROM_OUTPUT`` and S was not kept.
    """
    batch, n = dA.shape
    for i in prange(batch):
        for j in range(n):
            dS[i, j] = dA[i, j] * activation_derivative(A[i, j], S[i, j], code, slope)
