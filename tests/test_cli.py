"""python -m fastbp train / predict: runs, files, and one-line errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp.cli import main

FAST = ["--epochs", "2", "--hidden", "16", "--quiet"]


def _run(*args, timeout=300):
    env = dict(os.environ)
    env.pop("FASTBP_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "fastbp", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    X, y = fastbp.load_digits()
    np.savez(d / "digits.npz", X=X, y=y)
    header = ",".join([f"p{i}" for i in range(64)] + ["digit"])
    np.savetxt(d / "digits.csv", np.c_[X, y], delimiter=",", fmt="%g", header=header,
               comments="")
    np.savetxt(d / "label_first.csv", np.c_[y, X], delimiter=",", fmt="%g")
    np.savetxt(d / "features.csv", X[:20], delimiter=",", fmt="%g")
    return d


def test_default_run_in_a_subprocess(tmp_path):
    """The documented command, as a user runs it (defaults, per-epoch lines)."""
    out = _run("train", "--save", str(tmp_path / "m.npz"))
    assert out.returncode == 0, out.stderr
    assert "epoch  30/30" in out.stdout
    acc = float(out.stdout.split("test accuracy ")[1].split()[0])
    assert acc >= 0.97
    # nothing on stderr but, with a cold numba cache, the one line announcing compilation
    notice = "compiling fastbp's kernels for this machine ("
    assert out.stderr == "" or (out.stderr.startswith(notice)
                                and out.stderr.count("\n") == 1), out.stderr
    pred = _run("predict", str(tmp_path / "m.npz"), str(tmp_path / "none.csv"))
    assert pred.returncode == 1 and pred.stderr.count("\n") == 1


def test_train_save_predict_round_trip(tmp_path, digits_files, capsys):
    model = tmp_path / "model.npz"
    assert main(["train", *FAST, "--save", str(model), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("test accuracy ")[1].split()[0])
    net = fastbp.load(model)
    X, y = fastbp.load_digits()
    # The standardisation is folded into the saved model: it takes raw pixels.
    _, X_te, _, y_te = fastbp.train_test_split(X, y, 0.25, 3)
    assert fastbp.accuracy(net, X_te, y_te) == pytest.approx(acc, abs=1e-4)

    result = tmp_path / "pred.txt"
    assert main(["predict", str(model), str(digits_files / "digits.csv"),
                 "-o", str(result)]) == 0
    err = capsys.readouterr().err
    assert "accuracy" in err
    lines = result.read_text().split()
    assert len(lines) == 1797
    assert np.array_equal(np.array(lines, dtype=int), net.predict(X))

    assert main(["predict", str(model), str(digits_files / "features.csv")]) == 0
    assert capsys.readouterr().out.split() == [str(v) for v in net.predict(X[:20])]
    npy = tmp_path / "pred.npy"
    assert main(["predict", str(model), str(digits_files / "digits.npz"), "-o", str(npy)]) == 0
    assert np.array_equal(np.load(npy), net.predict(X))


@pytest.mark.parametrize("name, extra", [
    ("digits.npz", []),
    ("digits.csv", ["--label-column", "digit"]),
    ("label_first.csv", ["--label-column", "0"]),
])
def test_train_on_user_files(digits_files, name, extra, capsys):
    assert main(["train", "--data", str(digits_files / name), *extra, *FAST,
                 "--optimizer", "sgd", "--activation", "tanh", "--batch-size", "64",
                 "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert f"{name}: 1347 training" in out and "10 classes" in out
    from fastbp.kernels.cpu import blas   # the second line: what multiplies the products
    assert out.splitlines()[1] == f"matrix products: {blas.describe()}"
    assert float(out.split("test accuracy ")[1].split()[0]) > 0.8


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "x"], "--epochs"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--hidden", "64,a"], "--hidden"),
    (["train", "--activation", "swish"], "--activation"),
    (["train", "--optimizer", "lbfgs"], "--optimizer"),
    (["train", "--test-fraction", "1.5"], "--test-fraction"),
    (["train", "--bogus"], "unrecognized"),
    (["frobnicate"], "invalid choice"),
    (["train", "--hidden", "64,,32"], "--hidden"),
    (["train", "--hidden", "64,"], "--hidden"),
    (["train", "--device", "gpu"], "--device"),
    (["train", "--device", "foo"], "--device"),
    (["warmup", "--dtype", "float16"], "--dtype"),
    (["warmup", "--activations", "relu,swish"], "--activations"),
])
def test_flag_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and message in err


def _bad_files(d):
    (d / "text.csv").write_text("a,b\nx,y\n")
    (d / "one_col.csv").write_text("1\n2\n")
    (d / "neg.csv").write_text("1,2,-1\n3,4,0\n")
    (d / "frac.csv").write_text("1,2,0.5\n3,4,0\n")
    (d / "nan.csv").write_text("1,nan,1\n3,4,0\n")
    (d / "oneclass.csv").write_text("1,2,0\n3,4,0\n")
    (d / "data.txt").write_text("1,2,0\n")
    np.savez(d / "noy.npz", X=np.zeros((4, 2)))
    np.savez(d / "badx.npz", X=np.zeros(4), y=np.zeros(4))
    (d / "junk.npz").write_bytes(b"PK\x03\x04junk")


@pytest.mark.parametrize("name, message", [
    ("missing.csv", "no such file"),
    ("text.csv", "line 2, column 1 ('a'): 'x' is not a number"),
    ("one_col.csv", "label column"),
    ("neg.csv", "integers >= 0"),
    ("frac.csv", "non-integral"),
    ("nan.csv", "not a table of numbers|NaN"),
    ("oneclass.csv", "2 classes"),
    ("data.txt", "unknown file type"),
    ("noy.npz", "'y'"),
    ("badx.npz", "2-D"),
    ("junk.npz", "not a readable"),
])
def test_data_file_errors_are_one_line(tmp_path, name, message, capsys):
    _bad_files(tmp_path)
    assert main(["train", "--data", str(tmp_path / name), *FAST]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert any(m in err for m in message.split("|")), err


def test_predict_errors_are_one_line(tmp_path, digits_files, capsys):
    model = tmp_path / "m.npz"
    fastbp.MLP([64, 8, 10], seed=0).save(model)
    (tmp_path / "corrupt.npz").write_bytes(model.read_bytes()[:-40])
    (tmp_path / "narrow.csv").write_text("1,2,3\n")
    cases = [
        ([str(tmp_path / "corrupt.npz"), str(digits_files / "features.csv")],
         "not a readable fastbp model"),
        ([str(digits_files / "digits.npz"), str(digits_files / "features.csv")],
         "not a fastbp model"),
        ([str(model), str(tmp_path / "narrow.csv")], "64 features"),
        ([str(tmp_path / "nope.npz"), str(tmp_path / "narrow.csv")], "no such file"),
    ]
    for args, message in cases:
        assert main(["predict", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and message in err, err


def test_plot_without_matplotlib_or_with_it(tmp_path, capsys):
    png = tmp_path / "curves.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert main(["train", *FAST, "--plot", str(png)]) == 1
        err = capsys.readouterr().err
        assert "matplotlib" in err and err.count("\n") == 1 and not png.exists()
        return
    assert main(["train", *FAST, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unavailable_device_is_one_line():
    """In a fresh process with the simulator off (this one may have it on): on a machine
    without a GPU, --device cuda is refused in one line saying why."""
    if fastbp.device.nvidia_smi_lists_gpu():
        pytest.skip("a GPU is usable here")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    proc = subprocess.run([sys.executable, "-m", "fastbp", "train", *FAST, "--device", "cuda"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert err.startswith("error:") and err.count("\n") == 1 and "cuda" in err, err
    assert "driver" in err or "CUDA package" in err, err   # it says why


def test_console_script_is_declared():
    from importlib.metadata import entry_points
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("fastbp") == "fastbp.cli:main"


def test_model_errors_never_suggest_unpickling(tmp_path, digits_files, capsys):
    """Swapped arguments or a corrupt model: say what was expected, never numpy's advice
    to load the file with allow_pickle."""
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(200))
    (tmp_path / "text.npz").write_text("1,2,3\n")
    model = tmp_path / "m.npz"
    fastbp.MLP([64, 8, 10], seed=0).save(model)
    cases = [
        [str(digits_files / "features.csv"), str(model)],          # swapped
        [str(tmp_path / "random.npz"), str(digits_files / "features.csv")],
        [str(tmp_path / "text.npz"), str(digits_files / "features.csv")],
        [str(digits_files / "digits.npz"), str(digits_files / "features.csv")],
    ]
    for args in cases:
        assert main(["predict", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, err
        assert "pickle" not in err.replace("pickled Python objects", ""), err
        assert "train --save" in err and "MLP.save" in err, err


def test_help_names_the_program_and_describes_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: fastbp ")
    out = _run("--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m fastbp "), out
    for command in ("train", "predict", "compare", "warmup"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = capsys.readouterr().out
        description = help_text.split("\n\n")[1]
        assert not description.startswith(("options:", "positional")), help_text


def test_train_compiles_before_its_clock_starts(monkeypatch, capsys):
    """The CLI compiles (warmup) before it starts timing, and fit does before its bar."""
    from fastbp import cli, training
    calls = []
    real_warmup, real_fit, real_prepare = training.warmup, training.fit, training.prepare

    def prepare(*args, **kwargs):   # what the command line compiles before its clock
        calls.append("prepare")
        return real_prepare(*args, **kwargs)

    def fit(*args, **kwargs):
        calls.append("fit")
        return real_fit(*args, **kwargs)

    def fit_warmup(*args, **kwargs):
        calls.append("fit warmup")
        return real_warmup(*args, **kwargs)

    class Bar:
        def __init__(self, *args, **kwargs):
            calls.append("bar")

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    import tqdm
    monkeypatch.setattr(training, "fit", fit)
    monkeypatch.setattr(training, "prepare", prepare)
    monkeypatch.setattr(training, "warmup", fit_warmup)
    monkeypatch.setattr(training, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(tqdm, "tqdm", Bar)
    assert main(["train", "--epochs", "2", "--hidden", "16"]) == 0   # with the bar
    # the command line's prepare compiles before its clock and fit; fit's own prepare,
    # which finds it all compiled, comes before its bar
    assert calls == ["prepare", "fit warmup", "fit", "prepare", "fit warmup", "bar"], calls


def test_warmup_command(capsys):
    """Compiles what train uses by default (the suite compiles that network anyway)."""
    assert main(["warmup"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fastbp's kernels are compiled for float32 and relu"), out
