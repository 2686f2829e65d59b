"""LLVM optimises a compiled callee twice at most, not once per caller above it
(kernels/cpu/_optimise_once.py).

A chain of four compiled functions, each calling the one below, stands in for fastbp's
kernels (the scope and the size threshold are lowered for it): the loop at the bottom
is optimised in its own library and again in its caller's, then only compiled to
machine code in the two above; the results are the bits numba's own pipeline gives.
"""
import math
import os
import re
import subprocess
import sys

import llvmlite.binding
import numba
import numpy as np
import pytest
from numba import njit
from numba.core import codegen

from fastbp.kernels.cpu import _optimise_once as once

MARK = "chainmarker"   # in the mangled name of every function of the chain


def _chain():
    """Fresh dispatchers (nothing cached): top2 -> top -> mid -> leaf, each compiled
    on its own (numba's default inline="never") and linked into its caller.

    The test needs the leaf to stay a call in mid, and whether LLVM inlines it there
    is LLVM's cost model, which depends on the CPU it tunes for: a one-loop leaf stayed
    a call for znver4 but was inlined and dropped for rocketlake (the 2026-12-02 Intel
    Xeon machines), and three loops still were for znver1, znver2, btver2 and the
    generic tuning (NUMBA_CPU_NAME=""). With four loops it stays a call for every CPU
    name tried: those, rocketlake, znver3, znver4, haswell, skylake-avx512,
    icelake-server, sapphirerapids, alderlake and generic. The test says so when it
    is inlined anyway."""
    @njit(fastmath={"contract"}, error_model="numpy")
    def chainmarker_leaf(x, out):
        for i in range(x.shape[0]):
            out[i] = x[i] * 1.5 + math.exp(-x[i] * x[i]) * 0.25 - x[i] * x[i] * 0.125
        for i in range(x.shape[0]):
            out[i] += math.tanh(x[i]) * 0.5 + math.log1p(x[i] * x[i]) * 0.0625
        for i in range(1, x.shape[0]):
            out[i] += math.sqrt(abs(x[i - 1])) * 0.03125
        for i in range(x.shape[0]):
            out[i] += math.atan(x[i]) * 0.125 + math.cos(x[i]) * 0.0625

    @njit(fastmath={"contract"}, error_model="numpy")
    def chainmarker_mid(x, out):
        chainmarker_leaf(x, out)
        return out.sum()

    @njit(fastmath={"contract"}, error_model="numpy")
    def chainmarker_top(x, out):
        return chainmarker_mid(x, out) * 2.0

    @njit(fastmath={"contract"}, error_model="numpy")
    def chainmarker_top2(x, out):
        return chainmarker_top(x, out) + 1.0

    return chainmarker_leaf, chainmarker_mid, chainmarker_top, chainmarker_top2


def _marked(ir, name):
    """Whether the definition of chain function ``name`` in the LLVM IR ``ir`` was
    marked noinline while its module was optimised; None when ``ir`` has none (LLVM
    inlined it everywhere and dropped it)."""
    mangled = f"{len(name)}{name}B"   # numba: length, name, then its ABI tag
    defines = [line for line in ir.splitlines() if line.startswith("define")
               and mangled in line and "@_ZN7cpython" not in line and "@cfunc." not in line]
    if not defines:
        return None
    (define,) = defines
    group = define.rsplit("#", 1)[1].split()[0] if "#" in define else None
    attributes = [line for line in ir.splitlines()
                  if group is not None and line.startswith(f"attributes #{group} ")]
    return any("noinline" in line for line in attributes)


@pytest.fixture
def chain_in_scope(monkeypatch):
    monkeypatch.setattr(once, "_FASTBP", MARK)
    monkeypatch.setattr(once, "MIN_INSTRUCTIONS", 5)


def test_installed_wherever_numba_has_what_it_wraps():
    wrapped = getattr(codegen.CPUCodeLibrary._optimize_final_module, "_fastbp_once", False)
    assert wrapped and once.installed
    # idempotent: installing again keeps the one wrapper
    before = codegen.CPUCodeLibrary._optimize_final_module
    assert once.install(codegen)
    assert codegen.CPUCodeLibrary._optimize_final_module is before


def test_a_module_without_the_method_is_left_alone():
    class Bare:
        class CPUCodeLibrary:
            pass
    assert not once.install(Bare)


def test_a_callee_linked_twice_is_compiled_not_optimised_again(chain_in_scope, rng):
    leaf, mid, top, top2 = _chain()
    x = rng.standard_normal(1000)
    result = top2(x, np.empty_like(x))
    irs = {f.__name__: f.inspect_llvm(f.signatures[0]) for f in (leaf, mid, top, top2)}
    for ir in irs.values():
        assert "optnone" not in ir   # machine code at full optimisation everywhere

    # the leaf: optimised in its own library and in mid's, then only compiled
    assert _marked(irs["chainmarker_mid"], "chainmarker_leaf") is not None, (
        "LLVM inlined the test's leaf into mid for this CPU "
        f"({numba.config.CPU_NAME or llvmlite.binding.get_host_cpu_name()}), so there "
        "is nothing to check: "
        "make _chain's leaf larger")
    assert _marked(irs["chainmarker_mid"], "chainmarker_leaf") is False
    assert _marked(irs["chainmarker_top"], "chainmarker_leaf") is True
    assert _marked(irs["chainmarker_top2"], "chainmarker_leaf") is True
    assert _marked(irs["chainmarker_top2"], "chainmarker_top") in (False, None)

    # the same bits as numba's own pipeline, run at every level
    wrapper = codegen.CPUCodeLibrary._optimize_final_module
    try:
        codegen.CPUCodeLibrary._optimize_final_module = wrapper.__wrapped__
        *_, plain_top2 = _chain()
        plain = plain_top2(x, np.empty_like(x))
    finally:
        codegen.CPUCodeLibrary._optimize_final_module = wrapper
    assert np.float64(result).tobytes() == np.float64(plain).tobytes()
    leaf_out = (x * 1.5 + np.exp(-x * x) * 0.25 - x * x * 0.125
                + np.tanh(x) * 0.5 + np.log1p(x * x) * 0.0625)
    leaf_out[1:] += np.sqrt(np.abs(x[:-1])) * 0.03125
    leaf_out += np.arctan(x) * 0.125 + np.cos(x) * 0.0625
    assert result == pytest.approx(2.0 * leaf_out.sum() + 1.0, rel=1e-12)


def test_only_fastbps_libraries_are_changed(chain_in_scope, rng, monkeypatch):
    """What the top of the chain skips in fastbp's scope, and nothing outside it."""
    *_, top2 = _chain()
    x = rng.standard_normal(100)
    top2(x, np.empty_like(x))
    library = top2.overloads[top2.signatures[0]].library
    assert once._linked_to_skip(library)
    monkeypatch.setattr(once, "_FASTBP", "6fastbp7kernels")
    assert once._linked_to_skip(library) == []


def test_optnone_it_cannot_take_off_again_is_an_error(chain_in_scope, monkeypatch, rng):
    """Never -O0 machine code in silence: if the module's text does not show the
    optnone it marked (a new LLVM's printing), compiling raises and names the way out."""
    monkeypatch.setattr(once, "_OPTNONE", re.compile(r"(x)(?!x)x"))   # matches nothing
    *_, top2 = _chain()
    x = rng.standard_normal(10)
    with pytest.raises(RuntimeError, match=once.AGAIN_ENV):
        top2(x, np.empty_like(x))


def test_the_variable_restores_numbas_pipeline():
    code = ("from numba.core import codegen; import fastbp.kernels.cpu; "
            "from fastbp.kernels.cpu import _optimise_once as once; "
            "print(once.installed, hasattr(codegen.CPUCodeLibrary._optimize_final_module,"
            " '_fastbp_once'))")
    for value, expected in (("1", "False False"), ("0", "True True")):
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, **{once.AGAIN_ENV: value}), timeout=300)
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == expected.split()
