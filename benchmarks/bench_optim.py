"""Optimizer updates: one fused pass over the flat parameter, gradient and state
buffers, through kernels.cpu.optimizer_update (the call the compiled training step
makes). Parameterised over every name in kernels.codes.OPTIMIZERS, so each optimizer is
benchmarked as soon as it has a code and a fastbp.Optimizer subclass; the state rows and
hyperparameters come from that class with its default settings.
"""
import inspect

from fastbp.kernels import codes
from fastbp.kernels import cpu

from .common import DTYPES, Benchmark, cached, normal

# Parameter counts: a small network's (~66 k) and a medium one's (~1 M).
N_PARAMS = [65_536, 1_048_576]
N_INPUTS = 1024


def _optimizer_class(code):
    """The fastbp.Optimizer subclass whose ``code`` is ``code``, or None."""
    import fastbp
    import fastbp.optim
    base = getattr(fastbp.optim, "Optimizer", None)
    for module in (fastbp, fastbp.optim):
        for obj in vars(module).values():
            if (inspect.isclass(obj) and base is not None and issubclass(obj, base)
                    and getattr(obj, "code", None) == code):
                return obj
    return None


@cached
def _update_args(name, n_params, dtype):
    import fastbp
    code = codes.OPTIMIZER_CODES[name]
    cls = _optimizer_class(code)
    if cls is None:
        return None
    # One layer of N_INPUTS inputs: n_params ~ width * (N_INPUTS + 1).
    width = max(2, n_params // (N_INPUTS + 1))
    net = fastbp.MLP([N_INPUTS, width], dtype=dtype, seed=0)
    net.grads[...] = normal(net.grads.shape, dtype, seed=1, scale=1e-3)
    opt = cls(net)   # the optimizer's default hyperparameters
    args = opt.compiled_args_for(net)
    cpu.optimizer_update(*args)
    return args


class OptimizerUpdate(Benchmark):
    params = [list(getattr(codes, "OPTIMIZERS", ("sgd",))), N_PARAMS, DTYPES]
    param_names = ["optimizer", "n_params", "dtype"]

    def setup(self, name, n_params, dtype):
        if name not in getattr(codes, "OPTIMIZER_CODES", {}):
            raise NotImplementedError(f"no optimizer {name!r} on this commit")
        self.args = _update_args(name, n_params, dtype)
        if self.args is None:
            raise NotImplementedError(f"no fastbp.Optimizer class for {name!r}")

    def time_optimizer_update(self, name, n_params, dtype):
        cpu.optimizer_update(*self.args)
