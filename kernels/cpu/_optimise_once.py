"""Compile time: LLVM optimises a compiled callee twice at most, not once per caller.

numba compiles every dispatcher into a library of its own. When a function calls a
compiled callee, numba links the callee library's optimised LLVM IR into the caller's
module (``linkonce_odr`` definitions, so that LLVM may inline them) and runs LLVM's
whole module pipeline, -O3, over the linked result (numba/core/codegen.py,
``CPUCodeLibrary.finalize`` then ``_optimize_final_module``, numba 0.68). fastbp's
entry points sit several compiled levels above the loops they run (network_train_step,
_backprop_layers, a layer's column blocks, the parfor gufunc, the activation's row
loop), so every loop was optimised again at each level above it: LLVM's module passes
were 41 s of the 104 s of CPU that the float64 passes of every activation took to
compile in one process (numba's own pass timings, NUMBA_LLVM_PASS_TIMINGS=1), most of
it on code already optimised below.

``install`` wraps ``_optimize_final_module``: in a library of fastbp's kernels, each
linked-in definition of at least MIN_INSTRUCTIONS LLVM instructions that the pipeline
has already run over twice (in the library that defines it, then in a callee library
that linked it in) is marked ``noinline optnone`` while the pipeline runs, so that the
pipeline optimises the caller's own code, the callees linked for the first time, and
the small helpers LLVM inlines (numba's overloads such as min and max, which must be
inlined for loops to vectorise). Then ``optnone`` is taken off again before machine
code is generated: every function is still compiled to machine code at full
optimisation (``optnone`` would also select instructions as -O0 does, without fused
multiply-adds). A function this large costs LLVM's inliner far more than its threshold
(about 250, at 5 per instruction), so callers lose no inlining numba's default would
have done; ``noinline`` stays on, which only says so.

Why twice and not once: LLVM's pipeline is not idempotent. Its second run over an
optimised loop can unroll or interleave it further and so pair multiplies and adds
differently into fused multiply-adds ("contract", _jit.py): with every callee
optimised once only, SGD with momentum and weight decay came out one rounding apart in
some parameters. After two runs the code reached the same results as numba's pipeline
run at every level, bit for bit, in every case checked (benchmarks/optimise_once.py:
every activation, loss and optimizer, both dtypes, several shapes; train_step,
train_epoch, predict), though its machine code is not byte for byte the same.
A callee loaded from numba's disk cache carries no record of what it linked, so its
callers optimise its code again as numba's pipeline does.

Measured on this project's 2-core machine, cold cache, one process (benchmarks/README.md,
"Compile time: each callee optimised twice at most"): the suite's shared float64
kernels (tests/conftest.py) 104 -> 81 s of CPU.

FASTBP_OPTIMISE_CALLEES_AGAIN=1 (read at import) restores numba's behaviour, for
comparison. Where numba's library has none of the methods this relies on, nothing is
changed (``installed`` tells which).
"""
import itertools
import re

from ._numba_wrap import asked_not_to, wrap_method

MIN_INSTRUCTIONS = 300

# the mangled names of fastbp's compiled kernels: a library that defines one is
# fastbp's (a user's function that calls a kernel counts too, and gains the same)
_FASTBP = "6fastbp7kernels"
AGAIN_ENV = "FASTBP_OPTIMISE_CALLEES_AGAIN"
_LINKED = "_fastbp_linked"   # attribute of a library: the names linked into it
_OPTNONE = re.compile(r"(?m)^(attributes #\d+ = \{[^\n]*?) optnone\b")

installed = False


def _at_least(function, count):
    """Whether ``function`` (an llvmlite ValueRef) has ``count`` instructions or more.
    Stops counting there: llvmlite walks instructions one Python object at a time, and
    counting every instruction of every linked definition was 7% of the CPU of a cold
    compile of the suite's shared kernels (py-spy, 2026-12-02)."""
    instructions = itertools.chain.from_iterable(block.instructions
                                                 for block in function.blocks)
    return next(itertools.islice(instructions, count - 1, None), None) is not None


def _linked_to_skip(library):
    """The definitions linked into ``library`` (a numba CPUCodeLibrary, about to run
    its module pipeline) that the pipeline need not optimise again: those of at least
    MIN_INSTRUCTIONS that a callee library had itself linked in, so that the pipeline
    has already run over them twice (in the library that defines them, then in the one
    that linked them). Empty when the library is not fastbp's, or when a function
    already carries optnone (numba's _dbg_optnone: left as numba makes it).

    Records on ``library`` the names of the definitions linked into it, for its
    callers."""
    module = getattr(library, "_final_module", None)
    if module is None:
        return []
    linked, twice = set(), set()
    for callee in getattr(library, "_linking_libraries", ()):
        linked.update(f.name for f in callee._get_module_for_linking().functions
                      if not f.is_declaration)
        twice.update(getattr(callee, _LINKED, ()))
    setattr(library, _LINKED, frozenset(linked))
    functions = [f for f in module.functions if not f.is_declaration]
    if not twice or not any(_FASTBP in f.name for f in functions):
        return []
    skip = []
    for f in functions:
        attributes = b" ".join(f.attributes)
        if b"optnone" in attributes:
            return []
        if (f.name in twice and b"alwaysinline" not in attributes
                and _at_least(f, MIN_INSTRUCTIONS)):
            skip.append(f)
    return skip


def install(codegen_module):
    """Wrap ``codegen_module.CPUCodeLibrary._optimize_final_module`` (see the module
    doc); idempotent. Returns whether the wrapper is in place."""
    global installed
    library_class = getattr(codegen_module, "CPUCodeLibrary", None)
    if not all(hasattr(library_class, name) for name in (
            "_optimize_final_module", "_get_module_for_linking", "finalize")):
        return False
    from llvmlite import binding

    def make_wrapper(optimize):
        def _optimize_final_module(self):
            skip = _linked_to_skip(self)
            for f in skip:
                f.add_function_attribute("noinline")
                f.add_function_attribute("optnone")
            optimize(self)
            if skip:
                # llvmlite cannot remove an attribute: through the IR's text, as numba
                # itself rebuilds modules (remove_redundant_nrt_refct, add_ir_module)
                old = self._final_module
                text, count = _OPTNONE.subn(r"\1", str(old))
                if not count:   # never -O0 machine code silently: say how to undo this
                    raise RuntimeError(
                        f"fastbp: optnone marked on {len(skip)} functions of "
                        f"{self.name!r} but not found in the module's text (a new LLVM "
                        f"printing attributes differently?); set {AGAIN_ENV}=1 to "
                        f"compile as numba does")
                new = binding.parse_assembly(text)
                new.name = old.name
                self._final_module = new
        return _optimize_final_module

    wrap_method(library_class, "_optimize_final_module", make_wrapper)
    installed = True
    return True


def install_unless_asked_not_to():
    """``install`` numba's codegen unless FASTBP_OPTIMISE_CALLEES_AGAIN is "1"."""
    if asked_not_to(AGAIN_ENV):
        return False
    from numba.core import codegen
    return install(codegen)
