"""The command line's files: CSV quirks (byte-order mark, header only, invalid UTF-8,
huge labels) each give one `error:` line naming the file, line and column, and --save
is checked before training."""
import warnings

import numpy as np
import pytest

import fastbp
from fastbp.cli import main
from fastbp.tables import read_csv

FAST = ["--epochs", "1", "--hidden", "8", "--quiet"]
BOM = b"\xef\xbb\xbf"


def _rows(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return [f"{a:.3f},{b:.3f},{i % 2}" for i, (a, b) in
            enumerate(rng.standard_normal((n, 2)))]


def test_byte_order_mark_is_dropped(tmp_path):
    plain, marked = tmp_path / "plain.csv", tmp_path / "bom.csv"
    text = "\n".join(_rows()) + "\n"
    plain.write_bytes(text.encode())
    marked.write_bytes(BOM + text.encode())
    a, b = read_csv(plain), read_csv(marked)
    assert b.header is None and b.values.shape == (40, 3)
    assert np.array_equal(a.values, b.values)
    named = tmp_path / "named.csv"
    named.write_bytes(BOM + ("x1,x2,label\n" + text).encode())
    c = read_csv(named)
    assert c.header == ["x1", "x2", "label"] and c.values.shape == (40, 3)
    assert c.lines[0] == 2 and c.where(3, 2) == f"{named}: line 5, column 3 ('label')"


def test_bom_csv_trains_and_predicts_every_row(tmp_path, capsys):
    data = tmp_path / "bom.csv"
    data.write_bytes(BOM + ("x1,x2,label\n" + "\n".join(_rows()) + "\n").encode())
    model = tmp_path / "m.npz"
    assert main(["train", "--data", str(data), "--label-column", "label",
                 "--save", str(model), *FAST]) == 0
    assert "30 training and 10 held-out samples" in capsys.readouterr().out
    out = tmp_path / "pred.txt"
    assert main(["predict", str(model), str(data), "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 40


def _one_error(capsys, argv):
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # no numpy warning may leak
        status = main(argv)
    captured = capsys.readouterr()
    assert status == 1 and captured.err.startswith("error: "), captured
    assert captured.out == ""       # refused before anything ran
    assert captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.mark.parametrize("content, expected", [
    (b"a,b,label\n", "no data rows (only the header on line 1)"),
    (b"\n\n", "empty file"),
    (b"1,2,0\n3,4,1\n5,\xff6,0\n", "line 3, column 2: not UTF-8 text (byte 0xff)"),
    (b"x,y,label\n1,2,0\n3,4,1e30\n", "line 3, column 3 ('label'): label 1e+30 is too "
                                      "large"),
    (b"1,2,0\n3,4,-2\n", "line 2, column 3: label -2 is negative"),
    (b"1,2,0\n\n3,4,0.5\n", "line 3, column 3: label 0.5 is non-integral"),
    (b"x,y,label\n1,2,0\n3,,1\n", "line 3, column 2 ('y'): an empty value is not a "
                                  "number"),
    (b"1,2,0\n3,inf,1\n", "line 2, column 2: 'inf' is not a finite number"),
    (b"1,2,0\n3,4\n", "line 2: 2 values, but line 1 has 3"),
    (b"1,2,0\n3,abc,1\n", "line 2, column 2: 'abc' is not a number"),
])
def test_bad_csv_files_give_one_located_line(tmp_path, capsys, content, expected):
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    err = _one_error(capsys, ["train", "--data", str(data), *FAST])
    assert f"{data}: {expected}" in err, err


def test_huge_npz_label_is_one_line(tmp_path, capsys):
    data = tmp_path / "data.npz"
    np.savez(data, X=np.zeros((4, 2)), y=np.array([0, 1, 1e30, 0]))
    err = _one_error(capsys, ["train", "--data", str(data), *FAST])
    assert f"{data}: y[2]: label 1e+30 is too large" in err


def test_unwritable_save_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "model.npz"
    err = _one_error(capsys, ["train", "--save", str(target), "--epochs", "1"])
    assert err.startswith(f"error: --save {target}: cannot write a file there "
                          "(Not a directory)"), err
    missing = tmp_path / "no_folder" / "model.npz"
    err = _one_error(capsys, ["train", "--save", str(missing), "--epochs", "1"])
    assert err.startswith(f"error: --save {missing}: cannot write a file there "
                          "(No such file or directory)"), err
    err = _one_error(capsys, ["train", "--save", str(tmp_path), "--epochs", "1"])
    assert f"--save {tmp_path}: is a directory" in err
    err = _one_error(capsys, ["train", "--plot", str(target.with_suffix(".png")),
                              "--epochs", "1"])
    assert f"--plot {target.with_suffix('.png')}: cannot write" in err
    model = tmp_path / "m.npz"
    fastbp.MLP([2, 3, 2], seed=0).save(model)
    data = tmp_path / "x.csv"
    data.write_text("1,2\n3,4\n")
    err = _one_error(capsys, ["predict", str(model), str(data), "-o", str(target)])
    assert f"--output {target}: cannot write" in err
    model.unlink()
    data.unlink()
    err = _one_error(capsys, ["compare", "--json", str(target.with_suffix(".json"))])
    assert f"{target.with_suffix('.json')}: cannot write a file there" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_fast_and_cell_by_cell_parsers_agree(tmp_path):
    """read_csv parses with numpy and falls back to the cell-by-cell parser (which
    locates faults) only when numpy fails: both must read a table the same way."""
    from fastbp import tables
    rng = np.random.default_rng(3)
    values = rng.standard_normal((30, 4)) * 10.0 ** rng.integers(-8, 8, (30, 4))
    lines = [",".join(repr(float(v)) for v in row) for row in values]
    a, b, c, d = (repr(float(v)) for v in values[5])
    lines[5] = f' {a} ,"{b}",{c},{d}'           # spaces, quotes
    text = "\ufeffa,b,c,d\r\n" + "\r\n".join(lines[:10]) + "\r\n\r\n" + \
        "\n".join(lines[10:]) + "\n"
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode())
    table = read_csv(path)
    assert table._lines is None                  # numpy's parser read it
    decoded = text[1:]
    slow, slow_lines = tables._parse(str(path), decoded, table.header, 4, 1)
    assert np.array_equal(table.values, slow) and np.array_equal(table.values, values)
    assert table.lines == slow_lines and table.lines[10] == 13
