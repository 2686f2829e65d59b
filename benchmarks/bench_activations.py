"""Each activation's elementwise passes: activation_forward (A = sigma(S)) and the
fused activation_backward (dS = dA * sigma'(S) in one pass, sigma' from A where the
function allows it). Parameterised over every name in kernels.codes.ACTIVATIONS, so a
new activation is benchmarked as soon as it has a code.
"""
from fastbp.kernels import codes
from fastbp.kernels import cpu

from .common import DTYPES, Benchmark, cached, normal

# (batch, width): one hidden layer's output of a medium network.
SHAPES = ["256x512"]


@cached
def _arrays(name, shape, dtype):
    code = codes.ACTIVATION_CODES[name]
    batch, n = (int(v) for v in shape.split("x"))
    S = normal((batch, n), dtype, seed=1, scale=2.0)
    A = normal((batch, n), dtype, seed=2)
    dA = normal((batch, n), dtype, seed=3)
    dS = normal((batch, n), dtype, seed=4)
    cpu.activation_forward(S, A, code, codes.DEFAULT_LEAKY_RELU_SLOPE)
    cpu.activation_backward(dA, A, S, dS, code, codes.DEFAULT_LEAKY_RELU_SLOPE)
    return code, S, A, dA, dS


class ActivationForward(Benchmark):
    params = [list(codes.ACTIVATIONS), SHAPES, DTYPES]
    param_names = ["activation", "batch_x_width", "dtype"]

    def setup(self, name, shape, dtype):
        self.code, self.S, self.A, _, _ = _arrays(name, shape, dtype)

    def time_activation_forward(self, name, shape, dtype):
        cpu.activation_forward(self.S, self.A, self.code, codes.DEFAULT_LEAKY_RELU_SLOPE)


class ActivationBackward(Benchmark):
    params = [list(codes.ACTIVATIONS), SHAPES, DTYPES]
    param_names = ["activation", "batch_x_width", "dtype"]

    def setup(self, name, shape, dtype):
        self.code, self.S, self.A, self.dA, self.dS = _arrays(name, shape, dtype)

    def time_activation_backward(self, name, shape, dtype):
        cpu.activation_backward(self.dA, self.A, self.S, self.dS, self.code,
                                codes.DEFAULT_LEAKY_RELU_SLOPE)
