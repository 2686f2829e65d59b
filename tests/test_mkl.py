"""MKL for the kernels' larger products (kernels/cpu/mkl.py, blas.mkl_takes): which
products it takes, that they match a float64 reference in every orientation with
strided operands, that compiled code follows the switch and really calls MKL, that
MKL runs sequential and leaves an MKL loaded before fastbp alone, and that
FASTBP_BLAS is checked.

MKL is opt-in (FASTBP_BLAS=mkl), so in the suite's own processes it is not bound and
the tests that need it skip; ``test_this_file_with_mkl`` runs this file again in a
fresh pytest with FASTBP_BLAS=mkl, where they run, and fails if any of them skips
there while the ``mkl`` package is installed (without it, that test skips and says
so)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastbp.kernels.cpu import blas, mkl
from fastbp.kernels.cpu.blas import gemm, mkl_takes, use_mkl

needs_mkl = pytest.mark.skipif(blas.MKL_PATH is None,
                               reason=f"MKL is not used here: {blas.MKL_REASON}")


@pytest.fixture
def switch():
    """use_mkl, restored after the test."""
    before = use_mkl()
    yield use_mkl
    use_mkl(before)


def _run(code, **env):
    """stdout and stderr of ``code`` in a fresh Python with ``env`` added (a value of
    None removes that variable)."""
    env = {k: v for k, v in dict(os.environ, **env).items() if v is not None}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


# (trans_a, trans_b, m, n, k) of C (m, n) = op(A) op(B): a layer's forward S = X W^T is
# (False, True, batch, out, in), its weight gradient dW = dS^T X (True, False, out, in,
# batch), its input gradient dX = dS W (False, False, batch, in, out)
KNOWN = [
    ((False, True, 32, 64, 64), False),       # tiny's hidden forward: 131,072 multiply-adds
    ((True, False, 64, 64, 32), False),       # its weight gradient
    ((False, True, 32, 10, 64), False),       # its output layer: 10 wide
    ((True, False, 10, 64, 32), False),
    ((False, True, 32, 128, 128), True),      # 524,288 = 2**19
    ((False, True, 32, 128, 127), False),
    ((False, False, 64, 256, 256), True),     # deep's input gradient: 4.2 M
    ((True, False, 128, 256, 64), True),      # a thread's half of deep's weight gradient
    ((False, True, 128, 10, 512), False),     # medium's output forward
    ((False, False, 128, 512, 10), False),    # its input gradient: k = 10
    ((True, False, 512, 784, 128), True),
    ((True, True, 64, 64, 64), False),        # 262,144
    ((True, True, 64, 128, 64), True),
]


@pytest.mark.parametrize("shape, takes", KNOWN)
def test_which_products_mkl_takes(shape, takes):
    assert mkl_takes(*shape[2:]) == takes   # the orientation does not matter


SHAPES = [(32, 64, 64), (64, 256, 256), (128, 512, 784), (33, 97, 200), (512, 40, 64)]


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_mkl_products_match_float64(switch, check_gemm_against_float64, dtype, trans_a,
                                    trans_b):
    """alpha, beta, strided blocks of A, B and C; nothing written outside C's block;
    MKL's and OpenBLAS's results agree with float64 to rounding."""
    rng = np.random.default_rng(11)
    for m, n, k in SHAPES:
        if mkl_takes(m, n, k):
            check_gemm_against_float64(rng, dtype, trans_a, trans_b, m, n, k,
                                  [lambda: switch(True), lambda: switch(False)])


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_row_operands_with_any_stride(switch, dtype):
    """A one-row operand's leading dimension is its row length whatever its stride
    (blas.py's docstring): MKL, like OpenBLAS, skips a call with an illegal one."""
    switch("every")   # a one-row product is below mkl_takes' line
    rng = np.random.default_rng(12)
    x = rng.standard_normal(64).astype(dtype)
    W = rng.standard_normal((64, 64)).astype(dtype)
    X = np.broadcast_to(x, (1, 64))      # stride 0
    S = np.full((1, 64), np.nan, dtype)
    gemm(False, False, 1.0, X, W, 0.0, S)
    np.testing.assert_allclose(S[0], x.astype(np.float64) @ W, rtol=1e-4)


@needs_mkl
def test_the_switch_reaches_compiled_code(switch, gemm_operands):
    """deep's forward (S = X W^T) computed by MKL and by OpenBLAS adds in different
    orders, so most of its 16,384 dot products round differently (its weight and input
    gradients came out bit for bit alike here); with the switch back on, the bits come
    back (the flag is read at every call, also by cached kernels)."""
    rng = np.random.default_rng(13)
    A, B = gemm_operands(rng, np.float32, False, True, 64, 256, 256)
    results = []
    for on in (True, False, True):
        switch(on)
        C = np.empty((64, 256), np.float32)
        gemm(False, True, 1.0, A, B, 0.0, C)
        results.append(C)
    assert not np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])


@needs_mkl
def test_results_do_not_depend_on_alignment(switch):
    """The same operands at addresses 4, 8 and 12 bytes off a 64-byte boundary give the
    same bits (MKL documents alignment as a possible source of run-to-run differences
    outside its reproducibility modes; a caller's X can sit anywhere)."""
    switch("every")
    rng = np.random.default_rng(14)
    for m, n, k in [(64, 256, 256), (128, 512, 784), (32, 64, 64)]:
        X = rng.standard_normal((m, k)).astype(np.float32)
        W = rng.standard_normal((n, k)).astype(np.float32)
        outs = []
        for offset in (0, 1, 2, 3):
            buf = np.empty(X.size + W.size + 64, np.float32)
            base = (-buf.ctypes.data % 64) // 4 + offset
            Xo = buf[base:base + X.size].reshape(X.shape)
            Wo = buf[base + X.size:base + X.size + W.size].reshape(W.shape)
            Xo[...], Wo[...] = X, W
            S = np.empty((m, n), np.float32)
            gemm(False, True, 1.0, Xo, Wo, 0.0, S)
            outs.append(S)
        for S in outs[1:]:
            assert np.array_equal(S, outs[0]), (m, n, k)


@needs_mkl
def test_a_training_step_calls_mkl_and_matches_openblas():
    """MKL_VERBOSE lists MKL's calls: a 784-128-10 step makes SGEMM calls with MKL and
    none with FASTBP_BLAS=openblas; the losses and parameters after three steps agree
    to float32 rounding."""
    code = ("import numpy as np, fastbp\n"
            "rng = np.random.default_rng(0)\n"
            "X = rng.standard_normal((64, 784)).astype(np.float32)\n"
            "y = rng.integers(0, 10, 64)\n"
            "net = fastbp.MLP([784, 128, 10], dtype='float32', seed=1)\n"
            "opt = fastbp.SGD(net, lr=0.05)\n"
            "losses = [net.train_step(X, y, opt) for _ in range(3)]\n"
            "print('RESULT', *losses, float(np.abs(net.layers[0].W).sum()))\n")
    outputs = {}
    for choice in ("mkl", "openblas"):
        # two threads: the 784 -> 128 layer's blocks stay above mkl_takes' line
        out, _ = _run(code, FASTBP_BLAS=choice, MKL_VERBOSE="1", NUMBA_NUM_THREADS="2")
        # MKL_VERBOSE lines: SGEMM(transa,transb,m,n,k,...); the import's 1 x 1 probe
        # is not the step's
        out = "\n".join(line for line in out.splitlines()
                        if not line.startswith("MKL_VERBOSE SGEMM(N,N,1,1,1,"))
        result = next(line for line in out.splitlines() if line.startswith("RESULT"))
        *losses, weight = (float(v) for v in result.split()[1:])
        outputs[choice] = (out.count("SGEMM"), losses, weight)
    calls, losses, weight = outputs["mkl"]
    calls_ob, losses_ob, weight_ob = outputs["openblas"]
    assert calls > 0 and calls_ob == 0
    np.testing.assert_allclose(losses, losses_ob, rtol=1e-5)
    assert weight == pytest.approx(weight_ob, rel=1e-5)


@needs_mkl
def test_mkl_runs_sequential():
    """threadpoolctl's view of the kernels' MKL: the sequential threading layer."""
    from threadpoolctl import threadpool_info
    ours = [info for info in threadpool_info() if info["internal_api"] == "mkl"
            and os.path.realpath(info["filepath"]) == blas.MKL_PATH]
    assert ours and all(info["threading_layer"] == "sequential" for info in ours)


@needs_mkl
def test_an_mkl_loaded_before_fastbp_is_left_alone():
    """Something that loaded MKL first owns its threading: fastbp keeps OpenBLAS, says
    why, and does not change MKL's threading layer."""
    code = ("import ctypes\n"
            f"lib = ctypes.CDLL({blas.MKL_PATH!r})\n"
            "from fastbp.kernels.cpu import blas\n"
            "print(blas.MKL_PATH, blas.use_mkl(), '|', blas.MKL_REASON)\n"
            "lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]\n"
            "print(lib.MKL_Set_Threading_Layer(-1))\n")   # -1: a query, changes nothing
    out, _ = _run(code, FASTBP_BLAS="mkl", MKL_THREADING_LAYER=None)
    first, second = out.splitlines()[-2:]
    assert first.startswith("None False |") and "already loaded" in first
    assert int(second) != 1   # not sequential: MKL's own default (Intel OpenMP)


def test_openblas_keeps_mkl_out():
    """FASTBP_BLAS=openblas, the default: MKL is not loaded, and use_mkl(True) says why
    it cannot be switched on."""
    code = ("from fastbp.kernels.cpu import blas\n"
            "print(blas.MKL_PATH, blas.use_mkl(), '|', blas.MKL_REASON)\n"
            "try:\n"
            "    blas.use_mkl(True)\n"
            "except ValueError as error:\n"
            "    print('ValueError', error)\n")
    out, _ = _run(code, FASTBP_BLAS="openblas")
    lines = out.splitlines()
    assert lines[-2] == "None False | not asked for (FASTBP_BLAS=mkl uses it)"
    assert lines[-1].startswith("ValueError enabled: expected False")


def test_a_bad_fastbp_blas_is_named(monkeypatch):
    monkeypatch.setenv("FASTBP_BLAS", "atlas")
    with pytest.raises(ValueError, match=r"FASTBP_BLAS: expected one of openblas, mkl, "
                                         r"got 'atlas'"):
        mkl.choice()


def test_reason_is_given_either_way():
    assert isinstance(blas.MKL_REASON, str) and blas.MKL_REASON
    assert (blas.MKL_PATH is None) == (not use_mkl())


def test_use_mkl_names_a_bad_setting(switch):
    with pytest.raises(ValueError, match=r"enabled: expected True, False or 'every', "
                                         r"got 'sometimes'"):
        use_mkl("sometimes")


@needs_mkl
def test_every_product_goes_to_mkl_when_asked(switch, gemm_operands):
    """With "every", a product mkl_takes leaves to OpenBLAS (a 10-wide output layer's
    forward) is MKL's too: its bits change with the setting, and come back."""
    rng = np.random.default_rng(15)
    A, B = gemm_operands(rng, np.float32, False, True, 128, 10, 512)
    assert not mkl_takes(128, 10, 512)
    results = []
    for mode in (True, "every", True):
        assert switch(mode) == mode
        C = np.empty((128, 10), np.float32)
        gemm(False, True, 1.0, A, B, 0.0, C)
        results.append(C)
    assert not np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])


# the test files that run again with MKL bound (test_this_file_with_mkl)
WITH_MKL = ("test_mkl.py", "test_threads.py", "test_small_kernels.py")


def test_this_file_with_mkl():
    """This file, test_threads.py and test_small_kernels.py in a fresh pytest with
    FASTBP_BLAS=mkl: every test passes and none skips for want of MKL (MKL is opt-in,
    so the suite's processes do not bind it)."""
    if mkl.choice() == "mkl":   # the run this test starts (or a user's FASTBP_BLAS=mkl)
        if blas.MKL_PATH is None:
            pytest.fail(f"FASTBP_BLAS=mkl, but MKL is not used: {blas.MKL_REASON}")
        pytest.skip("MKL is bound in this process: this is that run")
    if mkl._library_path() is None:
        pytest.skip("the mkl package is not installed (pip install \"fastbp[mkl]\")")
    dropped = ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PY_COLORS", "FORCE_COLOR")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["FASTBP_BLAS"] = "mkl"
    here = os.path.dirname(__file__)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n0", "-rs", "--color=no",
                           "-p", "no:cacheprovider",
                           *(os.path.join(here, name) for name in WITH_MKL)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    for_want_of_mkl = [line for line in skipped
                       if "MKL" in line and "this is that run" not in line]
    assert not for_want_of_mkl, for_want_of_mkl
    passed = int(done.stdout.rsplit(" passed", 1)[0].rsplit(None, 1)[-1])
    assert passed >= 60, done.stdout[-500:]
