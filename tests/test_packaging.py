"""Packaging: the top-level kernels/ folder installs as ``fastbp.kernels``, never as a
top-level module ``kernels`` (PyPI has an unrelated package of that name; the two would
overwrite each other).

What this file proves:
1. In this environment's install (editable or not), fastbp.kernels, fastbp.kernels.cpu
   and fastbp.kernels.reference import, and ``import kernels`` run from a neutral
   directory does not resolve to this repository's folder.
2. A wheel built from the source tree lists fastbp/kernels/cpu/*.py and
   fastbp/data/digits.csv.gz, has no top-level kernels/ entry (nor "kernels" in
   top_level.txt), and, unzipped and put first on sys.path in a fresh interpreter started
   in a scratch directory, imports from itself, loads the bundled digits and runs a tiny
   MLP forward.

Checks that must not see the repository root on sys.path (``python -m pytest`` puts the
current directory there) run in subprocesses started in tmp_path.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Under a minute on 2 cores: building the wheel takes a few seconds, the import in a
# fresh interpreter compiles one small numba kernel into the unzipped copy.
WHEEL_TIMEOUT_S = 240


def run_python(code, cwd, env_extra=None, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def is_inside(path, folder):
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


# -- 1. the installed (editable) package -----------------------------------------------
INSTALLED_PROBE = r"""
import importlib.util, json, sys
import fastbp, fastbp.kernels, fastbp.kernels.cpu, fastbp.kernels.reference
import fastbp.kernels.codes
spec = importlib.util.find_spec("kernels")
print(json.dumps({
    "fastbp": fastbp.__file__,
    "fastbp.kernels": fastbp.kernels.__file__,
    "fastbp.kernels.cpu": fastbp.kernels.cpu.__file__,
    "fastbp.kernels.reference": fastbp.kernels.reference.__file__,
    "has_network_forward": hasattr(fastbp.kernels.cpu, "network_forward"),
    "has_reference_forward": hasattr(fastbp.kernels.reference, "network_forward"),
    "kernels_origin": None if spec is None else (spec.origin or ""),
    "kernels_locations": None if spec is None else
        list(spec.submodule_search_locations or []),
    "sys_path": sys.path,
}))
"""


METADATA_PROBE = r"""
import json
from importlib import metadata
dist = metadata.distribution("fastbp")
print(json.dumps({"top_level": dist.read_text("top_level.txt"),
                  "files": [str(f) for f in dist.files or []]}))
"""


def test_installed_package_imports_fastbp_kernels(tmp_path):
    info = json.loads(run_python(INSTALLED_PROBE, cwd=tmp_path))
    assert not any(p and Path(p).resolve() == REPO for p in info["sys_path"]), \
        "the repository root leaked onto sys.path; the probe would prove nothing"
    assert info["has_network_forward"] and info["has_reference_forward"]
    # The kernel modules are this repository's kernels/ (editable install) or an
    # installed copy, but always reached under the fastbp.kernels name.
    kernels_file = Path(info["fastbp.kernels"])
    assert kernels_file.name == "__init__.py"
    assert kernels_file.parent.name == "kernels"
    assert Path(info["fastbp.kernels.cpu"]).parent.parent == kernels_file.parent
    assert Path(info["fastbp.kernels.reference"]).parent == kernels_file.parent
    if is_inside(info["fastbp"], REPO / "fastbp"):   # editable install of this checkout
        assert kernels_file.parent.resolve() == (REPO / "kernels").resolve()


def test_import_kernels_does_not_resolve_to_this_repository(tmp_path):
    info = json.loads(run_python(INSTALLED_PROBE, cwd=tmp_path))
    if info["kernels_origin"] is None:
        return   # no top-level "kernels" at all: the expected state
    # Some other distribution named "kernels" may be installed; it must not be ours.
    locations = [info["kernels_origin"], *info["kernels_locations"]]
    ours = REPO / "kernels"
    assert not any(loc and is_inside(loc, ours) for loc in locations), locations
    assert not any(loc and Path(loc).resolve() == ours.resolve() for loc in locations)


def test_installed_metadata_has_no_top_level_kernels(tmp_path):
    """The installed distribution's metadata (read from a neutral directory, so a
    fastbp.egg-info left in the checkout is not what is read) claims no top-level
    kernels module or file."""
    info = json.loads(run_python(METADATA_PROBE, cwd=tmp_path))
    assert info["top_level"] is None or "kernels" not in info["top_level"].split(), info
    for f in info["files"]:
        assert Path(f).parts[0] != "kernels", f"installed file at top-level kernels/: {f}"


# -- 2. a built wheel ------------------------------------------------------------------
def copy_source_tree(dest):
    """Copy what a build reads (top-level files, fastbp/, kernels/) without the build
    outputs, caches and virtual environments, so the build cannot touch the checkout."""
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc",
                                    "*.egg-info", "build", "dist")
    for entry in REPO.iterdir():
        if entry.is_file():
            shutil.copy2(entry, dest / entry.name)
    for folder in ("fastbp", "kernels"):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    return dest


def build_wheel(src, out):
    """pip wheel without build isolation when setuptools is importable here (offline,
    fast); otherwise with isolation, which fetches the build requirements."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
           "--disable-pip-version-check", "-w", str(out), str(src)]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.insert(4, "--no-build-isolation")
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True,
                          timeout=WHEEL_TIMEOUT_S)
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list(out.glob("fastbp-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    src = copy_source_tree(root / "src")
    return build_wheel(src, root / "dist")


WHEEL_PROBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import fastbp, fastbp.kernels.cpu, fastbp.kernels.reference
X, y = fastbp.load_digits()
net = fastbp.MLP([64, 8, 10], activation="tanh", seed=0)
out = net.forward(X[:5] / 16.0)
print(json.dumps({
    "fastbp": fastbp.__file__,
    "cpu": fastbp.kernels.cpu.__file__,
    "reference": fastbp.kernels.reference.__file__,
    "X": list(X.shape), "y": list(y.shape), "classes": sorted(set(y.tolist())),
    "out": list(out.shape), "finite": bool(np.isfinite(out).all()),
}))
"""


@pytest.mark.slow
def test_wheel_file_list(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        top_levels = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        top_level = zf.read(top_levels[0]).decode().split() if top_levels else []
    cpu_sources = {p.name for p in (REPO / "kernels" / "cpu").glob("*.py")}
    assert cpu_sources, "kernels/cpu has no sources?"
    for name in sorted(cpu_sources):
        assert f"fastbp/kernels/cpu/{name}" in names, f"missing fastbp/kernels/cpu/{name}"
    for name in ("fastbp/kernels/__init__.py", "fastbp/kernels/reference.py",
                 "fastbp/kernels/codes.py", "fastbp/data/digits.csv.gz",
                 "fastbp/__init__.py"):
        assert name in names, f"missing {name}"
    assert not [n for n in names if n.split("/")[0] == "kernels"], \
        "wheel has a top-level kernels/ entry"
    assert "kernels" not in top_level, top_level
    assert not [n for n in names if n.endswith((".nbi", ".nbc", ".pyc"))], \
        "wheel ships compiled caches"
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks")]


@pytest.mark.slow
def test_wheel_imports_and_runs(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    assert not (site / "kernels").exists()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    code = WHEEL_PROBE.replace("sys.argv[1]", repr(str(site)))
    info = json.loads(run_python(code, cwd=run_dir, timeout=WHEEL_TIMEOUT_S,
                                 env_extra={"NUMBA_CACHE_DIR": str(tmp_path / "numba"),
                                            # its network's own passes, as for a user:
                                            # the general ones (conftest.py) compile
                                            # 2-3x longer into this empty cache
                                            "FASTBP_SPECIALISED_SETS": "2"}))
    for key in ("fastbp", "cpu", "reference"):
        assert is_inside(info[key], site), f"{key} imported from {info[key]}, not the wheel"
    assert info["X"] == [1797, 64] and info["y"] == [1797]
    assert info["classes"] == list(range(10))
    assert info["out"] == [5, 10] and info["finite"]
