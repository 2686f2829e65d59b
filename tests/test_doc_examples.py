"""The examples in docstrings run and give what they show (doctest)."""
import doctest

import fastbp.gradcheck


def test_gradcheck_docstring_example():
    result = doctest.testmod(fastbp.gradcheck, verbose=False)
    assert result.attempted > 0 and result.failed == 0
