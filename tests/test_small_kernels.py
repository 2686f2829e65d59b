"""kernels/cpu/blas.py's gemm cut into blocks for OpenBLAS's small-matrix kernels: the
cut follows the permit it is written for, every block is computed exactly as a call
of its own would compute it, results match a float64 reference in every orientation,
and the switch follows the OpenBLAS core type."""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastbp.kernels.cpu import blas
from fastbp.kernels.cpu.blas import gemm, small_blocks, use_mkl, use_small_kernels


@pytest.fixture
def switch():
    """use_small_kernels, restored after the test; MKL off meanwhile, since the products
    it takes are not cut (tests/test_mkl.py tests those)."""
    before, mkl_before = use_small_kernels(), use_mkl()
    use_mkl(False)
    yield use_small_kernels
    use_small_kernels(before)
    use_mkl(mkl_before)


def _permitted(trans_a, trans_b, m, n, k):
    """OpenBLAS's SkylakeX permit as blas.py's comment gives it, for the row-major
    product C (m, n) = op(A) op(B): BLAS sees M = n, N = m, transa = trans_b, transb =
    trans_a (products with both transposed: treated as never, since gemm leaves them
    whole)."""
    M, N = n, m
    if M * N * k > 100 ** 3 or (trans_a and trans_b):
        return False
    if trans_b and not trans_a:
        return M * N <= 1200 and k >= 32
    return True


# (trans_a, trans_b, m, n, k) -> the documented cut: the yardstick's layer products
# (forward: S = X W^T; weight gradient: dW = dS^T X; input gradient: dX = dS W)
KNOWN = [
    ((False, True, 32, 64, 64), (True, 32)),      # tiny's hidden forward: 2 x 32 columns
    ((False, True, 64, 128, 784), (True, 16)),    # mnist's first forward: 8 x 16 columns
    ((True, False, 128, 784, 64), (True, 112)),   # its weight gradient: 7 x 112 columns
    ((False, True, 128, 10, 512), (False, 112)),  # medium's output forward: rows
    ((False, True, 128, 512, 784), (True, 0)),    # medium's big layers: whole (57 blocks)
    ((True, False, 512, 512, 128), (True, 0)),
    ((False, False, 128, 512, 512), (True, 0)),
    ((False, True, 64, 256, 256), (True, 16)),    # deep's forward: 16 x 16 columns
    ((False, False, 64, 256, 256), (True, 48)),   # and input gradient: 6 x 48 columns
    ((False, True, 32, 10, 64), (True, 0)),       # passes the permit as it is
    ((True, False, 784, 10, 200), (False, 496)),  # a weight gradient cut in rows
    ((True, True, 64, 256, 256), (True, 0)),      # TT: left whole
    ((False, True, 64, 256, 16), (True, 0)),      # TN with k < 32: none
]


@pytest.mark.parametrize("shape, cut", KNOWN)
def test_the_cut_of_known_products(shape, cut):
    assert small_blocks(*shape) == cut


def test_every_cut_passes_the_permit_in_at_most_16_blocks():
    rng = np.random.default_rng(3)
    for _ in range(3000):
        ta, tb = (bool(b) for b in rng.integers(0, 2, 2))
        m, n, k = (int(v) for v in rng.integers(1, 1500, 3))
        along_columns, size = small_blocks(ta, tb, m, n, k)
        if size == 0:
            continue
        assert not _permitted(ta, tb, m, n, k)
        total = n if along_columns else m
        assert 0 < size < total and size % 16 == 0
        assert -(-total // size) <= 16
        last = total - (total - 1) // size * size
        for width in (size, last):
            shape = (m, width, k) if along_columns else (width, n, k)
            assert _permitted(ta, tb, *shape), (ta, tb, m, n, k, along_columns, size)


SHAPES = [(32, 64, 64), (64, 128, 784), (128, 10, 512), (64, 256, 256), (200, 100, 64),
          (784, 10, 200), (37, 333, 129)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_blocked_gemm_matches_float64(switch, check_gemm_against_float64, dtype, trans_a,
                                      trans_b):
    rng = np.random.default_rng(4)
    for m, n, k in SHAPES:
        check_gemm_against_float64(rng, dtype, trans_a, trans_b, m, n, k,
                              [lambda: switch(True), lambda: switch(False)])


SMALL_KERNEL_CORE = blas.CORE_NAME in ("skylakex", "cooperlake", "sapphirerapids")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_block_is_the_call_it_would_be_alone(switch, gemm_operands, dtype):
    """With the switch on, C is bit for bit the planned blocks, each computed by one
    call of its own (the switch off): the cut is exactly ``small_blocks``'s."""
    rng = np.random.default_rng(5)
    cases = [(False, True, 64, 128, 784), (True, False, 128, 784, 64),
             (False, True, 128, 10, 512), (False, False, 64, 256, 256),
             (True, False, 784, 10, 200)]
    for ta, tb, m, n, k in cases:
        along_columns, size = small_blocks(ta, tb, m, n, k)
        assert size > 0
        A, B = gemm_operands(rng, dtype, ta, tb, m, n, k)
        switch(True)
        C = np.empty((m, n), dtype)
        gemm(ta, tb, 1.0, A, B, 0.0, C)
        switch(False)
        blocks = np.empty((m, n), dtype)
        total = n if along_columns else m
        for lo in range(0, total, size):
            hi = min(lo + size, total)
            if along_columns:
                b_block = B[lo:hi] if tb else B[:, lo:hi]
                gemm(ta, tb, 1.0, A, b_block, 0.0, blocks[:, lo:hi])
            else:
                a_block = A[:, lo:hi] if ta else A[lo:hi]
                gemm(ta, tb, 1.0, a_block, B, 0.0, blocks[lo:hi])
        assert np.array_equal(C, blocks), (ta, tb, m, n, k)


@pytest.mark.skipif(not SMALL_KERNEL_CORE,
                    reason=f"OpenBLAS runs {blas.CORE_NAME} kernels here: no small-matrix "
                           "kernels, so the cut changes no bits")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_switch_reaches_compiled_code(switch, gemm_operands, dtype):
    """The switch is read at every call: mnist's forward (784 inputs) cut into blocks
    for the small-matrix kernel and made whole by the packing kernel add in different
    orders, so some of its 8192 dot products round differently; with the switch back
    on, the bits come back."""
    rng = np.random.default_rng(6)
    A, B = gemm_operands(rng, dtype, False, True, 64, 128, 784)
    results = []
    for on in (True, False, True):
        switch(on)
        C = np.empty((64, 128), dtype)
        gemm(False, True, 1.0, A, B, 0.0, C)
        results.append(C)
    assert not np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])


def _fresh_process(coretype):
    """(core name, switch, whether a cut product came out exact) in a new process
    whose OpenBLAS runs ``coretype``'s kernels."""
    code = ("import numpy as np\n"
            "from fastbp.kernels.cpu import blas\n"
            "A = np.arange(64 * 784, dtype=np.float32).reshape(64, 784) % 7\n"
            "W = np.arange(128 * 784, dtype=np.float32).reshape(128, 784) % 5\n"
            "C = np.empty((64, 128), np.float32)\n"
            "blas.gemm(False, True, 1.0, A, W, 0.0, C)\n"   # integers: exact in any order
            "print(blas.CORE_NAME, blas.use_small_kernels(), "
            "bool(np.array_equal(C, A @ W.T)))\n")
    env = dict(os.environ, OPENBLAS_CORETYPE=coretype)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, check=True).stdout.split()


def test_switch_follows_the_core_type():
    """Haswell's kernels (no small-matrix ones): the switch starts off, and the cached
    kernels still multiply right with it off; SkylakeX's (where this CPU runs them):
    on."""
    if blas.LIBRARY_PATH is None:   # scipy's BLAS: the core type is not asked
        assert _fresh_process("Haswell") == ["None", "False", "True"]
        return
    assert _fresh_process("Haswell") == ["haswell", "False", "True"]
    if blas.CORE_NAME in ("skylakex", "cooperlake", "sapphirerapids"):
        assert _fresh_process("SkylakeX") == ["skylakex", "True", "True"]
