"""The examples in docstrings and the README run and give what they show; the
documentation stands on its own and gives one install hint for the GPU."""
import doctest
import importlib
import re
import subprocess
from pathlib import Path

import pytest


def test_gradcheck_docstring_example():
    # the module, not fastbp.gradcheck (the package exports the function by that name)
    module = importlib.import_module("fastbp.gradcheck")
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0 and result.failed == 0


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_python_blocks():
    text = README.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_library_example_prints_what_it_claims(capsys):
    """The first python block of the README, run as a script, prints the accuracy, the
    layer views and the gradient check it describes."""
    code = _readme_python_blocks()[0]
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    lines = capsys.readouterr().out.splitlines()
    accuracy = [l for l in lines if l.startswith("held-out accuracy")]
    assert accuracy and float(accuracy[0].split()[-1]) > 0.9, lines
    assert "layer 0: (64, 64) (64, 64) True" in lines, lines
    check = [l for l in lines if l.startswith("gradcheck:")]
    assert check and float(check[0].split()[-1]) < 1e-6, lines


def _repo_texts():
    """(path, text) of every file git tracks in the repository."""
    root = README.parent
    try:
        names = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the repository's file list is unknown")
    for name in names:
        path = root / name
        if path.is_file() and path.suffix not in (".gz", ".png", ".npz"):
            yield name, path.read_text(encoding="utf-8", errors="replace")


def test_the_repository_stands_on_its_own():
    """No file cites notes that are not part of the repository."""
    notes = "FIELD" + "_NOTES"   # spelled apart, so this file does not cite it
    cited = [name for name, text in _repo_texts() if notes in text]
    assert cited == []


def test_one_gpu_install_hint_everywhere():
    """Every hint on installing the GPU dependencies is the one fastbp.device gives (it
    works from a clone); .ci/run and pyproject.toml install them, they do not hint."""
    from fastbp.device import INSTALL_COMMAND
    hints = []
    for name, text in _repo_texts():
        if name in (".ci/run", "pyproject.toml"):
            continue
        for line in text.splitlines():
            if "pip install" in line and ("cuda" in line.lower()) and "nvcc" not in line:
                hints.append((name, line.strip()))
    assert hints, "no GPU install hint found at all"
    assert all(INSTALL_COMMAND in line or "INSTALL_COMMAND" in line for _, line in hints), hints
