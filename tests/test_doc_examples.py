"""The examples in docstrings run and give what they show (doctest)."""
import doctest
import importlib


def test_gradcheck_docstring_example():
    # the module, not fastbp.gradcheck (the package exports the function by that name)
    module = importlib.import_module("fastbp.gradcheck")
    result = doctest.testmod(module, verbose=False)
    assert result.attempted > 0 and result.failed == 0
