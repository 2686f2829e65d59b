"""MKL for the kernels' larger products (kernels/cpu/mkl.py, blas.mkl_takes): which
products it takes, that they match a float64 reference in every orientation with
strided operands, that compiled code follows the switch and really calls MKL, that
MKL runs sequential, stays out of the global symbol scope and leaves an MKL loaded
before fastbp alone, and that FASTBP_BLAS is checked.

Whether the suite's own processes bind MKL depends on the machine (FASTBP_BLAS=auto:
the mkl package installed, an Intel CPU, Linux), so ``test_these_files_with_the_other_choice``
runs this file and the other BLAS-dependent ones again in a fresh pytest with the other
choice (FASTBP_BLAS=openblas where MKL is bound here, FASTBP_BLAS=mkl where it is not),
and fails if anything that needs MKL skips in a run that asked for it."""
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
    """The kernels' MKL is the sequential layer: one thread whatever MKL_NUM_THREADS
    says, and no threaded layer loaded beside it."""
    code = ("import ctypes, sys\n"
            "from fastbp.kernels.cpu import blas, mkl\n"
            "mkl.LOADED.MKL_Get_Max_Threads.restype = ctypes.c_int\n"
            "print('THREADS', mkl.LOADED.MKL_Get_Max_Threads())\n"
            "if sys.platform.startswith('linux'):\n"
            "    print('MAPS', *sorted({line.split()[-1].rsplit('/', 1)[-1] for line in\n"
            "          open('/proc/self/maps') if 'libmkl_' in line}))\n")
    out, _ = _run(code, FASTBP_BLAS="mkl", MKL_NUM_THREADS="2")
    lines = dict(line.split(" ", 1) for line in out.splitlines()
                 if line.startswith(("THREADS", "MAPS")))
    assert lines["THREADS"] == "1"
    if "MAPS" in lines:
        maps = lines["MAPS"].split()
        assert any(name.startswith("libmkl_sequential") for name in maps), maps
        assert not any(name.startswith(("libmkl_intel_thread", "libmkl_gnu_thread",
                                        "libmkl_tbb_thread", "libmkl_rt"))
                       for name in maps), maps


@needs_mkl
@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the symbol scope of its own is Linux's (kernels/cpu/private_scope.py)")
def test_mkl_stays_out_of_the_global_symbol_scope():
    """After a training step on MKL, none of MKL's functions is visible to a library
    loaded later (a lookup in the global scope, as a later library's unresolved
    ``sgemm_`` would make, finds none), and a later libmkl_rt user from elsewhere would
    not bind to it. MKL's own libmkl_rt would have put its layers there."""
    code = ("import ctypes\n"
            "import numpy as np, fastbp\n"
            "from fastbp.kernels.cpu import blas\n"
            "net = fastbp.MLP([784, 128, 10], dtype='float32', seed=1)\n"
            "X = np.random.default_rng(0).standard_normal((64, 784)).astype(np.float32)\n"
            "net.train_step(X, np.arange(64) % 10, fastbp.SGD(net, lr=0.01))\n"
            "everything = ctypes.CDLL(None)\n"
            "names = ('sgemm_', 'dgemm_', 'mkl_blas_sgemm', 'MKL_Get_Max_Threads',\n"
            "         'mkl_serv_intel_cpu_true', 'dfti_allocate')\n"
            "print('BOUND', blas.MKL_PATH is not None)\n"
            "print('GLOBAL', [name for name in names if hasattr(everything, name)])\n")
    out, _ = _run(code, FASTBP_BLAS="mkl")
    assert "BOUND True" in out
    assert "GLOBAL []" in out, out


@needs_mkl
@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the symbol scope of its own is Linux's (kernels/cpu/private_scope.py)")
def test_every_mkl_library_mapped_was_bound_in_the_private_scope():
    """After steps in both dtypes, every MKL BLAS library in the process is one the
    private object listed (bound at load): none that libmkl_core loaded on its own
    later, where its symbols would be looked up in the global scope first. The
    vector-math libraries (libmkl_vml_*), which fastbp does not call, core loads itself
    (kernels/cpu/mkl.py, _CPU_LIBRARY, says why they are not listed)."""
    code = ("import numpy as np, fastbp\n"
            "from fastbp.kernels.cpu import mkl\n"
            "for dtype in ('float32', 'float64'):\n"
            "    net = fastbp.MLP([784, 128, 10], dtype=dtype, seed=1)\n"
            "    X = np.random.default_rng(0).standard_normal((64, 784)).astype(dtype)\n"
            "    net.train_step(X, np.arange(64) % 10, fastbp.SGD(net, lr=0.01))\n"
            "import os\n"
            "listed = set(mkl._layer_paths())\n"
            "mapped = {line.split()[-1] for line in open('/proc/self/maps')\n"
            "          if '/libmkl_' in line and '/libmkl_vml_' not in line}\n"
            "print('MAPPED', len(mapped), 'UNLISTED', sorted(mapped - listed))\n")
    out, _ = _run(code, FASTBP_BLAS="mkl")
    line = next(line for line in out.splitlines() if line.startswith("MAPPED"))
    assert line.endswith("UNLISTED []") and not line.startswith("MAPPED 0 "), line


@needs_mkl
def test_an_mkl_loaded_before_fastbp_is_left_alone():
    """Something that loaded MKL first owns its threading: fastbp keeps OpenBLAS, says
    why, and does not change MKL's threading layer."""
    code = ("import ctypes\n"
            f"lib = ctypes.CDLL({mkl._library_path()!r})\n"
            "from fastbp.kernels.cpu import blas\n"
            "print(blas.MKL_PATH, blas.use_mkl(), '|', blas.MKL_REASON)\n"
            "lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]\n"
            "print(lib.MKL_Set_Threading_Layer(-1))\n")   # -1: a query, changes nothing
    out, _ = _run(code, FASTBP_BLAS="mkl", MKL_THREADING_LAYER=None)
    first, second = out.splitlines()[-2:]
    assert first.startswith("None False |") and "already loaded" in first
    assert int(second) != 1   # not sequential: MKL's own default (Intel OpenMP)


@needs_mkl
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's global scope")
def test_an_mkl_in_the_global_scope_is_seen_by_its_functions():
    """A copy of MKL whose file name fastbp does not know is still seen where its
    core's functions are in the global scope (libmkl_rt puts its layers there at its
    first call)."""
    code = ("import ctypes, os\n"
            f"lib = ctypes.CDLL({mkl._library_path()!r})\n"
            "lib.MKL_Get_Max_Threads()\n"
            "from fastbp.kernels.cpu import mkl\n"
            "mkl._OTHER_COPIES = ()\n"
            "print('SEEN', mkl._already_loaded([]))\n")
    out, _ = _run(code, FASTBP_BLAS="openblas")
    assert "SEEN True" in out


@pytest.mark.parametrize("vendor, platform, takes", [
    ("GenuineIntel", "linux", True), ("AuthenticAMD", "linux", False),
    (None, "linux", False), ("GenuineIntel", "win32", False),
    ("GenuineIntel", "darwin", False)])
def test_auto_takes_mkl_on_intel_under_linux(vendor, platform, takes):
    reason = mkl.auto_declines(vendor, platform)
    assert (reason is None) == takes
    if not takes:
        assert "FASTBP_BLAS=mkl uses it" in reason


def test_openblas_keeps_mkl_out():
    """FASTBP_BLAS=openblas: MKL is not loaded, and use_mkl(True) says why it cannot be
    switched on."""
    code = ("from fastbp.kernels.cpu import blas\n"
            "print(blas.MKL_PATH, blas.use_mkl(), '|', blas.MKL_REASON)\n"
            "try:\n"
            "    blas.use_mkl(True)\n"
            "except ValueError as error:\n"
            "    print('ValueError', error)\n")
    out, _ = _run(code, FASTBP_BLAS="openblas")
    lines = out.splitlines()
    assert lines[-2] == "None False | FASTBP_BLAS=openblas keeps it out"
    assert lines[-1].startswith("ValueError enabled: expected False")


def test_a_bad_fastbp_blas_is_named(monkeypatch):
    monkeypatch.setenv("FASTBP_BLAS", "atlas")
    with pytest.raises(ValueError, match=r"FASTBP_BLAS: expected one of auto, openblas, mkl, "
                                         r"got 'atlas'"):
        mkl.choice()


def test_describe_says_what_multiplies_the_products(switch):
    line = blas.describe()
    assert line.startswith("OpenBLAS " if blas.LIBRARY_PATH else "scipy's BLAS")
    if blas.MKL_PATH is None:
        assert line.endswith(f"; no MKL: {blas.MKL_REASON}")
        return
    assert line.endswith(f", and MKL for the larger products ({blas.MKL_REASON})")
    assert blas.MKL_PATH in line
    switch(False)
    assert "MKL loaded but switched off (use_mkl(False))" in blas.describe()
    switch("every")
    assert ", and MKL for every product (" in blas.describe()


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


# the test files that run again with the other choice of BLAS
# (test_these_files_with_the_other_choice)
OTHER_CHOICE = ("test_mkl.py", "test_threads.py", "test_small_kernels.py")


def test_these_files_with_the_other_choice():
    """This file, test_threads.py and test_small_kernels.py in a fresh pytest with the
    other choice of BLAS than this process made: FASTBP_BLAS=openblas where MKL is bound
    here, FASTBP_BLAS=mkl where it is not; every test passes, and in the run with MKL
    none skips for want of it."""
    if mkl.choice() != "auto":   # the run this test starts, or a user's own choice
        pytest.skip(f"FASTBP_BLAS={mkl.choice()} is set here: the default's run covers "
                    f"the other choice")
    if mkl._library_path() is None:
        pytest.skip("the mkl package is not installed (pip install \"fastbp[mkl]\")")
    other = "openblas" if blas.MKL_PATH is not None else "mkl"
    dropped = ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PY_COLORS", "FORCE_COLOR")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["FASTBP_BLAS"] = other
    here = os.path.dirname(__file__)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n0", "-rs", "--color=no",
                           "-p", "no:cacheprovider",
                           *(os.path.join(here, name) for name in OTHER_CHOICE)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    passed = int(done.stdout.rsplit(" passed", 1)[0].rsplit(None, 1)[-1])
    if other == "mkl":
        skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
        for_want_of_mkl = [line for line in skipped
                           if "MKL" in line and "is set here" not in line]
        assert not for_want_of_mkl, for_want_of_mkl
        assert passed >= 60, done.stdout[-500:]
    else:
        assert passed >= 40, done.stdout[-500:]


