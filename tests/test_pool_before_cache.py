"""numba's thread pool is launched before the first direct kernel call.

numba (0.68 and earlier; numba issues #8578, #4807) relaunches its thread pool when it
loads a cached function that contains a parallel loop, but not when it loads a cached
serial function that only calls one. If such a function is a fresh process's first
compiled call, it jumps into the unlaunched scheduler: SIGSEGV, depending only on what
the on-disk cache holds (this killed tests/test_step_memory.py's subprocess, which
calls network_train_step directly, in a checkout whose cache had that entry).
``fastbp.concurrency.start_pool`` is what every entry point calls first; these tests
build that cache state with two tiny functions and show that start_pool is enough,
and that ``compare`` (which calls the kernels directly) calls it; then build it from
fastbp's own kernels and show that a direct call is safe without start_pool
(kernels/cpu/_jit.py, ``launch_pool_on_load``).
"""
import os
import subprocess
import sys
import textwrap

import pytest

import fastbp.compare
import fastbp.concurrency

MODULE = textwrap.dedent("""
    import numpy as np
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def inner(n):
        out = np.empty(n)
        for i in prange(n):
            out[i] = i * 0.5
        return out

    @njit(cache=True)
    def outer(n):
        return inner(n).sum()
""")


def _run(tmp_path, code):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=str(tmp_path))
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_start_pool_makes_a_cached_serial_caller_safe(tmp_path):
    (tmp_path / "nested.py").write_text(MODULE)
    # 1: inner compiled and cached; 2: outer compiled with inner loaded from the cache,
    # so outer's cache entry does not relaunch the pool (numba's bug).
    for code in ("import nested; nested.inner(10)", "import nested; nested.outer(10)"):
        result = _run(tmp_path, code)
        assert result.returncode == 0, result.stderr[-2000:]
    # 3: a fresh process whose first compiled call is outer, loaded from the cache.
    result = _run(tmp_path, "import fastbp.concurrency, nested\n"
                            "fastbp.concurrency.start_pool()\n"
                            "print(nested.outer(10))")
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert float(result.stdout.split()[-1]) == 22.5


def test_compare_starts_the_pool_before_any_kernel(monkeypatch):
    class Started(Exception):
        pass

    def start_pool():
        raise Started

    monkeypatch.setattr(fastbp.compare, "start_pool", start_pool)
    args = fastbp.compare.build_parser().parse_args(["--devices", "cpu", "--batch", "3"])
    with pytest.raises(Started):
        fastbp.compare.run(args, print_fn=lambda *a: None)


DIRECT_CALL = """
import numpy as np
from numba.core import caching
from fastbp.kernels import cpu
if {unhooked}:   # fastbp's launch on load taken away again (kernels/cpu/_jit.py)
    caching.IndexDataCacheFile.load = caching.IndexDataCacheFile.load.__wrapped__
g = np.full(40000, 0.5)
print(cpu.grad_norm(g) if {first} else cpu.clip_scale(g, 1.0))
"""


def test_kernels_called_directly_are_safe_whatever_the_cache_holds(tmp_path):
    """The same cache state built from fastbp's own kernels, called directly with no
    start_pool: clip_scale (serial) calls grad_norm, which calls the parallel
    _sum_squares_blocks. 1: grad_norm compiled and cached; 2: clip_scale compiled with
    its callees loaded from the cache; 3: a fresh process calling clip_scale first.
    kernels/cpu/_jit.py's ``launch_pool_on_load`` makes 3 safe; without it 3 dies."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def run(first=False, unhooked=False):
        return subprocess.run([sys.executable, "-c", DIRECT_CALL.format(
            first=first, unhooked=unhooked)], env=env, capture_output=True, text=True,
            timeout=300)

    for first in (True, False):
        result = run(first=first)
        assert result.returncode == 0, result.stderr[-2000:]
    result = run()
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    norm = 0.5 * 40000 ** 0.5
    assert abs(float(result.stdout) - 1.0 / (norm + 1e-6)) < 1e-12
    # the cache state is the dangerous one: without the launch on load, numba crashes
    # (when a numba release fixes issues #8578 / #4807 this stops failing, and
    # launch_pool_on_load can go)
    assert run(unhooked=True).returncode == -11
