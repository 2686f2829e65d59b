"""numba builds an inlined function's IR once, not again at every call site
(kernels/cpu/_inline_once.py).

The helpers here stand in for fastbp's (the scope is this module for the tests): each
is inlined at several call sites in several callers, and the untyped pipeline's runs
over it are counted.
"""
import os
import subprocess
import sys
import types

import pytest
from numba import njit
from numba.core.inline_closurecall import InlineWorker

from fastbp.kernels.cpu import _inline_once as once

# where the user asked for numba's own inliner, there is nothing of fastbp's to see
needs_it = pytest.mark.skipif(once.asked_not_to(once.AGAIN_ENV),
                              reason=f"{once.AGAIN_ENV}=1: numba's own inliner runs")


@pytest.fixture
def built(monkeypatch):
    """{python function name: how many times the untyped pipeline built its IR}, for
    the functions of this module; and this module in the kept IR's scope (its entries
    forgotten afterwards)."""
    monkeypatch.setattr(once, "_SCOPE", __name__)
    counts = {}
    run = InlineWorker.run_untyped_passes

    def counted(self, func, *args, **kwargs):
        if func.__module__ == __name__:
            counts[func.__name__] = counts.get(func.__name__, 0) + 1
        return run(self, func, *args, **kwargs)
    monkeypatch.setattr(InlineWorker, "run_untyped_passes", counted)
    yield counts
    once.clear()


def _helper_and_callers():
    """Fresh dispatchers: a helper inlined twice into one caller and once into another,
    itself calling an inlined helper."""
    @njit(inline="always")
    def inner(x):
        return x * x

    @njit(inline="always")
    def helper(x):
        return inner(x) * 2.0 + 1.0

    @njit
    def caller_a(x):
        return helper(x) + helper(x * 3.0)

    @njit
    def caller_b(x):
        return helper(x) - 1.0

    return caller_a, caller_b


@needs_it
def test_installed_wherever_numba_has_what_it_wraps():
    njit(lambda x: x + 1)(1)   # the first inlining pass installs it
    assert getattr(InlineWorker.inline_function, "_fastbp_once", False) and once.installed
    before = InlineWorker.inline_function
    assert once.install(InlineWorker)   # idempotent: the one wrapper stays
    assert InlineWorker.inline_function is before


def test_a_class_without_numbas_method_is_left_alone():
    class Bare:   # an inline_function that is not numba 0.68's
        def inline_function(self, *args):
            pass
    assert not once.install(Bare)
    assert not hasattr(Bare.inline_function, "_fastbp_once")
    assert not once.install_at_first_inlining(types.SimpleNamespace())


@needs_it
def test_an_inlined_function_is_built_once_for_every_call_site(built):
    caller_a, caller_b = _helper_and_callers()
    assert caller_a(1.5) == (1.5 ** 2 * 2 + 1) + (4.5 ** 2 * 2 + 1)
    assert caller_b(1.5) == 1.5 ** 2 * 2
    # three call sites of helper, each with inner inlined: built once each
    assert built == {"helper": 1, "inner": 1}


@needs_it
def test_two_call_sites_in_one_caller_keep_their_variables_apart(built):
    """Each call site's copy of the kept IR is named anew (numba names the inlined
    variables after it): with one name for both copies of this loop, numba's parfor
    pass refused to compile ``both`` ("Overwrite of parallel loop index")."""
    import numpy as np
    from numba import prange

    @njit(inline="always")
    def row_sum(x, i):
        total = 0.0
        for j in range(x.shape[1]):
            total += x[i, j]
        return total

    @njit(parallel=True)
    def both(x, out):
        for i in prange(x.shape[0]):
            out[i] = row_sum(x, i) - 2.0 * row_sum(x, i)

    x = np.arange(12.0).reshape(3, 4)
    out = np.empty(3)
    both(x, out)
    assert out.tolist() == (-x.sum(axis=1)).tolist()
    assert built == {"row_sum": 1}


@needs_it
def test_outside_the_scope_numba_builds_it_at_every_call_site(built, monkeypatch):
    monkeypatch.setattr(once, "_SCOPE", "fastbp.")
    caller_a, caller_b = _helper_and_callers()
    assert caller_a(1.5) == (1.5 ** 2 * 2 + 1) + (4.5 ** 2 * 2 + 1)
    assert caller_b(1.5) == 1.5 ** 2 * 2
    # helper's three call sites, and inner inlined into helper each time helper is built
    assert built == {"helper": 3, "inner": 3}


@needs_it
def test_a_rebound_global_or_cell_builds_it_again(built):
    """numba reads globals and closure cells when it builds the IR: a helper whose
    global name or cell now holds another object is built again, as numba would."""
    def scaled(x):
        return x * SCALE   # noqa: F821 (a global of the copy below)

    names = {"SCALE": 2.0, "__name__": __name__}
    by_global = njit(inline="always")(
        types.FunctionType(scaled.__code__, names, "by_global"))

    def cell(value):
        @njit(inline="always")
        def by_cell(x):
            return x * value
        return by_cell

    def caller_of(helper):
        @njit
        def caller(x):
            return helper(x)
        return caller

    assert caller_of(by_global)(3.0) == 6.0
    assert caller_of(by_global)(3.0) == 6.0   # the same global: the kept IR
    names["SCALE"] = 5.0
    assert caller_of(by_global)(3.0) == 15.0
    assert built["by_global"] == 2

    by_cell = cell(2.0)
    assert caller_of(by_cell)(3.0) == 6.0
    by_cell.py_func.__closure__[0].cell_contents = 7.0
    assert caller_of(by_cell)(3.0) == 21.0
    assert built["by_cell"] == 2


@needs_it
def test_a_helper_rebound_below_or_through_a_module_builds_it_again(built):
    """The kept IR has its inline callees in it: a callee two levels down rebound, or
    one reached as ``module.name``, gives the functions above it a new build."""
    lib = types.ModuleType("inlinemarker_lib")

    @njit(inline="always")
    def leaf_two(x):
        return x * 2.0

    @njit(inline="always")
    def leaf_three(x):
        return x * 3.0

    lib.leaf = leaf_two
    names = {"inline_lib": lib, "__name__": __name__}

    def through_module(x):
        return inline_lib.leaf(x) + 1.0   # noqa: F821 (a global of the copy below)

    middle = njit(inline="always")(
        types.FunctionType(through_module.__code__, names, "middle"))

    @njit(inline="always")
    def top(x):
        return middle(x)

    def caller():
        @njit
        def call(x):
            return top(x)
        return call

    assert caller()(5.0) == 11.0
    assert caller()(5.0) == 11.0   # nothing rebound: the kept IR of top
    assert built == {"top": 1, "middle": 1, "leaf_two": 1}
    lib.leaf = leaf_three          # reached through the module, below top
    assert caller()(5.0) == 16.0
    assert built == {"top": 2, "middle": 2, "leaf_two": 1, "leaf_three": 1}


def test_the_variable_restores_numbas_inliner():
    """Installed at the first inlining pass, not at import: numba's inliner imports
    its array overloads, which tests/test_cuda_install.py's numpy-2.5 process must not
    import before fastbp.device restores numpy.row_stack."""
    code = ("import sys; from numba import njit; import fastbp.kernels.cpu; "
            "from fastbp.kernels.cpu import _inline_once as once; "
            "print(once.installed, 'numba.np.arrayobj' in sys.modules); "
            "njit(lambda x: x + 1)(1); "
            "from numba.core.inline_closurecall import InlineWorker; "
            "print(once.installed, hasattr(InlineWorker.inline_function, '_fastbp_once'))")
    for value, expected in (("1", "False False False False"),
                            ("0", "False False True True")):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, **{once.AGAIN_ENV: value}), timeout=300)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == expected.split()
