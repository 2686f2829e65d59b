"""Recomputation (MLP(..., checkpoint=k)) changes memory, never results.

With checkpointing only every k-th layer's output survives the forward pass; backward
recomputes the rest segment by segment. These tests show that the loss and every
gradient are bit-identical to the network that keeps everything (same kernels, same
order of operations), that the workspace really shrinks, that training steps match,
and that the CUDA twin (in the simulator here) does the same.
"""
import numpy as np
import pytest

import fastbp

ACTS = ["tanh", "gelu", "relu", "softplus", "sigmoid", "gelu_tanh"]   # S kept for some
SIZES = [6, 5, 7, 4, 6, 5, 8, 3]


def _pair(loss, k, dtype="float64", device="cpu"):
    kept = fastbp.MLP(SIZES, activation=ACTS, loss=loss, dtype=dtype, seed=3)
    ckpt = fastbp.MLP(SIZES, activation=ACTS, loss=loss, dtype=dtype, seed=3,
                      checkpoint=k, device=device)
    return kept, ckpt


def _data(loss, rng, batch=9):
    X = rng.standard_normal((batch, SIZES[0]))
    if loss == "softmax_cross_entropy":
        return X, rng.integers(0, SIZES[-1], batch)
    return X, rng.random((batch, SIZES[-1]))


@pytest.mark.parametrize("loss", fastbp.LOSSES)
@pytest.mark.parametrize("k", [2, 3, 4, 7])
def test_checkpointed_gradients_equal_stored(loss, k):
    rng = np.random.default_rng(k)
    kept, ckpt = _pair(loss, k)
    X, y = _data(loss, rng)
    assert kept.backward(X, y) == ckpt.backward(X, y)
    np.testing.assert_array_equal(ckpt.grads, kept.grads)
    np.testing.assert_array_equal(ckpt.forward(X), kept.forward(X))


@pytest.mark.parametrize("k", [2, 3])
def test_checkpointed_gradcheck(k):
    rng = np.random.default_rng(0)
    _, net = _pair("softmax_cross_entropy", k)
    net.params[:] = 0.5 * rng.standard_normal(net.n_params)
    X, y = _data("softmax_cross_entropy", rng)
    assert fastbp.gradcheck(net, X, y) < 1e-6


def test_checkpoint_shrinks_the_workspace():
    deep = [64] * 33   # 32 layers of 64
    rows = {k: fastbp.MLP(deep, activation="tanh", loss="mse", checkpoint=k).layout.act_rows
            for k in (None, 2, 4)}
    assert rows[None] == 32 * 64
    # k=2: layers 1, 3, ..., 31 kept (16), scratch for one layer of a segment
    assert rows[2] == (16 + 1) * 64
    # k=4: layers 3, 7, ..., 31 kept (8), scratch for three
    assert rows[4] == (8 + 3) * 64


def test_checkpointed_training_steps_match():
    rng = np.random.default_rng(5)
    kept, ckpt = _pair("mse", 3, dtype="float32")
    opt_kept, opt_ckpt = fastbp.Adam(kept, lr=1e-2), fastbp.Adam(ckpt, lr=1e-2)
    for _ in range(5):
        X, y = _data("mse", rng, batch=int(rng.integers(1, 12)))
        assert kept.train_step(X, y, opt_kept) == ckpt.train_step(X, y, opt_ckpt)
    np.testing.assert_array_equal(ckpt.params, kept.params)


def test_checkpoint_argument_checked():
    with pytest.raises(ValueError, match="checkpoint"):
        fastbp.MLP([3, 4, 2], checkpoint=0)
    with pytest.raises(TypeError, match="checkpoint"):
        fastbp.MLP([3, 4, 2], checkpoint=2.5)


def test_checkpointed_cuda_matches_cpu():
    """Runs in numba's CUDA simulator in CI (conftest.py), on the GPU where one is."""
    from fastbp import device as fastbp_device
    usable, reason = fastbp_device.cuda_status()
    if not usable:
        pytest.skip(f"CUDA unusable here: {reason}")
    rng = np.random.default_rng(1)
    sizes = [3, 4, 5, 3, 2]
    cpu = fastbp.MLP(sizes, activation=["tanh", "gelu", "relu"], dtype="float64",
                     seed=1, checkpoint=2)
    gpu = fastbp.MLP(sizes, activation=["tanh", "gelu", "relu"], dtype="float64",
                     seed=1, checkpoint=2, device="cuda")
    X, y = rng.standard_normal((3, 3)), rng.integers(0, 2, 3)
    assert gpu.backward(X, y) == pytest.approx(cpu.backward(X, y), rel=1e-12)
    np.testing.assert_allclose(fastbp_device.to_host(gpu.grads), cpu.grads, rtol=1e-10,
                               atol=1e-14)
