"""benchmarks/suite_profile.py: the pytest plugin records each test's times and the
numba compiles it triggered, and the report reads them back (run in-process on a
two-test file)."""
import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]

INNER = '''
import subprocess, sys
from numba import njit

def test_compiles():
    @njit
    def twice(x):
        return 2 * x
    assert twice(3) == 6

def test_waits_for_a_subprocess():
    subprocess.run([sys.executable, "-c", "sum(range(10**6))"], check=True)
'''


def _plugin():
    spec = importlib.util.spec_from_file_location("suite_profile",
                                                  REPO / "benchmarks" / "suite_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_records_tests_and_compiles_and_reports_them(pytester, monkeypatch, tmp_path):
    plugin = _plugin()
    out = tmp_path / "profile"
    monkeypatch.setenv(plugin.OUT_ENV, str(out))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:cacheprovider",
                                          plugins=[plugin])
    result.assert_outcomes(passed=2)
    data = json.loads((out / "main.json").read_text())
    tests = {t[0].split("::")[-1]: t for t in data["tests"]}
    assert set(tests) == {"test_compiles", "test_waits_for_a_subprocess"}
    for _, start, end, own, kids in tests.values():
        assert 0 <= start <= end and own >= 0 and kids >= 0
    assert tests["test_waits_for_a_subprocess"][4] > 0   # the child's CPU is counted
    (compile_,) = [c for c in data["compiles"] if c[1].endswith("twice")]
    assert compile_[0].endswith("::test_compiles") and "int64" in compile_[2]
    assert compile_[3] > 0
    text = plugin.report(str(out))
    assert "main: 2 tests" in text and "test_inner.py" in text and "twice" in text
    # the listener is gone with the session: later compiles are not recorded
    assert "listener" not in plugin._state
