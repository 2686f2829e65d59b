"""Every CUDA kernel compiles for a real GPU, and the matrix products keep their
accumulators in registers: checks the simulator cannot make, since it runs kernels as
Python and types nothing (it passed a loss kernel that could not compile, and would pass
a product kernel whose accumulators sit in local memory).

Compiles to sm_90 PTX with numba-cuda's NVVM, in a subprocess with the simulator off
(benchmarks/cuda_resources.py --all --check --no-ptxas). No GPU needed, but numba-cuda
with its CUDA libraries is (pip install -e ".[cuda]"; .ci/run installs it); without
numba-cuda the test skips and says so.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None,
    reason='numba-cuda is not installed (pip install -e ".[cuda]" in fastbp\'s folder): '
           "the GPU compile check cannot run")
def test_every_cuda_kernel_compiles_and_products_stay_in_registers():
    import fastbp
    # the subprocess imports the fastbp this process imported, wherever it lives
    where = str(Path(fastbp.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (where, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cuda_resources.py"),
                           "--all", "--check", "--no-ptxas"],
                          capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    from fastbp.kernels import registry
    # every kernel of the registry got its row, in both dtypes
    for name in ([p.label for p in registry.products()]
                 + [c.label for c in registry.cuda_compiled()]):
        rows = [line for line in proc.stdout.splitlines() if f" {name} " in line + " "]
        assert {line.split()[0] for line in rows} >= {"float32", "float64"}, (name, out)


def test_the_compile_check_lists_every_kernel():
    """The compile check compiles what fastbp.kernels.registry lists, with argument
    types written there by hand; this fails when a kernel (or a factory of kernels) is
    added to kernels/cuda without being listed there."""
    import functools
    import importlib
    import pkgutil

    from fastbp import device as fdevice
    if not (fdevice.simulator_enabled() and fdevice.cuda_status()[0]):
        pytest.skip("inspects the simulator's kernel objects")
    from numba.cuda.simulator.kernel import FakeCUDAKernel

    import fastbp.kernels.cuda as kernels_cuda
    from fastbp.kernels import registry
    from fastbp.kernels.cuda import blas
    modules = [importlib.import_module(f"fastbp.kernels.cuda.{m.name}")
               for m in pkgutil.iter_modules(kernels_cuda.__path__)]
    # blas._kernel's products are listed below; _operand and _multiplier make the
    # device functions _kernel calls, not kernels
    products = (blas._kernel, blas._operand, blas._multiplier)
    factories = [v for mod in modules for v in vars(mod).values()
                 if isinstance(v, functools._lru_cache_wrapper)
                 and v.__module__ == mod.__name__ and v not in products]
    for factory in factories:   # cleared, so a listing must call each one afresh
        factory.cache_clear()
    listed = {id(c.kernel()) for c in registry.cuda_compiled()}
    kernels = [(mod.__name__, name, v) for mod in modules for name, v in vars(mod).items()
               if isinstance(v, FakeCUDAKernel) and not v._device
               and v.fn.__module__ == mod.__name__]
    assert kernels and factories
    missing = [f"{m}.{name}" for m, name, k in kernels if id(k) not in listed]
    missing += [f"{f.__module__}.{f.__name__}" for f in factories
                if f.cache_info().currsize == 0]
    assert not missing, ("add to fastbp.kernels.registry (a Kernel's cuda_jit, or "
                         f"LAUNCHED_ELSEWHERE): {missing}")
    # the products are compiled through blas._kernel by cuda_resources.resources(), for
    # every variant the registry lists
    assert {p.label for p in registry.products()} >= {"dW = dS.T@X", "dX = dS@W"}
