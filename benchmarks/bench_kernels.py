"""Every kernel of fastbp.kernels.registry, timed on each device: a kernel registered
there is timed here without editing this file (as llm.c's dev/cuda does, one list
feeds validation and timing).

A case is "<kernel> [<activation>] <batch>x<in>x<out>", for each size and activation
the registry gives the kernel (``bench_sizes``, ``activations``; benchmarks/README.md
lists them). Its first setup draws the registry's random inputs, runs the kernel once
(compiling, or loading numba's cache, and touching every buffer) and checks the result
against the float64 reference, so a kernel that computes a wrong answer fails its case
instead of being timed. ``track_gflops`` divides the registry's flop count of a call
(2*batch*in*out per matrix product, one per element for elementwise kernels) by the
median time. Kernels that update in place (sgd_update, bias_activation) keep updating
the same arrays while timed.
"""
from fastbp.kernels import codes

from .common import (DEVICES, DTYPES, Benchmark, cached, median_seconds, require_device,
                     rng, synchronize)

try:
    from fastbp.kernels import registry
except ImportError:   # a commit from before the registry: its cases are n/a
    registry = None

NO_REGISTRY = "(no kernel registry on this commit)"


def _name(kernel, activation, sizes):
    return " ".join([kernel.name] + ([activation] if activation else []) + [str(sizes)])


CASES = {_name(*case): case for case in (registry.bench_cases() if registry else [])}


@cached
def _prepared(case, dtype, device):
    """(call, flops): the case's kernel bound to its validated arrays on ``device``."""
    from fastbp.concurrency import start_pool
    start_pool()   # kernels called directly: concurrency.start_pool says why
    kernel, activation, sizes = CASES[case]
    code = codes.ACTIVATION_CODES[activation] if activation else codes.TANH
    problem = kernel.problem(rng(0), sizes, dtype, code)
    arrays = registry.device_arrays(problem, device, dtype)
    error = registry.max_error(problem, arrays, kernel.call(device, arrays, code))
    if not registry.passes(error, dtype):
        raise AssertionError(f"{case} {dtype} {device}: relative error {error:.2e} against "
                             f"the reference, above {registry.TOLERANCE[dtype]:g}")
    call = kernel.bound(device, arrays, code)

    def run():
        call()
        synchronize(device)
    return run, problem.flops


class Kernel(Benchmark):
    """One registered kernel's call on arrays it has already run on."""
    params = [list(CASES) or [NO_REGISTRY], DTYPES, DEVICES]
    param_names = ["kernel", "dtype", "device"]

    def setup(self, case, dtype, device):
        if case not in CASES:
            raise NotImplementedError(f"{case!r}: not a registered kernel on this commit")
        require_device(device)
        self.run, self.flops = _prepared(case, dtype, device)

    def time_kernel(self, case, dtype, device):
        self.run()

    def track_gflops(self, case, dtype, device):
        return self.flops / median_seconds(self.run) / 1e9
    track_gflops.unit = "GFLOP/s"
