"""exp, expm1, tanh and the logistic function in plain float64 arithmetic, so that
LLVM vectorises the loops that call them; ``tanh_as`` picks a cheaper tanh for float32
inputs that rounds to the same float32 results.

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
import warnings

from llvmlite import ir
from numba import types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import intrinsic, overload

from ._jit import FASTMATH, scalar as elementary

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
def _reduce(x):
    """(shifted, r) with x = k ln2 + r, integer k, |r| <= ln2 / 2 (and NaN for NaN):
    ``shifted`` holds k in the low bits of its mantissa (``_k_of``), k = shifted -
    _ROUNDER as a float. k * _LN2_HI is exact, and so r as accurate as x, for
    |k| < 2**21 (ln 2's high part ends in 21 zero bits): |x| up to about 1.4e6."""
    shifted = x * _LOG2E + _ROUNDER      # k sits in the low bits of the mantissa
    k = shifted - _ROUNDER
    return shifted, (x - k * _LN2_HI) - k * _LN2_LO


@elementary
def _k_of(shifted):
    """The integer k of ``_reduce``'s ``shifted``, as an int64."""
    return _bits(shifted) - _bits(_ROUNDER)


@elementary
def _pow2(k):
    """2**k as a float64, for an int64 k in [-1022, 1023] (built from exponent bits)."""
    return _from_bits((k + 1023) << 52)


@elementary
def _exp_reduced(r):
    """e**r for a reduced |r| <= ln2 / 2 (``_reduce``'s r), by its Taylor series to
    r**13/13! (< 1e-17 relative for |r| <= 0.35)."""
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
    return p * r + 1.0


@elementary
def exp(x):
    """e**x for a float64 x."""
    x = float(x)
    # Beyond these e**x is 0 or inf anyway; clamping keeps k's bits in range below.
    # (Written as selects, not min/max, so that NaN passes through as NaN.)
    x = -746.0 if x < -746.0 else x
    x = 710.0 if x > 710.0 else x
    # x = k ln2 + r with integer k and |r| <= ln2 / 2; e**x = 2**k e**r.
    shifted, r = _reduce(x)
    p = _exp_reduced(r)
    # 2**k as 2**k1 * 2**k2 built from exponent bits: each half stays a normal number
    # over k in [-1077, 1025], so the product rounds to denormals, or overflows to
    # inf, exactly where e**x does.
    k_int = _k_of(shifted)
    k1 = k_int >> 1
    k2 = k_int - k1
    return (p * _pow2(k1)) * _pow2(k2)


@elementary
def _expm1_series(x):
    """e**x - 1 by its Taylor series to x**15/15! (< 1e-17 relative for |x| <= 1/2)."""
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
    return q * x * x + x


# _expm1_reduced's q(r), highest degree first: mpmath.chebyfit of q(r) = (e**r - 1 -
# r) / r**2 (1/2 at r = 0) on [-a, a], a = (ln 2 / 2)(1 + 1e-6) (the reduction's |r|
# with room for its rounding; the margin is part of the recipe), 10 Chebyshev points,
# so q has degree 9 and r + r**2 q(r) degree 11, mp.dps = 50 (mpmath 1.3.0), rounded
# to float64: Chebyshev interpolation of q, close to but not q's minimax polynomial.
# In exact arithmetic r + r**2 q(r) is then within 4.1e-17 of e**r - 1, relatively, at
# the worst of 40001 points of [-a, a] (a sampled maximum of a smooth error curve, not a
# proof): below float64's rounding unit.
_Q_REDUCED = (2.5100375929185925e-08, 2.762007600563138e-07, 2.7557268480106926e-06,
              2.480152132210459e-05, 0.00019841269863040675, 0.001388888891719689,
              0.008333333333330065, 0.041666666666624164, 0.16666666666666669,
              0.5000000000000001)


@elementary
def _expm1_reduced(r):
    """e**r - 1 for a reduced |r| <= ln2 / 2 (``_reduce``'s r): r + r**2 q(r) with the
    fitted q of degree 9 above, in 10 multiply-adds: two fewer than a Taylor series as
    accurate on this range (to r**13/13!, 1.3e-17), four fewer than _expm1_series
    (14, sized for |x| up to 1/2)."""
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = _Q_REDUCED
    q = c0
    q = q * r + c1
    q = q * r + c2
    q = q * r + c3
    q = q * r + c4
    q = q * r + c5
    q = q * r + c6
    q = q * r + c7
    q = q * r + c8
    q = q * r + c9
    return q * r * r + r


@elementary
def expm1(x):
    """e**x - 1 for a float64 x, accurate near 0 (no cancellation)."""
    x = float(x)
    # |x| <= 1/2: the series; elsewhere e**x - 1 loses nothing
    q = _expm1_series(x)
    e = exp(x) - 1.0
    return q if abs(x) <= 0.5 else e


@elementary
def _tanh_from(x, em):
    """tanh(x) from em = expm1(-2|x|): -em / (2 + em) with the sign of x; x itself for
    x = +-0 (the quotient is -0.0 for both) and NaN."""
    t = -em / (2.0 + em)
    return t if x > 0.0 else (-t if x < 0.0 else x)


@elementary
def _reduce_capped(y):
    """(2**k, r) with max(y, -40) = k ln2 + r (``_reduce``), for tanh's y = -2|x|:
    capped at -40, where e**y - 1 already rounds to -1 in float64 (e**-40 < 2**-54),
    so 2**k is a normal number and scaling by it is one exact multiplication. A
    select, so NaN passes."""
    y = -40.0 if y < -40.0 else y
    shifted, r = _reduce(y)
    return _pow2(_k_of(shifted)), r


@elementary
def tanh(x):
    """tanh(x) = -expm1(-2|x|) / (2 + expm1(-2|x|)) with the sign of x.

    expm1(y) for y = -2|x| <= 0 as ``expm1`` computes it, bit for bit, with less work
    on its exp side: y is capped at -40, where e**y - 1 already rounds to -1 (e**-40 <
    2**-54; below -40 tanh is +-1 either way), so 2**k stays normal and is applied in
    one multiplication instead of exp's two (exact either way: a power of two times
    a normal result), and exp's caps at -746 and 710 fall away. 2.4 -> 2.0 ns per
    element in a float64 loop here (benchmarks/README.md, "The float64 tanh's exp
    side"); tests/test_elementary.py checks the bits against ``expm1``'s form."""
    x = float(x)
    y = -2.0 * abs(x)
    # both sides computed, then a select (as in expm1), which keeps loops vectorised
    series = _expm1_series(y)
    two_k, r = _reduce_capped(y)
    from_exp = _exp_reduced(r) * two_k - 1.0
    return _tanh_from(x, series if abs(y) <= 0.5 else from_exp)


@elementary
def tanh_for_float32(x):
    """tanh(x) of a float32 x, as a float64 that rounds to the same float32 as
    ``tanh(x)`` does, for every one of the 2**32 float32 inputs (checked one by one:
    benchmarks/tanh_float32.py), with one polynomial instead of expm1's series and exp.

    expm1(y), y = -2|x|, comes from one reduction y = k ln2 + r (|r| <= ln2 / 2):
    expm1(y) = 2**k expm1(r) + (2**k - 1). Near 0, k = 0 and it is the polynomial alone;
    for k = -1 the sum cancels at most a factor 1.7; below, 2**k - 1 dominates. expm1's
    general form evaluates both its series and exp (a select keeps the loop
    vectorised); this evaluates one polynomial fitted to the reduced range
    (``_expm1_reduced``, degree 11, 10 multiply-adds where the Taylor series took 14),
    in float64 like ``tanh``, and is within a few float64 units in the last place of it
    (tests/test_elementary.py), far below float32's rounding; that the two round to
    the same float32 everywhere is the exhaustive check's result, not a consequence of
    the error bound. |y| is capped at 40, where tanh is 1 in float64, which keeps 2**k
    a normal number (NaN passes the select). A float32 tanh in float32 arithmetic
    would be faster and would change results in their last bits."""
    x = float(x)
    two_k, r = _reduce_capped(-2.0 * abs(x))
    return _tanh_from(x, two_k * _expm1_reduced(r) + (two_k - 1.0))


# Inlining tanh_for_float32 and tanh, which hold if-expressions, through the inline
# overload below makes numba (0.68, on Python 3.11) warn "variable
# '_tanh_as__locals...' is not in scope. This warning came from an internal pedantic
# check", about 35 lines per warning, on a tanh network's first compile: numba issue
# #9489 (open; it names Python 3.11 and not 3.12). The compiled code is right (the
# exhaustive float32 check, benchmarks/tanh_float32.py, and tests/test_elementary.py
# compare its results), so the warning is silenced for these variables only.
warnings.filterwarnings("ignore", message=r"variable '_tanh_as__locals",
                        category=NumbaIRAssumptionWarning)


def tanh_as(x):
    """tanh(x): ``tanh_for_float32`` for a float32 x, ``tanh`` for any other (float64
    results differ between the two in their last bits, so float64 stays on ``tanh``).
    Compiled code only: the choice is made at compile time, from x's type."""
    raise NotImplementedError("compiled code only")


@overload(tanh_as, inline="always",
          jit_options={"fastmath": FASTMATH, "error_model": "numpy"})
def _tanh_as(x):
    if x == types.float32:
        return lambda x: tanh_for_float32(x)
    return lambda x: tanh(x)


@elementary
def sigmoid(x):
    """The logistic function 1 / (1 + e**-x)."""
    return 1.0 / (1.0 + exp(-float(x)))
