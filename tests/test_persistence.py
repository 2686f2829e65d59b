"""net.save / fastbp.load: bit-identical round trips, and clear errors for bad files."""
import os
import zipfile

import numpy as np
import pytest

import fastbp
from fastbp.optim import make_optimizer
from fastbp.persistence import FORMAT_VERSION, ModelFileError, load


def _trained(tmp_path, activation="tanh", loss="softmax_cross_entropy", dtype="float32",
             optimizer="adam"):
    rng = np.random.default_rng(0)
    net = fastbp.MLP([5, 7, 4, 3], activation=[activation, "relu"], loss=loss,
                     dtype=dtype, seed=1)
    X = rng.standard_normal((40, 5))
    y = (np.arange(40) % 3 if loss == "softmax_cross_entropy"
         else rng.uniform(size=(40, 3)))
    opt = make_optimizer(optimizer, net, lr=0.01)
    fastbp.fit(net, X, y, epochs=2, batch_size=8, optimizer=opt, seed=0, verbose=False)
    return net, opt, X, y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "bce_with_logits"])
def test_round_trip_is_bit_identical(tmp_path, dtype, loss):
    net, _, X, _ = _trained(tmp_path, activation="gelu", loss=loss, dtype=dtype)
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = fastbp.load(path)
    assert loaded.sizes == net.sizes and loaded.activations == net.activations
    assert loaded.loss == net.loss and loaded.dtype == net.dtype
    assert loaded.params.tobytes() == net.params.tobytes()
    assert np.array_equal(loaded.forward(X), net.forward(X))
    assert np.array_equal(loaded.predict(X), net.predict(X))


def test_leaky_slope_and_path_used_as_given(tmp_path):
    net = fastbp.MLP([3, 4, 2], activation="leaky_relu", leaky_relu_slope=0.2, seed=0)
    path = tmp_path / "no_extension"
    net.save(str(path))
    assert path.exists() and not (tmp_path / "no_extension.npz").exists()
    assert fastbp.load(path).leaky_relu_slope == 0.2


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
def test_optimizer_state_round_trip(tmp_path, optimizer):
    net, opt, X, y = _trained(tmp_path, optimizer=optimizer)
    path = tmp_path / "m.npz"
    net.save(path, optimizer=opt)
    net2, opt2 = fastbp.load(path, with_optimizer=True)
    assert type(opt2) is type(opt) and opt2.steps == opt.steps
    assert np.array_equal(opt2.hparams, opt.hparams) and np.array_equal(opt2.state, opt.state)
    # Resuming gives exactly what continuing would have.
    fastbp.fit(net, X, y, epochs=1, batch_size=8, optimizer=opt, seed=5, verbose=False)
    fastbp.fit(net2, X, y, epochs=1, batch_size=8, optimizer=opt2, seed=5, verbose=False)
    assert net2.params.tobytes() == net.params.tobytes()


def test_without_optimizer_state(tmp_path):
    net, _, _, _ = _trained(tmp_path)
    net.save(tmp_path / "m.npz")
    loaded, opt = fastbp.load(tmp_path / "m.npz", with_optimizer=True)
    assert opt is None and isinstance(loaded, fastbp.MLP)


def test_no_pickle_inside(tmp_path):
    net, opt, _, _ = _trained(tmp_path)
    net.save(tmp_path / "m.npz", optimizer=opt)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as archive:
        for key in archive.files:
            assert archive[key].dtype.kind in "biufU", key
        assert int(archive["format_version"]) == FORMAT_VERSION


def _rewrite(src, dst, change):
    with np.load(src, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


@pytest.fixture
def saved(tmp_path):
    net, opt, _, _ = _trained(tmp_path)
    path = tmp_path / "good.npz"
    net.save(path, optimizer=opt)
    return path


def test_truncated_file(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="not a readable fastbp model"):
            fastbp.load(bad)


def test_corrupted_bytes_fail_the_crc(saved, tmp_path):
    info = zipfile.ZipFile(saved).getinfo("params.npy")
    data = bytearray(saved.read_bytes())
    data[info.header_offset + 150] ^= 0x40   # inside the parameter data
    bad = tmp_path / "flip.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="CRC|not a readable"):
        fastbp.load(bad)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ModelFileError):
        fastbp.load(text)
    other = tmp_path / "other.npz"
    np.savez(other, X=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a fastbp model"):
        fastbp.load(other)
    npy = tmp_path / "plain.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ModelFileError):
        fastbp.load(npy)
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "missing.npz")


def test_newer_version_is_refused(saved, tmp_path):
    bad = tmp_path / "future.npz"
    _rewrite(saved, bad, lambda a: a.update(format_version=np.array(FORMAT_VERSION + 1)))
    with pytest.raises(ModelFileError, match="newer"):
        fastbp.load(bad)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(params=a["params"][:-1]), "params"),
    (lambda a: a.update(params=a["params"].astype(np.float64)), "params"),
    (lambda a: a.update(sizes=np.array([5, 7, 4, 0])), "sizes"),
    (lambda a: a.update(sizes=np.array([5.0, 7.0, 4.0, 3.0])), "sizes"),
    (lambda a: a.update(activations=np.array(["tanh", "swish", "identity"])), "swish"),
    (lambda a: a.update(activations=np.array(["tanh", "identity"])), "activations"),
    (lambda a: a.update(loss=np.array("hinge")), "hinge"),
    (lambda a: a.update(dtype=np.array("float16")), "dtype"),
    (lambda a: a.update(leaky_relu_slope=np.array(-1.0)), "slope"),
    (lambda a: a.pop("loss"), "missing"),
    (lambda a: a.pop("format_version"), "version"),
    (lambda a: a["params"].__setitem__(0, np.nan), "NaN"),
    (lambda a: a.update({"optimizer/state": a["optimizer/state"][:, :-1]}), "optimizer"),
    (lambda a: a.update({"optimizer/code": np.array(99)}), "optimizer"),
])
def test_invalid_entries_are_named(saved, tmp_path, change, message):
    bad = tmp_path / "bad.npz"
    _rewrite(saved, bad, change)
    with pytest.raises(ModelFileError, match=message):
        fastbp.load(bad, with_optimizer=True)


def test_failed_save_leaves_no_file(tmp_path):
    net = fastbp.MLP([2, 2], seed=0)
    other = fastbp.MLP([2, 2], seed=0)
    with pytest.raises(ValueError, match="different network"):
        net.save(tmp_path / "m.npz", optimizer=make_optimizer("sgd", other))
    assert os.listdir(tmp_path) == []
