"""scikit-learn's own MLP tests, run against fastbp's estimators.

At collection time this module reads the *installed* scikit-learn's
``sklearn/neural_network/tests/test_mlp.py`` (nothing of it is stored in this
repository), replaces its one import of ``MLPClassifier, MLPRegressor`` by fastbp's, runs
the result as a module and takes its test functions, with their parametrizations, as
this module's own. So every test of that file runs here, with scikit-learn's assertions
and data, against ``fastbp.MLPClassifier`` and ``fastbp.MLPRegressor``.

``NOT_APPLICABLE`` lists the tests that reach into scikit-learn's private methods or
attributes; they are skipped, each with its reason. Everything else must pass.
"""
import sys
import types
from pathlib import Path

import pytest

sklearn = pytest.importorskip("sklearn")

SOURCE = Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
SKLEARN_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"
FASTBP_IMPORT = "from fastbp import MLPClassifier, MLPRegressor"

# test name -> why it cannot run against fastbp's classes.
NOT_APPLICABLE = {}


def _load():
    """The patched test module, or None when the installed file is missing or its import
    line is not the one expected (then test_source_found fails and says so)."""
    if not SOURCE.is_file():
        return None
    text = SOURCE.read_text(encoding="utf-8")
    if text.count(SKLEARN_IMPORT) != 1:
        return None
    module = types.ModuleType("sklearn_test_mlp_on_fastbp")
    module.__file__ = str(SOURCE)
    code = compile(text.replace(SKLEARN_IMPORT, FASTBP_IMPORT), str(SOURCE), "exec")
    sys.modules[module.__name__] = module
    exec(code, module.__dict__)
    return module


_module = _load()


def test_source_found():
    """The installed scikit-learn ships test_mlp.py with the expected import line."""
    assert SOURCE.is_file(), f"scikit-learn {sklearn.__version__} has no {SOURCE}"
    count = SOURCE.read_text(encoding="utf-8").count(SKLEARN_IMPORT)
    assert count == 1, f"{SOURCE}: expected the line {SKLEARN_IMPORT!r} once, found {count}"
    assert _module.MLPClassifier.__module__ == "fastbp.estimators"


@pytest.fixture
def global_random_seed():
    """scikit-learn's conftest gives 42 unless SKLEARN_TESTS_GLOBAL_RANDOM_SEED is set."""
    return 42


if _module is not None:
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and callable(_test):
            if _name in NOT_APPLICABLE:
                _test = pytest.mark.skip(
                    reason=f"not applicable: {NOT_APPLICABLE[_name]}")(_test)
            globals()[_name] = _test
