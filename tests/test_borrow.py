"""kernels/cpu/borrow.py: an array borrowed for one compiled call is the same memory,
shape and strides, and neither it nor its views touch the owner's reference count."""
import numpy as np
import pytest
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from fastbp.kernels.cpu.borrow import borrowed


@intrinsic
def _refcount(typingctx, array):
    """The reference count in ``array``'s meminfo (NRT_MemInfo starts with it, a
    size_t), or -1 where the array has no meminfo."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        out = cgutils.alloca_once_value(builder, ir.Constant(ir.IntType(64), -1))
        with builder.if_then(cgutils.is_not_null(builder, ary.meminfo)):
            counter = builder.bitcast(ary.meminfo, ir.IntType(64).as_pointer())
            builder.store(builder.load(counter), out)
        return builder.load(out)
    return types.int64(array), codegen


@njit
def _counts_around_a_view(A, borrow):
    """(the owner's count before, while a view of A exists, the view's own count),
    with the view taken of borrowed(A) or of A itself."""
    before = _refcount(A)
    source = borrowed(A) if borrow else A
    view = source[1:]
    during = _refcount(A)
    view[0] = 7.0
    return before, during, _refcount(view)


def test_a_view_of_a_borrowed_array_counts_nothing():
    A = np.arange(6.0)
    before, during, view_count = _counts_around_a_view(A, True)
    assert before >= 1
    assert during == before
    assert view_count == -1
    assert A[1] == 7.0   # the write went to the caller's memory


def test_a_view_of_the_array_itself_is_counted():
    """The check above can fail: without borrowing, the view holds a reference."""
    A = np.arange(6.0)
    before, during, view_count = _counts_around_a_view(A, False)
    assert during == before + 1
    assert view_count == during


@njit
def _described(A):
    B = borrowed(A)
    return B.shape, B.strides, B.ctypes.data, B.sum()


@pytest.mark.parametrize("make", [
    lambda: np.arange(12, dtype=np.float32),
    lambda: np.arange(12.0).reshape(3, 4),
    lambda: np.arange(24.0).reshape(4, 6)[:, 1:5],      # a column block: strided rows
    lambda: np.arange(5, dtype=np.int64),
])
def test_borrowed_is_the_same_array(make):
    A = make()
    shape, strides, address, total = _described(A)
    assert shape == A.shape
    assert strides == A.strides
    assert address == A.ctypes.data
    assert total == A.sum()


def test_borrowed_takes_arrays_only():
    @njit
    def of_a_number(x):
        return borrowed(x)

    with pytest.raises(TypingError):
        of_a_number(1.0)
