"""net.save / fastbp.load: bit-identical round trips, and clear errors for bad files."""
import io
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import tracemalloc
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


# -- atomic saves --------------------------------------------------------------------
def _leftovers(folder):
    return [name for name in os.listdir(folder) if ".fastbp-tmp." in name]


def test_concurrent_saves_to_one_path_always_leave_a_loadable_file(tmp_path):
    """Threads saving two different networks to one path while another thread loads
    it: every load succeeds and gives one of the two networks whole; no save fails."""
    nets = [fastbp.MLP([6, 40, 3], seed=1), fastbp.MLP([6, 9, 9, 3], seed=2)]
    path = tmp_path / "shared.npz"
    nets[0].save(path)
    stop, errors, loads = threading.Event(), [], []

    def saver(net):
        try:
            for _ in range(40):
                net.save(path)
        except Exception as exc:   # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def loader():
        while not stop.is_set():
            try:
                loaded = fastbp.load(path)
            except Exception as exc:   # noqa: BLE001
                errors.append(exc)
                return
            loads.append(loaded.sizes)
            match = [n for n in nets if n.sizes == loaded.sizes]
            assert match and match[0].params.tobytes() == loaded.params.tobytes()

    threads = [threading.Thread(target=saver, args=(n,)) for n in nets * 2]
    reader = threading.Thread(target=loader)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reader.join()
    assert errors == [] and len(loads) > 0
    assert _leftovers(tmp_path) == []
    assert fastbp.load(path).sizes in [n.sizes for n in nets]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    good = fastbp.MLP([3, 4, 2], seed=0)
    good.save(path)
    before = path.read_bytes()

    def broken(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="No space left") as info:
        fastbp.MLP([3, 4, 2], seed=5).save(path)
    assert info.value.filename == str(path)     # names the target, not a temporary
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    """SIGKILL in the middle of a save (a real one, in a child process): the target
    keeps its old content, and the next save removes the dead writer's temporary but
    never a live process's or another host's."""
    path = tmp_path / "m.npz"
    fastbp.MLP([3, 4, 2], seed=0).save(path)
    before = path.read_bytes()
    child = (
        "import os, signal, sys, numpy, fastbp\n"
        "def dying(f, **arrays):\n"
        "    f.write(b'PK partial archive' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "numpy.savez = dying\n"
        "fastbp.MLP([3, 4, 2], seed=1).save(sys.argv[1])\n")
    done = subprocess.run([sys.executable, "-c", child, str(path)], timeout=300)
    assert done.returncode == -signal.SIGKILL
    dead = _leftovers(tmp_path)
    assert len(dead) == 1 and path.read_bytes() == before
    mark = f".m.npz.fastbp-tmp."
    host = dead[0][len(mark):].split(".")[0]
    live = tmp_path / f"{mark}{host}.{os.getppid()}.abcdefgh"     # a live writer
    other = tmp_path / f"{mark}otherhost.999999.abcdefgh"          # another machine
    live.write_bytes(b"x")
    other.write_bytes(b"x")
    fastbp.MLP([3, 4, 2], seed=2).save(path)
    assert sorted(_leftovers(tmp_path)) == sorted([live.name, other.name])
    assert fastbp.load(path).params.tobytes() == fastbp.MLP([3, 4, 2], seed=2) \
        .params.tobytes()


def test_save_keeps_permissions_and_writes_through_symlinks(tmp_path):
    net = fastbp.MLP([3, 4, 2], seed=0)
    private = tmp_path / "private.npz"
    net.save(private)
    os.chmod(private, 0o600)
    fastbp.MLP([3, 4, 2], seed=1).save(private)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    umask = os.umask(0o027)
    try:
        net.save(tmp_path / "new.npz")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "new.npz").st_mode) == 0o640

    real_dir = tmp_path / "store"
    real_dir.mkdir()
    link = tmp_path / "current.npz"
    link.symlink_to(real_dir / "model.npz")      # dangling until the first save
    net.save(link)
    assert link.is_symlink() and (real_dir / "model.npz").is_file()
    other = fastbp.MLP([3, 4, 2], seed=3)
    other.save(link)
    assert link.is_symlink()
    assert fastbp.load(real_dir / "model.npz").params.tobytes() == other.params.tobytes()
    assert _leftovers(tmp_path) == [] and _leftovers(real_dir) == []


def test_unwritable_destinations_name_the_target(tmp_path):
    from fastbp.persistence import check_writable
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    net = fastbp.MLP([3, 4, 2], seed=0)
    for bad in (blocker / "m.npz", tmp_path / "missing" / "m.npz"):
        with pytest.raises(OSError) as info:
            net.save(bad)
        assert info.value.filename == str(bad)
        with pytest.raises(OSError):
            check_writable(bad)
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path)
    check_writable(tmp_path / "fine.npz")
    assert os.listdir(tmp_path) == ["a_file"]


def test_save_refuses_non_finite_values(tmp_path):
    net = fastbp.MLP([3, 4, 2], seed=0)
    opt = fastbp.Adam(net)
    opt.state[1, 3] = np.inf
    with pytest.raises(ValueError, match="optimizer 'state'.*1 NaN or infinite"):
        net.save(tmp_path / "m.npz", optimizer=opt)
    net.params[5] = np.nan
    with pytest.raises(ValueError, match=r"net\.params: expected finite.*1 NaN"):
        net.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# -- crafted files -------------------------------------------------------------------
def _npy(array, shape=None):
    """The bytes of a .npy file of ``array``, its header optionally declaring
    ``shape`` instead."""
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
              "shape": array.shape if shape is None else shape}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + array.tobytes()


def _zip_of(saved, dst, replace, compress=zipfile.ZIP_STORED):
    """Copy the model ``saved`` to ``dst``, entries in ``replace`` ({name: bytes or a
    callable writing into an open entry}) swapped in."""
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(dst, "w") as out:
        names = src.namelist() + [n for n in replace if n not in src.namelist()]
        for name in names:
            data = replace.get(name, None)
            if callable(data):
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with out.open(info, "w", force_zip64=True) as f:
                    data(f)
            else:
                out.writestr(name, src.read(name) if data is None else data,
                             compress_type=compress)


def _deflated_zeros(n_bytes, header=b""):
    def write(f):
        f.write(header)
        chunk = bytes(1 << 20)
        for _ in range(n_bytes >> 20):
            f.write(chunk)
    return write


@pytest.fixture
def small_model(tmp_path):
    net = fastbp.MLP([5, 7, 4, 3], activation="tanh", seed=1)
    path = tmp_path / "small.npz"
    net.save(path, optimizer=fastbp.Adam(net))
    return path


def _load_peak(path):
    """(exception, peak bytes Python allocated while loading ``path``)."""
    tracemalloc.start()
    try:
        fastbp.load(path, with_optimizer=True)
        exc = None
    except Exception as e:   # noqa: BLE001 - returned to the caller
        exc = e
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return exc, peak


def test_crafted_files_are_refused_from_their_headers(small_model, tmp_path):
    params = np.zeros(5 * 7 + 7 + 7 * 4 + 4 + 4 * 3 + 3, np.float32)
    bomb = 64 << 20    # 64 MiB of zeros in about 64 KB
    cases = {
        "layout": ({"sizes.npy": _npy(np.array([5, 7, 4, 2**62 + 1]))}, "params"),
        "shape": ({"params.npy": _npy(params[:0], shape=(10**12,))}, "params"),
        "bomb in params": ({"params.npy": _deflated_zeros(
            bomb, _npy(params[:0], shape=(bomb // 4,)))}, "params"),
        "bomb in sizes": ({"sizes.npy": _deflated_zeros(bomb)}, "sizes"),
        "bomb elsewhere": ({"junk.npy": _deflated_zeros(bomb)}, "unexpected entry"),
        "object array": ({"loss.npy": _npy(np.array(["x"], dtype=object)[:0])},
                         "object|O"),
        "state rows": ({"optimizer/state.npy": _npy(np.zeros((9, params.size),
                                                             np.float32))}, "state"),
    }
    for name, (replace, message) in cases.items():
        bad = tmp_path / f"{name}.npz"
        _zip_of(small_model, bad, replace)
        exc, peak = _load_peak(bad)
        assert isinstance(exc, ModelFileError), (name, exc)
        assert re.search(message, str(exc)), (name, str(exc))
        assert peak < 8 << 20, (name, peak)   # never the declared size


def _central_record(data, name):
    """Offset of ``name``'s record in the zip central directory of ``data``."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46:at + 46 + int.from_bytes(data[at + 28:at + 30], "little")] \
            != name.encode():
        at += 46 + sum(int.from_bytes(data[at + k:at + k + 2], "little")
                       for k in (28, 30, 32))
    return at


def test_encrypted_and_lying_entries_are_refused(small_model, tmp_path):
    # The encryption bit of the general-purpose flags (offset 8 of the record).
    data = bytearray(small_model.read_bytes())
    data[_central_record(bytes(data), "params.npy") + 8] |= 0x1
    bad = tmp_path / "encrypted.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="encrypted"):
        fastbp.load(bad)
    # A stored entry declaring 10**9 bytes (compressed and uncompressed sizes at
    # offsets 20 and 24) in a file of a few kilobytes.
    data = bytearray(small_model.read_bytes())
    at = _central_record(bytes(data), "params.npy")
    data[at + 20:at + 28] = (10**9).to_bytes(4, "little") * 2
    bad = tmp_path / "lying.npz"
    bad.write_bytes(bytes(data))
    exc, peak = _load_peak(bad)
    assert isinstance(exc, ModelFileError) and "params" in str(exc), exc
    assert peak < 8 << 20


@pytest.mark.parametrize("index, value, message", [
    (0, -1.0, "lr"),                 # Adam's hparams: lr, max_grad_norm, beta1, beta2,
    (2, 5.0, r"betas\[0\]"),         # eps, weight_decay, amsgrad
    (4, -1.0, "eps"),
    (1, -2.0, "hparams"),            # max_grad_norm < 0: not a setting Adam makes
    (6, 0.5, "amsgrad|hparams"),
])
def test_optimizer_settings_are_checked_by_the_constructor(small_model, tmp_path,
                                                           index, value, message):
    def change(arrays):
        hparams = arrays["optimizer/hparams"].copy()
        hparams[index] = value
        arrays["optimizer/hparams"] = hparams
    bad = tmp_path / "bad_opt.npz"
    _rewrite(small_model, bad, change)
    with pytest.raises(ModelFileError, match=message):
        fastbp.load(bad, with_optimizer=True)
