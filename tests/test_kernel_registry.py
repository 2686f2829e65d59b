"""Every kernel of fastbp.kernels.registry against its float64 reference, on the CPU and
as its CUDA twin (numba's CUDA simulator here, unchanged on a real GPU), in both dtypes,
on the registry's tiny ragged sizes and with each activation it lists; and the registry
against the kernel packages: each public kernel of kernels.cpu and kernels.cuda is
registered, or named in NOT_STANDALONE with the reason it is not.

A kernel registered in the registry is checked here without editing this file. The
CPU calls have the argument types the rest of the suite compiles (C-contiguous arrays,
int64 codes, float slopes), so this file compiles no kernel variant of its own.
"""
import ast
import zlib
from pathlib import Path

import numpy as np
import pytest

import fastbp.kernels
from fastbp import device as fdevice
from fastbp.concurrency import start_pool
from fastbp.kernels import registry

usable, why = fdevice.cuda_status()
start_pool()   # kernels called directly: concurrency.start_pool says why
DTYPES = ["float32", "float64"]


def public_names(package):
    """``__all__`` of kernels/<package>/__init__.py, read from the source: no import
    of numba.cuda needed to know what kernels.cuda exports."""
    path = Path(fastbp.kernels.__path__[0]) / package / "__init__.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no __all__")


def test_every_public_kernel_is_registered_or_excused():
    public = public_names("cpu") | public_names("cuda")
    registered, excused = set(registry.BY_NAME), set(registry.NOT_STANDALONE)
    missing = sorted(public - registered - excused)
    assert not missing, ("register these in fastbp.kernels.registry.KERNELS, or name them "
                         f"in NOT_STANDALONE with the reason: {missing}")
    assert not registered & excused, registered & excused
    assert not excused - public, f"NOT_STANDALONE names no public kernel: {excused - public}"
    assert all(reason.strip() for reason in registry.NOT_STANDALONE.values())
    for kernel in registry.KERNELS:   # the CPU kernel is where the registry says
        assert callable(kernel.function("cpu")), kernel.name


@pytest.mark.parametrize("device", registry.DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(registry.BY_NAME))
def test_kernel_matches_reference(name, dtype, device):
    if device == "cuda" and not usable:
        pytest.skip(f"CUDA not usable: {why}")
    kernel = registry.BY_NAME[name]
    rng = np.random.default_rng(zlib.crc32(f"{name} {dtype}".encode()))
    for sizes in registry.TEST_SIZES:
        for code in kernel.activation_codes():
            problem = kernel.problem(rng, sizes, dtype, code)
            arrays = registry.device_arrays(problem, device, dtype)
            value = kernel.call(device, arrays, code)
            error = registry.max_error(problem, arrays, value)
            assert registry.passes(error, dtype), \
                f"{name} {device} {dtype} sizes {sizes} activation {code}: error {error:.3e}"


@pytest.mark.parametrize("name", list(registry.BY_NAME))
def test_the_check_catches_a_wrong_result(name):
    """Each checked result of each kernel, off by 1% of its scale in one element, fails
    the check: the comparison looks at every output."""
    kernel = registry.BY_NAME[name]
    problem = kernel.problem(np.random.default_rng(0), registry.TEST_SIZES[0], "float64")
    arrays = registry.device_arrays(problem, "cpu", "float64")
    value = kernel.call("cpu", arrays)
    assert registry.passes(registry.max_error(problem, arrays, value), "float64")
    for k in problem.want:
        if k == "value":
            wrong_value = value * 1.01
            assert not registry.passes(registry.max_error(problem, arrays, wrong_value),
                                       "float64"), (name, k)
            continue
        a = arrays[k]
        saved = a.flat[-1]
        a.flat[-1] += 0.01 * np.abs(problem.want[k]).max()
        assert not registry.passes(registry.max_error(problem, arrays, value), "float64"), \
            (name, k)
        a.flat[-1] = saved


def test_the_registry_imports_no_cuda():
    """Importing the registry, listing its kernels and looking up a CPU kernel load
    neither numba.cuda nor kernels.cuda: compare, asv and the CPU tests use it without
    a GPU stack (a fresh process, since this one may have loaded them already)."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from fastbp.kernels import registry as r\n"
            "r.cuda_compiled(); r.products(); r.bench_cases()\n"
            "r.KERNELS[0].function('cpu')\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m.startswith(('numba.cuda', 'fastbp.kernels.cuda'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
