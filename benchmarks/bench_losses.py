"""Each loss's fused value-and-gradient pass (mean reduction, PyTorch's definitions),
through the dispatcher the compiled network passes call
(kernels.cpu.loss_forward_backward). Parameterised over kernels.codes.LOSSES.
"""
import numpy as np

from fastbp.kernels import codes
from fastbp.kernels import cpu

from .common import DTYPES, Benchmark, cached, normal, rng

# (batch, outputs): a classifier's logits (10 classes) and a wide regression output.
SHAPES = ["1024x10", "256x512"]


@cached
def _inputs(name, shape, dtype):
    code = codes.LOSS_CODES[name]
    batch, n = (int(v) for v in shape.split("x"))
    Z = normal((batch, n), dtype, seed=1, scale=3.0)
    dZ = normal((batch, n), dtype, seed=2)
    if code == codes.SOFTMAX_CROSS_ENTROPY:
        labels = rng(3).integers(0, n, batch).astype(np.int64)
        targets = np.zeros((0, n), dtype)
    else:
        labels = np.zeros(0, np.int64)
        targets = np.ascontiguousarray(rng(3).uniform(0.0, 1.0, (batch, n)), dtype=dtype)
    args = (code, Z, labels, targets, dZ)
    cpu.loss_forward_backward(*args)
    return args


class Loss(Benchmark):
    params = [list(codes.LOSSES), SHAPES, DTYPES]
    param_names = ["loss", "batch_x_outputs", "dtype"]

    def setup(self, name, shape, dtype):
        self.args = _inputs(name, shape, dtype)

    def time_loss_forward_backward(self, name, shape, dtype):
        cpu.loss_forward_backward(*self.args)
