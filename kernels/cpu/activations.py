"""Elementwise activations sigma and their derivatives, fused into single passes.

    activation_forward   A = sigma(S)                  S, A: (batch, n)
    activation_backward  dS = dA * sigma'(S)            dA, A, S, dS: (batch, n)

sigma' is taken from the output A where the function allows it (identity, sigmoid,
tanh, relu, leaky_relu) and from the pre-activation S otherwise (softplus, gelu,
gelu_tanh); see ``codes.DERIVATIVE_FROM_OUTPUT``. Callers may pass the same array for
S and A when the derivative comes from the output, and for dA and dS (in place).

Each activation is a pair of scalar functions, ``f(s, slope)`` and ``df(a, s, slope)``
(``PAIRS[code]``). Loops over arrays never branch on the activation code per element:
``specialised(loop)`` gives a function ``run(act_set, code, args)`` that calls
``loop(f, df, args)`` with the pair for ``code``, so numba compiles one copy of the loop
per activation, each a plain loop that LLVM vectorises (with the code tested inside the
loop, tanh ran at 3.8 ns per element instead of 1.0).

Which copies get compiled is a compile-time choice: ``act_set`` is an *activation set*, an
integer bit mask (``activation_set``) that reaches the kernels as a numba literal, and
only the activations in it are compiled in. A network's passes are compiled for the
set of activations its layers use (kernels/cpu/network.py, ``network_passes``); the
public single-layer kernels below take any code and are compiled with ``ALL``. With
all eight activations in every kernel, a network's first training step took about two
minutes to compile (benchmarks/README.md, "Compile time").
"""
import functools
import math
import types as types_module

from numba import njit, prange, types, uint64
from numba.core.errors import TypingError
from numba.extending import overload

from .. import codes
from . import elementary
from ._jit import CACHE_DIR, FASTMATH, parallel, scalar
from .blocks import PARALLEL_MIN_ELEMENTS, block_bounds, n_blocks

_SQRT_HALF = 0.7071067811865476          # 1/sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327       # 1/sqrt(2*pi)
_SQRT_2_OVER_PI = 0.7978845608028654     # sqrt(2/pi)
_GELU_TANH_C = 0.044715

sigmoid = elementary.sigmoid


@scalar
def _identity(s, slope):
    return s


@scalar
def _identity_grad(a, s, slope):
    return 1.0


@scalar
def _sigmoid(s, slope):
    return elementary.sigmoid(s)


@scalar
def _sigmoid_grad(a, s, slope):
    return a * (1.0 - a)


@scalar
def _tanh(s, slope):
    # float32 s: tanh_for_float32, the same float32 results at less cost (elementary.py)
    return elementary.tanh_as(s)


@scalar
def _tanh_grad(a, s, slope):
    return 1.0 - a * a


@scalar
def _relu(s, slope):
    return s if s > 0 else 0.0 * s


@scalar
def _relu_grad(a, s, slope):
    return 1.0 if a > 0 else 0.0


@scalar
def _leaky_relu(s, slope):
    return s if s > 0 else slope * s


@scalar
def _leaky_relu_grad(a, s, slope):
    # the slope is positive, so a > 0 exactly when s > 0
    return 1.0 if a > 0 else slope


@scalar
def _softplus(s, slope):
    # log(1 + e^s) = max(s, 0) + log1p(e^-|s|): no overflow for large s.
    return max(s, 0.0) + math.log1p(elementary.exp(-abs(s)))


@scalar
def _softplus_grad(a, s, slope):
    return elementary.sigmoid(s)


@scalar
def _gelu(s, slope):
    return 0.5 * s * (1.0 + math.erf(s * _SQRT_HALF))


@scalar
def _gelu_grad(a, s, slope):
    return (0.5 * (1.0 + math.erf(s * _SQRT_HALF))
            + s * _INV_SQRT_2PI * elementary.exp(-0.5 * s * s))


# gelu_tanh keeps elementary.tanh, not tanh_as: its inner value is float64 whatever the
# array's dtype, and tanh_for_float32's float64 result differs from tanh's in the last
# bits, which would then reach the float32 output.
@scalar
def _gelu_tanh(s, slope):
    inner = _SQRT_2_OVER_PI * (s + _GELU_TANH_C * s * s * s)
    return 0.5 * s * (1.0 + elementary.tanh(inner))


@scalar
def _gelu_tanh_grad(a, s, slope):
    inner = _SQRT_2_OVER_PI * (s + _GELU_TANH_C * s * s * s)
    t = elementary.tanh(inner)
    dinner = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * s * s)
    return 0.5 * (1.0 + t) + 0.5 * s * (1.0 - t * t) * dinner


# (f, df) of each activation, indexed by its code (kernels/codes.py).
PAIRS = (
    (_identity, _identity_grad), (_sigmoid, _sigmoid_grad), (_tanh, _tanh_grad),
    (_relu, _relu_grad), (_leaky_relu, _leaky_relu_grad), (_softplus, _softplus_grad),
    (_gelu, _gelu_grad), (_gelu_tanh, _gelu_tanh_grad),
)
assert len(PAIRS) == len(codes.ACTIVATIONS)


def activation_set(act_codes):
    """The activation set (a bit mask, bit ``code`` set) of the codes ``act_codes``."""
    mask = 0
    for code in act_codes:
        mask |= 1 << int(code)
    return mask


ALL = activation_set(range(len(codes.ACTIVATIONS)))   # every activation


# Sets of up to INLINE_MAX activations get their loops inlined into the kernel that runs
# them; larger sets (ALL) call one function per activation instead. Both vectorise the
# same loop and give the same bits; what differs is compile time. LLVM optimises a
# function holding eight inlined activation loops (sixteen in backward: in place or
# not) far more slowly than eight functions of one loop each, and every call site with
# new argument types compiled the whole chain again: ALL's float32 kernels and network
# passes took 448 s of CPU to compile with every loop inlined, 133 s with a function per
# activation (the shared kernels of tests/conftest.py, one process). A network's own set
# (one or two activations: its hidden one and its output's) compiles a few percent
# faster inlined (the README's default `train`: 36.8 vs 39.5 s), and a call per row
# block costs nothing measurable beside the loop it runs.
INLINE_MAX = 2


def _bound_body(args):
    _LOOP(_F, _DF, args)   # noqa: F821 (names of each copy's own globals: _bound)


@functools.lru_cache(maxsize=None)
def _bound(loop, code, inline):
    """``loop`` with activation ``code``'s pair bound in: ``bound(args)``, inlined into
    its caller or a function of its own (``inline``: see INLINE_MAX).

    A function of its own is cached on disk like every kernel, so a process compiling a
    new caller loads it instead of compiling it again (the test suite's workers and
    subprocesses did, about 0.5 s per activation, loop and dtype). numba keys a
    closure's cache entries on its pickled cells, which differ in every process, so
    each copy is ``_bound_body`` with the loop and the pair as globals of its own, and a
    qualified name of its own: numba names a function's cache files after it."""
    f, df = PAIRS[code]
    name = f"_bound_{loop.__module__.rsplit('.', 1)[-1]}_{loop.__name__}_{code}"
    body = types_module.FunctionType(
        _bound_body.__code__, {**globals(), "_LOOP": loop, "_F": f, "_DF": df}, name)
    body.__qualname__ = name
    return njit(inline="always" if inline else "never",
                cache=CACHE_DIR is not None and not inline,
                fastmath=FASTMATH, error_model="numpy")(body)


@functools.lru_cache(maxsize=None)
def _dispatch(loop, members):
    """``dispatch(code, args)``: ``loop`` with the pair of ``code`` bound in, for codes
    among ``members`` (a tuple of codes, ascending); the last member takes every code
    not matched before it. Built as a chain of inlined tests, one per member: numba
    needs the pair of each branch fixed at compile time, and the chain grows with
    PAIRS instead of being written out per activation."""
    inline = len(members) <= INLINE_MAX
    run_last = _bound(loop, members[-1], inline)

    @njit(inline="always", fastmath=FASTMATH, error_model="numpy")
    def dispatch(code, args):
        run_last(args)

    for c in reversed(members[:-1]):
        dispatch = _test(c, _bound(loop, c, inline), dispatch)
    return dispatch


def _test(c, run_c, rest):
    """One link of ``_dispatch``'s chain: ``run_c`` for code ``c``, else ``rest``."""
    @njit(inline="always", fastmath=FASTMATH, error_model="numpy")
    def test(code, args):
        if code == c:
            run_c(args)
        else:
            rest(code, args)
    return test


def specialised(loop):
    """``run(act_set, code, args)``: ``loop(f, df, args)`` with the pair of activation
    ``code``, compiled only for the activations of the set ``act_set`` (a literal bit mask).

    ``loop`` is an inline scalar function ``loop(f, df, args)``. ``run`` compiles to one
    function per set holding a copy of ``loop`` per activation of the set (inlined, or
    a call for sets larger than INLINE_MAX) and a branch on ``code`` between them (none
    for a set of one); a ``code`` outside the set runs the set's highest activation, as
    an unknown code ran gelu_tanh before.
    """
    def run(act_set, code, args):
        raise NotImplementedError("compiled code only")

    @overload(run, prefer_literal=True)
    def _run(act_set, code, args):
        if not isinstance(act_set, types.IntegerLiteral):
            raise TypingError(f"{loop.__name__}: the activation set must be a "
                              f"compile-time constant, got {act_set}")
        mask = act_set.literal_value
        if not 0 < mask <= ALL:
            raise TypingError(f"{loop.__name__}: activation set {mask:#x} is empty or "
                              f"names unknown activations")
        dispatch = _dispatch(loop, tuple(c for c in range(len(PAIRS)) if mask >> c & 1))

        def impl(act_set, code, args):
            dispatch(code, args)
        return impl
    return run


@scalar
def _forward_rows(f, df, args):
    S, A, slope, r0, r1 = args
    for i in range(uint64(r0), uint64(r1)):
        for j in range(S.shape[1]):
            A[i, j] = f(S[i, j], slope)


@scalar
def _backward_rows(f, df, args):
    dA, A, S, dS, slope, r0, r1 = args
    if dS.ctypes.data == dA.ctypes.data:   # in place: one name, so LLVM vectorises
        for i in range(uint64(r0), uint64(r1)):
            for j in range(dA.shape[1]):
                dA[i, j] = dA[i, j] * df(A[i, j], S[i, j], slope)
    else:
        for i in range(uint64(r0), uint64(r1)):
            for j in range(dA.shape[1]):
                dS[i, j] = dA[i, j] * df(A[i, j], S[i, j], slope)


_forward_rows_for = specialised(_forward_rows)
_backward_rows_for = specialised(_backward_rows)


@parallel
def activation_forward(S, A, code, slope):
    """A = sigma(S), elementwise. S, A: (batch, n), same float dtype; A may be S."""
    batch, n = S.shape
    nblocks = n_blocks(batch, batch * n, PARALLEL_MIN_ELEMENTS)
    for blk in prange(nblocks):
        r0, r1 = block_bounds(blk, nblocks, batch)
        _forward_rows_for(ALL, code, (S, A, slope, r0, r1))


@parallel
def activation_backward(dA, A, S, dS, code, slope):
    """dS = dA * sigma'(S), elementwise. All (batch, n); dS may be dA (in place).

    A is read for derivatives from the output, S for the others; pass A for S when
    ``code`` is in ``codes.DERIVATIVE_FROM_OUTPUT`` and S was not kept.
    """
    batch, n = dA.shape
    nblocks = n_blocks(batch, batch * n, PARALLEL_MIN_ELEMENTS)
    for blk in prange(nblocks):
        r0, r1 = block_bounds(blk, nblocks, batch)
        _backward_rows_for(ALL, code, (dA, A, S, dS, slope, r0, r1))
