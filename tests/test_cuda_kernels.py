"""Every CUDA kernel against its CPU twin and the float64 reference, beyond what
tests/test_kernel_registry.py checks for each registered kernel: product geometries,
aliasing, launch tiles, the loss and optimizer dispatchers.

Runs in numba's CUDA simulator (the root conftest.py sets NUMBA_ENABLE_CUDASIM=1 unless
a real GPU is usable) and unchanged on a real GPU. Shapes are tiny and ragged (not
multiples of the tile): the simulator runs one OS thread per CUDA thread.
"""
import numpy as np
import pytest

from fastbp import device as fdevice
from fastbp.kernels import codes
from fastbp.kernels import cpu as K_cpu
from fastbp.kernels.cpu import blas as K_cpu_blas
from fastbp.kernels import reference as ref

usable, why = fdevice.cuda_status()
pytestmark = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")

if usable:
    from numba import cuda

    from fastbp.kernels import cuda as K_gpu
    from fastbp.kernels.cuda import launch_config

DTYPES = ["float32", "float64"]
RTOL = {"float32": 2e-5, "float64": 1e-12}
SLOPE = codes.DEFAULT_LEAKY_RELU_SLOPE
# ((batch, in, out), gemm geometry (bm, bn, bk, tm, tn)): no size a multiple of its tile
# and several blocks each way; in=9 takes 5 k-steps of 2 (an odd count: both staging
# buffers, ending on the first), 3 of 4, or exactly 3 of 3. (4, 4, 2, 2, 2): 2x2 threads
# with 2x2 outputs each; (8, 4, 4, 2, 2): a rectangular 4x2-thread block staging 4 and
# 2 elements per thread; (2, 2, 2, 1, 1): one output per thread; (3, 3, 3, 1, 1): 9
# threads, tiles and k-steps of 3 (no power of two); (8, 8, 2, 4, 4): 4x4 outputs per
# thread, each a run of 4 adjacent rows and columns, 4 threads staging rows of 8.
CASES = [((5, 3, 7), (4, 4, 2, 2, 2)), ((6, 9, 5), (8, 4, 4, 2, 2)),
         ((6, 9, 5), (2, 2, 2, 1, 1)), ((9, 9, 7), (3, 3, 3, 1, 1)), ((3, 1, 2), (4, 4, 2, 2, 2)),
         ((11, 9, 10), (8, 8, 2, 4, 4))]


def close(actual, expected, dtype, what=""):
    """|actual - expected| <= rtol * max|expected| (+ tiny), elementwise."""
    actual = fdevice.to_host(actual)
    expected = np.asarray(expected, np.float64)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1.0)
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert err <= RTOL[dtype] * scale, f"{what}: max error {err:.3e} (scale {scale:.3e})"


def rand(rng, shape, dtype, away_from_zero=True):
    a = rng.standard_normal(shape)
    if away_from_zero:   # no kinks of relu & co. within float error
        a = np.where(np.abs(a) < 0.05, 0.1, a)
    return np.ascontiguousarray(a, dtype=dtype)


@pytest.fixture
def rng(request):
    return np.random.default_rng(abs(hash(request.node.name)) % 2**32)


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


@pytest.mark.parametrize("shape,geometry", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_forward(rng, dtype, shape, geometry):
    batch, n_in, n_out = shape
    X, W, b = rand(rng, (batch, n_in), dtype), rand(rng, (n_out, n_in), dtype), rand(rng, n_out, dtype)
    for code in (codes.TANH, codes.GELU):
        S_ref, A_ref = ref.linear_forward(X, W, b, code)
        S_gpu = cuda.device_array((batch, n_out), dtype)
        A_gpu = cuda.device_array((batch, n_out), dtype)
        with launch_config(gemm=geometry):
            K_gpu.linear_forward(dev(X), dev(W), dev(b), code, SLOPE, S_gpu, A_gpu)
        S_cpu, A_cpu = np.empty((batch, n_out), dtype), np.empty((batch, n_out), dtype)
        K_cpu.linear_forward(X, W, b, code, SLOPE, S_cpu, A_cpu)
        name = codes.ACTIVATIONS[code]
        close(S_gpu, S_ref, dtype, f"S {name} vs reference")
        close(A_gpu, A_ref, dtype, f"A {name} vs reference")
        close(A_gpu, A_cpu, dtype, f"A {name} vs CPU")
    # S and A in one array (sigma' from the output): the epilogue writes both in place.
    SA = cuda.device_array((batch, n_out), dtype)
    with launch_config(gemm=geometry):
        K_gpu.linear_forward(dev(X), dev(W), dev(b), codes.SIGMOID, SLOPE, SA, SA)
    close(SA, ref.linear_forward(X, W, b, codes.SIGMOID)[1], dtype, "sigmoid, S is A")


@pytest.mark.parametrize("shape,geometry", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_backward(rng, dtype, shape, geometry):
    batch, n_in, n_out = shape
    X, W, b = rand(rng, (batch, n_in), dtype), rand(rng, (n_out, n_in), dtype), rand(rng, n_out, dtype)
    dA = rand(rng, (batch, n_out), dtype)
    for code, keep_S in ((codes.TANH, False), (codes.SOFTPLUS, True)):
        S_ref, A_ref = ref.linear_forward(X, W, b, code)
        S = np.ascontiguousarray(S_ref, dtype)
        A = np.ascontiguousarray(A_ref, dtype)
        dS_r, dX_r, dW_r, db_r = ref.linear_backward(dA, S_ref, X, W, code)
        A_d = dev(A)
        S_d = dev(S) if keep_S else A_d
        dA_d = dev(dA)   # dS overwrites dA in place, as the network passes do
        dX_d = cuda.device_array((batch, n_in), dtype)
        dW_d = cuda.device_array((n_out, n_in), dtype)
        db_d = cuda.device_array(n_out, dtype)
        with launch_config(gemm=geometry):
            K_gpu.linear_backward(dA_d, A_d, S_d, dev(X), dev(W), code, SLOPE, dA_d, dX_d,
                                  dW_d, db_d, True)
        name = codes.ACTIVATIONS[code]
        scale = max(np.abs(dA).max() * np.abs(W).max() * n_out, 1.0)
        close(dA_d, dS_r, dtype, f"dS {name}")
        for got, want, what in ((dX_d, dX_r, "dX"), (dW_d, dW_r, "dW"), (db_d, db_r, "db")):
            close(fdevice.to_host(got) / scale, want / scale, dtype, f"{what} {name} vs reference")
        dS_c, dX_c = np.array(dA), np.empty((batch, n_in), dtype)
        dW_c, db_c = np.empty((n_out, n_in), dtype), np.empty(n_out, dtype)
        K_cpu.linear_backward(dS_c, A, S if keep_S else A, X, W, code, SLOPE, dS_c, dX_c,
                              dW_c, db_c, True)
        close(fdevice.to_host(dW_d) / scale, dW_c / scale, dtype, f"dW {name} vs CPU")
        close(fdevice.to_host(db_d) / scale, db_c / scale, dtype, f"db {name} vs CPU")
    # compute_dX=False leaves dX untouched (the first layer skips that product).
    sentinel = np.full((batch, n_in), 7.0, dtype)
    dX_d = dev(sentinel)
    with launch_config(gemm=geometry):
        K_gpu.linear_backward(dev(dA), dev(A), dev(A), dev(X), dev(W), codes.TANH, SLOPE,
                              dev(dA), dX_d, cuda.device_array((n_out, n_in), dtype),
                              cuda.device_array(n_out, dtype), False)
    assert np.array_equal(dX_d.copy_to_host(), sentinel)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_activation_and_backward_bias(rng, dtype):
    S, b, dA = rand(rng, (7, 5), dtype), rand(rng, 5, dtype), rand(rng, (7, 5), dtype)
    S_d, A_d = dev(S), cuda.device_array((7, 5), dtype)
    K_gpu.bias_activation(S_d, dev(b), A_d, codes.GELU_TANH, SLOPE)
    close(S_d, S.astype(np.float64) + b, dtype, "S += b")
    close(A_d, ref.activation_forward(S.astype(np.float64) + b, codes.GELU_TANH), dtype, "A")
    for tile in (2, 4):   # batch 7 rows over 2 or 4 row lanes: ragged reduction
        dS_d, db_d = cuda.device_array((7, 5), dtype), cuda.device_array(5, dtype)
        with launch_config(tile=tile):
            K_gpu.activation_backward_bias(dev(dA), dev(S), dev(S), dS_d, db_d, codes.SOFTPLUS, SLOPE)
        dS = dA.astype(np.float64) * ref.activation_derivative(S, codes.SOFTPLUS)
        close(dS_d, dS, dtype, "dS")
        close(db_d, dS.sum(axis=0), dtype, "db")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", codes.LOSSES)
def test_losses(rng, dtype, loss):
    code = codes.LOSS_CODES[loss]
    Z = rand(rng, (9, 4), dtype) * 3
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, 4, 9)
        labels, targets = y, np.zeros((0, 4), dtype)
    else:
        y = rng.random((9, 4)).astype(dtype)
        labels, targets = np.zeros(0, np.int64), y
    loss_ref, dZ_ref = ref.loss_forward_backward(code, Z, y)
    dZ_cpu = np.empty_like(Z)
    loss_cpu = K_cpu.loss_forward_backward(code, Z, labels, targets, dZ_cpu)
    # tile 2: 4 threads per block, so the reduction spans several blocks and (capped at
    # max_reduce_blocks) threads stride over the items.
    for tile in (2, 4):
        dZ_d = cuda.device_array_like(Z)
        with launch_config(tile=tile):
            value = K_gpu.loss_forward_backward(code, dev(Z), dev(labels), dev(targets), dZ_d)
        assert isinstance(value, float)
        assert abs(value - loss_ref) <= RTOL[dtype] * max(abs(loss_ref), 1.0)
        assert abs(value - loss_cpu) <= RTOL[dtype] * max(abs(loss_ref), 1.0)
        close(dZ_d, dZ_ref, dtype, f"{loss} dZ vs reference")
        close(dZ_d, dZ_cpu, dtype, f"{loss} dZ vs CPU")
    # the named entry points, with the CPU twins' arguments
    named = getattr(K_gpu, loss)
    value = named(dev(Z), dev(y), cuda.device_array_like(Z))
    assert abs(value - loss_ref) <= RTOL[dtype] * max(abs(loss_ref), 1.0)


def test_losses_huge_logits():
    Z = np.array([[1000.0, -1000.0, 0.0], [-800.0, 800.0, 3.0]])
    for code, y in ((codes.SOFTMAX_CROSS_ENTROPY, np.array([1, 1])),
                    (codes.BCE_WITH_LOGITS, np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]]))):
        loss_ref, dZ_ref = ref.loss_forward_backward(code, Z, y)
        dZ = cuda.device_array_like(Z)
        labels = y if code == codes.SOFTMAX_CROSS_ENTROPY else np.zeros(0, np.int64)
        targets = y if code != codes.SOFTMAX_CROSS_ENTROPY else Z[:0]
        value = K_gpu.loss_forward_backward(code, dev(Z), dev(labels), dev(targets), dZ)
        assert np.isfinite(value) and abs(value - loss_ref) <= 1e-9 * abs(loss_ref)
        close(dZ, dZ_ref, "float64", "dZ huge logits")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd(rng, dtype):
    p, g = rand(rng, 37, dtype), rand(rng, 37, dtype)
    p_d, g_d = dev(p), dev(g)
    K_gpu.sgd_update(p_d, g_d, 0.3)
    close(p_d, ref.sgd_update(p, g, 0.3), dtype, "sgd")
    p_cpu = p.copy()
    K_cpu.sgd_update(p_cpu, g, 0.3)
    close(p_d, p_cpu, dtype, "sgd vs CPU")
    assert np.array_equal(g_d.copy_to_host(), g)
    # through the dispatcher, hparams on the host
    p_d = dev(p)
    K_gpu.optimizer_update(codes.SGD, p_d, g_d, cuda.device_array((0, 37), dtype),
                           np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]), 1)
    close(p_d, ref.sgd_update(p, g, 0.3), dtype, "optimizer_update sgd")


def check_every_transpose(rng, dtype, m, n, k, geometry=None):
    """blas.gemm against A @ B in float64 and the CPU twin, for all four transposes, with
    ``geometry`` (None: the default); C starts as NaN, so an unwritten output fails."""
    for trans_a in (False, True):
        for trans_b in (False, True):
            A = rand(rng, (k, m) if trans_a else (m, k), dtype)
            B = rand(rng, (n, k) if trans_b else (k, n), dtype)
            want = (A.T if trans_a else A).astype(np.float64) @ (B.T if trans_b else B)
            C_d = dev(np.full((m, n), np.nan, dtype))
            with launch_config(gemm=geometry):
                K_gpu.gemm(trans_a, trans_b, 1.0, dev(A), dev(B), 0.0, C_d)
            C_cpu = np.empty((m, n), dtype)
            K_cpu_blas.gemm(trans_a, trans_b, 1.0, A, B, 0.0, C_cpu)
            what = f"gemm {geometry or 'default'} trans_a={trans_a} trans_b={trans_b}"
            close(C_d, want, dtype, what + " vs reference")
            close(C_d, C_cpu, dtype, what + " vs CPU")


# (16, 8, 2, 8, 4): thread outputs in runs of 4 (vector loads on a GPU), two runs per
# thread along m; (8, 4, 4, 2, 2, 1): runs of 2, and launch bounds (ignored here).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", [(4, 4, 2, 2, 2), (8, 4, 4, 2, 2, 1), (16, 8, 2, 8, 4)])
def test_gemm_every_transpose(rng, dtype, geometry):
    check_every_transpose(rng, dtype, 9, 6, 7, geometry)


def test_launch_config_rejects_bad_geometry():
    with pytest.raises(ValueError, match="tile"):
        with launch_config(tile=3):
            pass
    with pytest.raises(ValueError, match="tile"):
        with launch_config(tile=64):
            pass
    bad = {(4, 4, 2, 3, 2): "multiple of tm", (64, 64, 8, 1, 1): "<= 1024",
           (4, 4, 1, 1, 1): "multiples of the", (4, 4, 2, 2): "five ints",
           (4, 4, 3, 2, 2): "divide the 4 threads",
           "4,4,x,2,2": "bm,bn,bk,tm,tn", (4, 4, 0, 2, 2): "positive",
           (4, 4, 2, 2, 2, -1): "min_blocks >= 0"}
    for geometry, message in bad.items():
        with pytest.raises(ValueError, match=message):
            with launch_config(gemm=geometry):
                pass
    assert K_gpu.config.gemm["float32"].check()   # the defaults stay valid and in place


def _hparams(code, lr, max_norm, *rest):
    h = np.zeros(codes.N_HPARAMS[code])
    h[codes.HP_LR], h[codes.HP_MAX_GRAD_NORM] = lr, max_norm
    h[2:2 + len(rest)] = rest
    return h


# (code, hparams, state rows): every optimizer of kernels/cpu/optim.py and its options.
OPTIMIZER_CASES = [
    (codes.SGD, _hparams(codes.SGD, 0.1, 0.0, 0.9, 0.1, 0.01, 0.0), 1),        # momentum
    (codes.SGD, _hparams(codes.SGD, 0.1, 0.5, 0.9, 0.0, 0.0, 1.0), 1),         # nesterov, clip
    (codes.SGD, _hparams(codes.SGD, 0.1, 0.5, 0.0, 0.0, 0.01, 0.0), 0),        # decay, clip
    (codes.ADAM, _hparams(codes.ADAM, 0.01, 0.0, 0.9, 0.99, 1e-8, 0.01, 1.0), 3),  # amsgrad
    (codes.ADAMW, _hparams(codes.ADAMW, 0.01, 1.0, 0.9, 0.999, 1e-8, 0.01, 0.0), 2),
    (codes.RMSPROP, _hparams(codes.RMSPROP, 0.01, 0.0, 0.99, 1e-8, 0.01, 0.9, 1.0), 3),
    (codes.RMSPROP, _hparams(codes.RMSPROP, 0.01, 0.0, 0.9, 1e-8, 0.0, 0.0, 0.0), 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(OPTIMIZER_CASES)))
def test_optimizer_updates_match_cpu(rng, dtype, case):
    code, hparams, rows = OPTIMIZER_CASES[case]
    p, g = rand(rng, 21, dtype), rand(rng, 21, dtype)
    state = np.zeros((rows, 21), dtype)
    p_d, g_d, state_d = dev(p), dev(g), dev(state)
    for step in (1, 2, 3):
        K_cpu.optimizer_update(code, p, g, state, hparams, step)
        with launch_config(tile=2):   # 4-thread blocks: the norm spans several blocks
            K_gpu.optimizer_update(code, p_d, g_d, state_d, hparams, step)
    close(p_d, p, dtype, f"{codes.OPTIMIZERS[code]} params")
    close(state_d, state, dtype, f"{codes.OPTIMIZERS[code]} state")
    assert np.array_equal(g_d.copy_to_host(), g)
    assert abs(K_gpu.grad_norm(g_d) - np.linalg.norm(g.astype(np.float64))) < 1e-6


@pytest.mark.skipif(fdevice.simulator_enabled(),
                    reason="real GPU only: the default 256-thread geometry on these sizes "
                           "would take minutes in the simulator")
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_default_geometry_ragged_sizes(rng, dtype):
    """The default tile shape on sizes that are multiples of nothing it uses (several
    blocks each way, a partial k-step), every transpose."""
    check_every_transpose(rng, dtype, 301, 259, 133)
