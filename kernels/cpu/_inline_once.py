"""Compile time: numba's untyped passes run once per inlined function, not once per call.

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
suite's shared float32 kernels (tests/conftest.py) and a fifth of that of the
single-layer activation kernels (py-spy, 2026-12-02).

``install`` wraps ``inline_function``: for a function of fastbp's own (its module is
under ``fastbp.``), the IR the untyped pipeline makes is kept and each later call site
with the same pipeline inputs gets it again. Kept per function object, with what the
pipeline read besides the bytecode: the typing context, the compile flags, the
caller's ``locals`` types, whether SSA was asked for, and the objects the function's
global names, closure cells and defaults held (a module attribute rebound later, as a
test's monkeypatch does, gives a new entry; the entry holds those objects, so their
identities cannot be reused). ``inline_ir`` copies the IR it is given before changing
anything (it has to: numba passes it its own callee's IR), so every call site gets the
same IR as before and the same machine code: the same results bit for bit
(benchmarks/optimise_once.py --variable FASTBP_INLINE_AGAIN). Overloads inlined in
typing (numba/core/typing/templates.py) call the pipeline directly and change its
result, so they are not touched; nor is a function outside fastbp.

FASTBP_INLINE_AGAIN=1 (read at import) restores numba's behaviour, for comparison.
The wrapper goes in at numba's first inlining pass (``install_at_first_inlining``
says why not at import). Where numba's InlineWorker has no ``inline_function``,
``run_untyped_passes`` and ``inline_ir``, nothing is changed (``installed`` tells
which).
"""
import copy

from ._numba_wrap import asked_not_to, wrap_method

AGAIN_ENV = "FASTBP_INLINE_AGAIN"
_SCOPE = "fastbp."   # the module prefix of the functions whose IR is kept
installed = False
_kept = {}   # function -> [(key, inputs, IR)]


def _inputs(function):
    """The objects the untyped pipeline reads from ``function`` besides its bytecode:
    what its global names hold (a missing one as a marker), its closure cells'
    contents and its defaults."""
    missing = _inputs
    scope = function.__globals__
    named = tuple(scope.get(name, missing) for name in function.__code__.co_names)
    cells = tuple(cell.cell_contents for cell in function.__closure__ or ())
    return named, cells, function.__defaults__, function.__kwdefaults__


def _same(a, b):
    """Element by element identity of two nested tuples of objects."""
    if type(a) is tuple and type(b) is tuple:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a is b


def _key(worker, enable_ssa):
    # the pipeline sets enable_ssa on the flags before it runs: their value before is
    # not an input (and numba's own inlining leaves it False after the first call site)
    flags = tuple(sorted((name, repr(value))
                         for name, value in worker.flags.values().items()
                         if name != "enable_ssa"))
    local_types = tuple(sorted((name, repr(value))
                               for name, value in worker.locals.items()))
    return (enable_ssa, id(worker.typingctx), type(worker.pipeline), flags, local_types)


def _untyped_ir(worker, function):
    """``worker.run_untyped_passes(function)``, or the IR it made for the same inputs
    before."""
    if not (getattr(function, "__module__", None) or "").startswith(_SCOPE):
        return worker.run_untyped_passes(function)
    key, inputs = _key(worker, False), _inputs(function)
    entries = _kept.setdefault(function, [])
    for kept_key, kept_inputs, ir in entries:
        if kept_key == key and _same(kept_inputs, inputs):
            # numba's pipeline leaves this flag set on the caller's flags: so does this
            worker.flags.enable_ssa = False
            # and names each build of the IR anew (FunctionIdentity's unique_name, from
            # a counter): inline_ir names the callee's variables in the caller after
            # it, so two call sites in one caller sharing a name overwrote each other's
            # variables (a parfor's loop index, in _backprop_layers)
            again = copy.copy(ir)
            again.func_id = ir.func_id.derive()
            return again
    ir = worker.run_untyped_passes(function)
    entries.append((key, inputs, ir))
    return ir


def install(worker_class):
    """Wrap ``worker_class.inline_function`` (numba's InlineWorker; see the module
    doc); idempotent. Returns whether the wrapper is in place."""
    global installed
    if not all(hasattr(worker_class, name) for name in (
            "inline_function", "run_untyped_passes", "inline_ir")):
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
