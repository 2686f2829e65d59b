"""Small products on the GPU: smaller tiles and split k (kernels/cuda/_launch.py's
product_shape, kernels/cuda/blas.py's SPLIT epilogue and _split_sum).

Runs in numba's CUDA simulator (or on a GPU), against float64 references on random
inputs of ragged sizes, and checks which geometry and split the choice makes for the
H200's 132 multiprocessors (pure arithmetic, no GPU needed)."""
import numpy as np
import pytest

from fastbp import device as fdevice
from fastbp.kernels import reference as ref

usable, why = fdevice.cuda_status()
pytestmark = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")


def _launch():
    from fastbp.kernels.cuda import _launch as launch_module
    return launch_module


@pytest.fixture
def h200(monkeypatch):
    """product_shape as it decides on an H100/H200: the GPU's geometries, 132
    multiprocessors, 8 staging steps per split at least."""
    L = _launch()
    monkeypatch.setattr(L, "SIMULATOR", False)
    monkeypatch.setattr(L, "MIN_SPLIT_STEPS", 8)
    monkeypatch.setattr(L.config, "gemm", dict(L.GPU_GEMM))
    monkeypatch.setattr(L.config, "multiprocessors", 132)
    monkeypatch.setattr(L.config, "adaptive", True)
    return L


@pytest.fixture
def few_multiprocessors(monkeypatch):
    """Four multiprocessors and splits of one staging step: tiny products split k on
    any device (the simulator, or a GPU's own geometries)."""
    L = _launch()
    monkeypatch.setattr(L, "MIN_SPLIT_STEPS", 1)
    monkeypatch.setattr(L.config, "multiprocessors", 4)
    return L


def test_the_h200_choices(h200):
    L = h200
    big, mid, small = L.GPU_GEMM["float32"], *L.GPU_SMALLER
    # 1024-4096-4096-1024 at batch 512: 4 x 32 = 128 tiles of 128 x 128 keep the large tile
    assert L.product_shape(512, 4096, 1024, "float32") == (big, 1, 1024)
    # its last layer, 4 x 8 = 32 large tiles: 8 x 16 = 128 of 64 x 64
    assert L.product_shape(512, 1024, 4096, "float32") == (mid, 1, 4096)
    # 784-128-10's first layer at batch 64: one large tile; 8 small ones, k = 784 in 11
    # ranges of 72 (a multiple of bk = 8, at least 64): 88 blocks
    assert L.product_shape(64, 128, 784, "float32") == (small, 11, 72)
    # its dW (128 x 784, k = 64): 4 x 25 = 100 small tiles, k too short to split
    assert L.product_shape(128, 784, 64, "float32") == (small, 1, 64)
    # a 256-wide layer at batch 64: 16 small tiles, k = 256 in 4 ranges of 64
    assert L.product_shape(64, 256, 256, "float32") == (small, 4, 64)
    # float64's largest tile is 64 x 64 already: its tiers are that and 32 x 32
    assert L.tiers("float64") == (L.GPU_GEMM["float64"], small)
    with L.launch_config(adaptive=False):
        assert L.product_shape(64, 128, 784, "float32") == (big, 1, 784)


def test_a_chosen_split_covers_k_in_whole_steps(h200):
    L = h200
    for M, N, K in [(1, 1, 1), (10, 10, 65), (64, 10, 128), (3, 700, 5000), (64, 64, 63)]:
        g, splits, kc = L.product_shape(M, N, K, "float32")
        if splits == 1:
            assert kc == K
            continue
        assert kc % g.bk == 0 and kc >= L.MIN_SPLIT_STEPS * g.bk
        assert (splits - 1) * kc < K <= splits * kc   # every range non-empty, k covered
        tiles = L.blocks(M, g.bm) * L.blocks(N, g.bn)
        assert tiles * 2 < 132 and tiles * splits <= 2 * 132


def test_an_explicit_geometry_turns_the_choice_off(few_multiprocessors):
    L = few_multiprocessors
    with L.launch_config(gemm=(8, 8, 4, 2, 2)):
        assert L.product_shape(3, 3, 300, "float64") == (L.GemmGeometry(8, 8, 4, 2, 2), 1,
                                                         300)
        with L.launch_config(adaptive=True):
            assert L.product_shape(3, 3, 300, "float64")[1] > 1


# (M, N, K): one tile of C on any tier, so each splits k under few_multiprocessors,
# some with a last range shorter than the rest
SPLIT_SHAPES = [(3, 3, 30), (2, 3, 41)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False),
                                             (True, True)])
def test_split_products_match_the_reference(dtype, trans_a, trans_b, few_multiprocessors):
    from numba import cuda
    from fastbp.kernels.cuda import blas
    L = few_multiprocessors
    tol = 1e-5 if dtype == "float32" else 1e-13
    rng = np.random.default_rng([dtype == "float32", trans_a, trans_b])
    for M, N, K in SPLIT_SHAPES:
        assert L.product_shape(M, N, K, dtype)[1] > 1, "the shape must take the split path"
        A = rng.uniform(0.1, 1, (K, M) if trans_a else (M, K)).astype(dtype)
        B = rng.uniform(-1, 1, (N, K) if trans_b else (K, N)).astype(dtype)
        C0 = rng.uniform(-1, 1, (M, N)).astype(dtype)
        bias = rng.uniform(-1, 1, N).astype(dtype)
        a64 = A.astype(np.float64).T if trans_a else A.astype(np.float64)
        b64 = B.astype(np.float64).T if trans_b else B.astype(np.float64)
        want = a64 @ b64
        scale = np.abs(a64) @ np.abs(b64) + 1   # the products' magnitude: error yardstick
        dA, dB = cuda.to_device(A), cuda.to_device(B)
        for alpha, beta in [(1.0, 0.0), (-0.5, 2.0)]:
            dC = cuda.to_device(C0)
            blas.gemm(trans_a, trans_b, alpha, dA, dB, beta, dC)
            got = dC.copy_to_host()
            expect = alpha * want + beta * C0.astype(np.float64)
            assert np.all(np.abs(got - expect) <= tol * (abs(alpha) + abs(beta)) * scale), \
                (M, N, K, alpha, beta)
        dC = cuda.device_array((M, N), dtype)
        dOut = cuda.device_array((M, N), dtype)
        blas.gemm_bias_activation(trans_a, trans_b, dA, dB, cuda.to_device(bias), dC, dOut,
                                  2, 0.0)   # tanh
        S, Act = ref.linear_forward(a64, b64.T, bias.astype(np.float64), 2, 0.0)
        assert np.all(np.abs(dC.copy_to_host() - S) <= tol * scale)
        assert np.all(np.abs(dOut.copy_to_host() - Act) <= tol * scale)


def test_split_and_unsplit_products_agree_to_rounding(few_multiprocessors):
    from numba import cuda
    from fastbp.kernels.cuda import blas
    L = few_multiprocessors
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((4, 50)), rng.standard_normal((50, 3))
    out = []
    for adaptive in (True, False):
        with L.launch_config(adaptive=adaptive):
            assert (L.product_shape(4, 3, 50, "float64")[1] > 1) == adaptive
            dC = cuda.device_array((4, 3))
            blas.gemm(False, False, 1.0, cuda.to_device(A), cuda.to_device(B), 0.0, dC)
            out.append(dC.copy_to_host())
    np.testing.assert_allclose(out[0], out[1], rtol=0, atol=1e-13 * np.abs(A).sum())
