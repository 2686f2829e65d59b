"""Compile time: numba's untyped passes run once per inlined function, not once per
call site.

numba inlines a function declared ``inline="always"`` (fastbp's ``scalar`` and
``inlined`` decorators, kernels/cpu/_jit.py, and the activation dispatch chain,
activations.py) in its IR, before typing: at every call site,
``InlineWorker.inline_function`` runs the whole untyped pipeline over the callee again
(bytecode to IR, closures and the callee's own inline callees inlined, which runs the
pipeline over each of those again, literal unrolling, SSA) and then copies the result
into the caller (numba/core/inline_closurecall.py, numba 0.68). fastbp's elementwise
helpers sit several inline levels deep (a kernel's row loop, the activation pair, tanh,
its exponential's range reduction) and are called from dozens of kernels, so most of
that work rebuilt IR it had built before: 10% of the CPU of a cold compile of the
suite's shared float32 kernels (tests/conftest.py; py-spy, 2026-12-02).

``install`` wraps ``inline_function``: for a function of fastbp's own (its module is
under ``fastbp.``), the IR the untyped pipeline makes is kept, and a later call site
with the same pipeline inputs gets a copy of it. Kept per function object and per
what the pipeline reads besides the bytecode: the typing context, the compile flags,
the caller's ``locals`` types and the pipeline's class (the key), and the objects the
function's global names (and a global module's attributes of those names), closure
cells and defaults hold, the same for every function inlined into it while it was
built (so a helper rebound two levels down, as a test's monkeypatch does, is seen; the
entry holds those objects, so their identities cannot be reused). Not keyed: the
target context, which numba makes anew for every compile and the untyped passes use
only to lift ``with objmode`` blocks, which fastbp's kernels have none of; numba's
rewrite registry, fixed once numba is imported.

``inline_ir`` copies the IR it is given before changing anything (it has to: numba
passes it its own callee's IR). Each copy gets a fresh ``FunctionIdentity``, as each
build had: inline_ir names the callee's variables in the caller after its
``unique_name``, and with one name for two call sites in one caller numba's parfor
pass refused the second ("Overwrite of parallel loop index", in _backprop_layers).
Variable names and block labels then differ from numba's own, so the machine code
need not be byte for byte the same; the results are, bit for bit (benchmarks/
optimise_once.py --variable FASTBP_INLINE_AGAIN: every activation, loss and
optimizer, 384 of 384 cases). Overloads inlined in typing (numba/core/typing/
templates.py) call the pipeline directly and change its result, so they are not
touched; nor is a function outside fastbp (but it counts as an input of a fastbp
function it is inlined into).

FASTBP_INLINE_AGAIN=1 (read at import) restores numba's behaviour, for comparison.
The wrapper goes in at numba's first inlining pass (``install_at_first_inlining``
says why not at import), and only over numba's own ``inline_function`` as 0.68 writes
it (``_NUMBA_INLINE_FUNCTION_NAMES``): another numba keeps its own, and ``installed``
tells which.
"""
import copy
import types

from ._numba_wrap import asked_not_to, wrap_method

AGAIN_ENV = "FASTBP_INLINE_AGAIN"
_SCOPE = "fastbp."   # the module prefix of the functions whose IR is kept
# the names numba 0.68's inline_function uses, which the wrapper does again itself
_NUMBA_INLINE_FUNCTION_NAMES = ("run_untyped_passes", "__code__", "co_freevars",
                                "inline_ir")
installed = False
_kept = {}        # function -> [(key, inputs, IR)]
_building = []    # the inputs of each function whose IR is being built, outermost first
_MISSING = object()


def _names(code):
    """The global and attribute names ``code`` and the code nested in it use."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _inputs(function):
    """((function, the objects the untyped pipeline reads from it besides its
    bytecode),): what its global names hold (and, for a global module, its attributes
    of those names, as ``module.helper`` calls are resolved while the IR is built),
    its closure cells' contents and its defaults."""
    scope = function.__globals__
    names = sorted(_names(function.__code__))
    held = [scope.get(name, _MISSING) for name in names]
    held += [getattr(value, name, _MISSING) for value in held
             if isinstance(value, types.ModuleType) for name in names]
    cells = tuple(cell.cell_contents for cell in function.__closure__ or ())
    return ((function, (tuple(held), cells, function.__defaults__,
                        function.__kwdefaults__)),)


def _same(a, b):
    """Element by element identity of two nested tuples of objects."""
    if type(a) is tuple and type(b) is tuple:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is b


def _unchanged(inputs):
    """Whether every function in ``inputs`` (as ``_inputs`` gives) still holds what it
    held then."""
    return all(_same(_inputs(function)[0][1], held) for function, held in inputs)


def _key(worker):
    # the pipeline sets enable_ssa on the flags before it runs: their value before is
    # not an input (and numba's own inlining leaves it False after the first call site)
    flags = tuple(sorted((name, repr(value))
                         for name, value in worker.flags.values().items()
                         if name != "enable_ssa"))
    local_types = tuple(sorted((name, repr(value))
                               for name, value in worker.locals.items()))
    return (worker.typingctx, type(worker.pipeline), flags, local_types)


def _untyped_ir(worker, function):
    """``worker.run_untyped_passes(function)``, or a copy of the IR it made for the
    same inputs before."""
    own = _inputs(function)
    for outer in _building:   # what the functions being built inline counts for them
        outer.extend(own)
    if not (getattr(function, "__module__", None) or "").startswith(_SCOPE):
        return worker.run_untyped_passes(function)
    key = _key(worker)
    entries = _kept.setdefault(function, [])
    for kept_key, inputs, ir in entries:
        if kept_key == key and _unchanged(inputs):
            for outer in _building:
                outer.extend(inputs)
            # numba's pipeline leaves enable_ssa False on the caller's flags: so does
            # this; and a fresh FunctionIdentity per copy (the module doc says why)
            worker.flags.enable_ssa = False
            again = copy.copy(ir)
            again.func_id = ir.func_id.derive()
            return again
    inputs = list(own)
    _building.append(inputs)
    try:
        ir = worker.run_untyped_passes(function)
    finally:
        _building.pop()
    # once per function: a helper inlined at many sites below is checked once per hit
    entries.append((key, tuple(dict(inputs).items()), ir))
    return ir


def install(worker_class):
    """Wrap ``worker_class.inline_function`` (numba's InlineWorker; see the module
    doc); idempotent. Returns whether the wrapper is in place: not where the method
    is not numba 0.68's."""
    global installed
    inline_function = getattr(worker_class, "inline_function", None)
    if not (getattr(inline_function, "_fastbp_once", False) or (
            hasattr(inline_function, "__code__")
            and inline_function.__code__.co_names == _NUMBA_INLINE_FUNCTION_NAMES)):
        return False

    def make_wrapper(inline_function):
        def inline_function_once(self, caller_ir, block, i, function, arg_typs=None):
            # numba's inline_function, with its run_untyped_passes call kept
            callee_ir = _untyped_ir(self, function)
            return self.inline_ir(caller_ir, block, i, callee_ir,
                                  function.__code__.co_freevars, arg_typs=arg_typs)
        return inline_function_once

    wrap_method(worker_class, "inline_function", make_wrapper)
    installed = True
    return True


def clear():
    """Forget every kept IR (for tests that compile helpers of their own)."""
    _kept.clear()


def install_at_first_inlining(passes_module):
    """Wrap ``passes_module.InlineInlinables.run_pass`` (numba's untyped_passes) so
    that its first run ``install``s into numba's InlineWorker; idempotent. Returns
    whether the wrapper is in place.

    Why not at once: numba imports its inliner only when a pass first needs it, and
    that module imports numba's array overloads, which fail where numpy 2.5 has no
    ``row_stack`` until fastbp.device.numpy_compat restores it (importing it with
    fastbp broke tests/test_cuda_install.py's numpy-2.5 process). Only this pass calls
    ``inline_function``."""
    pass_class = getattr(passes_module, "InlineInlinables", None)
    if not hasattr(pass_class, "run_pass"):
        return False

    def make_wrapper(run_pass):
        def run_pass_keeping_ir(self, state):
            if not installed:
                from numba.core.inline_closurecall import InlineWorker
                install(InlineWorker)
            return run_pass(self, state)
        return run_pass_keeping_ir

    wrap_method(pass_class, "run_pass", make_wrapper)
    return True


def install_unless_asked_not_to():
    """``install_at_first_inlining`` into numba's untyped passes unless
    FASTBP_INLINE_AGAIN is "1"."""
    if asked_not_to(AGAIN_ENV):
        return False
    from numba.core import untyped_passes
    return install_at_first_inlining(untyped_passes)
