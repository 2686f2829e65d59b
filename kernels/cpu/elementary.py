"""exp, expm1, tanh and the logistic function in plain float64 arithmetic, so that
LLVM vectorises the loops that call them.

numba turns math.exp and math.tanh into calls to the C library, one element at a
time: 14-27 ns per element here against about 1 ns for these versions in AVX2 lanes,
which made tanh, not the matrix products, the cost of a 784-512-512-10 step. Each
function takes and returns float64 (float32 arrays are widened per element); all are
accurate to a few units in the last place over their whole range (tests compare them
with numpy), keep NaN as NaN and give the limits at +-inf.

They are inlined into the kernels (numba calls between compiled functions are not
inlined by LLVM, and a call per element defeats vectorisation), so they are compiled
with the kernels' flags, which for that reason exclude "reassoc" (see _jit.py): the
rounding trick in ``exp`` (adding and subtracting 1.5 * 2**52) must survive.
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._jit import scalar as elementary

_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238     # ln 2 split in two (Cody and Waite) so that
_LN2_LO = 1.9082149292705877e-10  # k * ln2 is subtracted without rounding error
_ROUNDER = 6755399441055744.0     # 1.5 * 2**52: adding it rounds to an integer


@intrinsic
def _bits(typingctx, x):
    """The IEEE-754 bits of a float64, as an int64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bits are ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@elementary
def exp(x):
    """e**x for a float64 x."""
    x = float(x)
    # Beyond these e**x is 0 or inf anyway; clamping keeps k's bits in range below.
    # (Written as selects, not min/max, so that NaN passes through as NaN.)
    x = -746.0 if x < -746.0 else x
    x = 710.0 if x > 710.0 else x
    # x = k ln2 + r with integer k and |r| <= ln2 / 2; e**x = 2**k e**r.
    shifted = x * _LOG2E + _ROUNDER      # k sits in the low bits of the mantissa
    k = shifted - _ROUNDER
    r = (x - k * _LN2_HI) - k * _LN2_LO
    # e**r by its Taylor series to r**13/13! (< 1e-17 relative for |r| <= 0.35)
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # 2**k as 2**k1 * 2**k2 built from exponent bits: each half stays a normal number
    # over k in [-1077, 1025], so the product rounds to denormals, or overflows to
    # inf, exactly where e**x does.
    k_int = _bits(shifted) - _bits(_ROUNDER)
    k1 = k_int >> 1
    k2 = k_int - k1
    return (p * _from_bits((k1 + 1023) << 52)) * _from_bits((k2 + 1023) << 52)


@elementary
def expm1(x):
    """e**x - 1 for a float64 x, accurate near 0 (no cancellation)."""
    x = float(x)
    # |x| <= 1/2: Taylor series to x**15/15!; elsewhere e**x - 1 loses nothing
    q = 1.0 / 1307674368000.0
    q = q * x + 1.0 / 87178291200.0
    q = q * x + 1.0 / 6227020800.0
    q = q * x + 1.0 / 479001600.0
    q = q * x + 1.0 / 39916800.0
    q = q * x + 1.0 / 3628800.0
    q = q * x + 1.0 / 362880.0
    q = q * x + 1.0 / 40320.0
    q = q * x + 1.0 / 5040.0
    q = q * x + 1.0 / 720.0
    q = q * x + 1.0 / 120.0
    q = q * x + 1.0 / 24.0
    q = q * x + 1.0 / 6.0
    q = q * x + 0.5
    q = q * x * x + x
    e = exp(x) - 1.0
    return q if abs(x) <= 0.5 else e


@elementary
def tanh(x):
    """tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)) with the sign of x."""
    x = float(x)
    em = expm1(-2.0 * abs(x))
    t = -em / (2.0 + em)
    return t if x >= 0.0 else -t


@elementary
def sigmoid(x):
    """The logistic function 1 / (1 + e**-x)."""
    return 1.0 / (1.0 + exp(-float(x)))
