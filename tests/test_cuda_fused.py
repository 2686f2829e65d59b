"""The fused step of narrow networks on the GPU (kernels/cuda/fused.py): forward, loss
and backward in one kernel, the blocks' partial gradients summed by a second.

In numba's CUDA simulator (or on a GPU): training steps through a fused plan against
the same steps on the CPU (float64, to rounding) and through the general plan, on
random networks with ragged widths, every loss, several activations and batches that
are not a multiple of the rows per block; which networks are eligible; and that an
epoch uses it too."""
import numpy as np
import pytest

import fastbp
from fastbp import device as fdevice

usable, why = fdevice.cuda_status()
pytestmark = pytest.mark.skipif(not usable, reason=f"CUDA not usable: {why}")


@pytest.fixture(autouse=True)
def fused_on():
    """The fused step is off by default (kernels/cuda/_launch.py's config.fused)."""
    from fastbp.kernels.cuda import launch_config
    with launch_config(fused=True):
        yield


def _fused_module():
    from fastbp.kernels.cuda import fused
    return fused


def _plan(net, batch):
    from fastbp import cuda_plan
    return cuda_plan.runner(net).plans[batch]


def _data(rng, sizes, batch, loss):
    X = rng.standard_normal((batch, sizes[0]))
    if loss == "softmax_cross_entropy":
        return X, rng.integers(0, sizes[-1], batch)
    if loss == "bce_with_logits":
        return X, rng.uniform(0.05, 0.95, (batch, sizes[-1]))
    return X, rng.standard_normal((batch, sizes[-1]))


CASES = [  # sizes, activation, loss, batch (rows per block: 2 in the simulator, 8 on a GPU)
    ([3, 5, 2], "tanh", "softmax_cross_entropy", 5),
    ([4, 7, 6, 3], "relu", "mse", 1),
    ([6, 3, 9, 4, 2], "gelu", "bce_with_logits", 7),
    ([5, 8, 3], "sigmoid", "softmax_cross_entropy", 9),
]


@pytest.mark.parametrize("sizes,activation,loss,batch", CASES)
def test_fused_steps_match_the_cpu(sizes, activation, loss, batch):
    rng = np.random.default_rng(len(sizes) * 100 + batch)
    kw = dict(activation=activation, loss=loss, dtype="float64", seed=2)
    cpu = fastbp.MLP(sizes, **kw)
    gpu = fastbp.MLP(sizes, device="cuda", **kw)
    o_cpu = fastbp.Adam(cpu, lr=0.02, max_grad_norm=0.5)   # clipping reads the grads
    o_gpu = fastbp.Adam(gpu, lr=0.02, max_grad_norm=0.5)
    want, got = [], []
    for _ in range(2):
        X, y = _data(rng, sizes, batch, loss)
        want.append(cpu.train_step(X, y, o_cpu))
        got.append(float(gpu.train_step(X, y, o_gpu)))
    assert _plan(gpu, batch).fused
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(fdevice.to_host(gpu.params), cpu.params, rtol=1e-11,
                               atol=1e-13)


def test_fused_and_general_plans_agree_in_float32():
    from fastbp.kernels.cuda import launch_config
    rng = np.random.default_rng(4)
    sizes, batch = [7, 6, 5, 3], 5
    X, y = _data(rng, sizes, batch, "softmax_cross_entropy")
    results = []
    for fused in (True, False):
        with launch_config(fused=fused):
            net = fastbp.MLP(sizes, activation="tanh", dtype="float32", seed=5,
                             device="cuda")
            opt = fastbp.SGD(net, lr=0.1, momentum=0.9)
            losses = [float(net.train_step(X, y, opt)) for _ in range(2)]
            assert _plan(net, batch).fused == fused
            results.append((losses, fdevice.to_host(net.params)))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)


def test_an_epoch_runs_the_fused_step_and_matches_the_cpu():
    rng = np.random.default_rng(6)
    sizes = [4, 6, 3]
    X, y = _data(rng, sizes, 13, "softmax_cross_entropy")
    cpu = fastbp.MLP(sizes, activation="tanh", dtype="float64", seed=7)
    gpu = fastbp.MLP(sizes, activation="tanh", dtype="float64", seed=7, device="cuda")
    l_cpu = cpu.train_epoch(X, y, fastbp.SGD(cpu, lr=0.1), batch_size=5)
    l_gpu = gpu.train_epoch(X, y, fastbp.SGD(gpu, lr=0.1), batch_size=5)
    np.testing.assert_allclose(l_gpu, l_cpu, rtol=1e-12)
    np.testing.assert_allclose(fdevice.to_host(gpu.params), cpu.params, rtol=1e-11,
                               atol=1e-13)
    from fastbp.kernels.cuda.plan import EpochState
    plans = EpochState.of(gpu.params).plans
    assert plans and all(p.fused for p in plans.values())


def test_which_networks_are_fused():
    fused = _fused_module()
    R, limit = fused.ROWS, fused.SHARED_BYTES
    # the widest output sets the tiles: two of ROWS x H in shared memory
    assert fused.tile_width([784, 128, 10]) == 128
    assert fused.tile_width([3, 5, 2]) == 8
    assert fused.eligible([784, 128, 10], "float32", 64, 256)
    # the widest power of two whose float32 tiles fit (beside forward's lane sums and
    # the loss's): a width one more needs tiles twice as wide, and float64 ones do not
    # fit at that width
    def widest(dtype):
        return max(w for w in (1 << e for e in range(2, 14))
                   if fused.eligible([10, w, 10], dtype, 64, 256))
    w32, w64 = widest("float32"), widest("float64")
    assert w32 >= 64 and 2 * R * w32 * 4 <= limit
    assert not fused.eligible([10, w32 + 1, 10], "float32", 64, 256)
    # 8-byte tiles (and reduction sums): half or a quarter the width (on a GPU the
    # 256-thread reduction space decides which)
    assert w32 // 4 <= w64 < w32 and not fused.eligible([10, w64 + 1, 10], "float64", 64, 256)
    # one loss partial sum per block must fit the plan's partials
    assert not fused.eligible([3, 5, 2], "float32", 257 * R, 256)
    from fastbp.kernels.cuda import launch_config
    with launch_config(fused=False):
        assert not fused.eligible([3, 5, 2], "float32", 4, 256)
