"""Arrays borrowed for the length of one compiled call, without numba's reference counts.

    borrowed(A) -> A as an array that owns nothing (no meminfo, no parent): the same
                   type, data, shape and strides

numba counts references to every array it holds: each view made in compiled code
(``params[w0:w1].reshape(out, in)``, a column block ``S[:, j0:j1]``) and each array
passed to a compiled callee that is not inlined increments its owner's count on the
way in and decrements it on the way out, with atomic instructions (``lock inc`` and
``lock dec`` on the owner's meminfo). A training step makes hundreds of views and
calls: on a 64-64-10 network at batch 32 those two instructions took 18% of the
compiled step's samples under ``perf`` (2026-12-02; benchmarks/README.md, "numba's
reference counts, and the update's non-finite count"), and with two threads the
parallel regions make both cores increment the same counters. An array whose meminfo
is NULL is counted by nobody: numba's NRT_incref and NRT_decref return at once for it,
as they do for arrays made from raw pointers (``numba.carray``).

Safe where the caller keeps the original arrays alive for the whole call, which a
compiled entry called from Python always does (its arguments are the caller's
references), and where no borrowed array or view of one outlives the call: an entry
must not return one (boxing it would give Python an array over memory nobody keeps
alive) nor store one anywhere that lasts. The entries that use it
(kernels/cpu/network.py) return numbers only.
"""
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def borrowed(typingctx, array):
    """``array`` with its meminfo and parent set to NULL (the module doc says when
    that is safe)."""
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, signature, args):
        # make_array copies the struct into a stack slot: the caller's value is untouched
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()
    return array(array), codegen
