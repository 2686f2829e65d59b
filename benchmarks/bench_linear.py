"""The fused linear layer: linear_forward (S = X W^T + b, A = sigma(S)) and
linear_backward (dS = dA sigma'(S), dW = dS^T X, db = sum dS, dX = dS W).

Times are per call; track_gflops reports the achieved GFLOP/s of the matrix products
alone (2*batch*in*out per product: one forward, two backward), so it can be read
against the machine's BLAS (numpy's own float32 matrix product reached 92-131 GFLOP/s
on this project's 2-core Zen 3 machines, 1024^3, two threads).
"""
from fastbp.kernels import codes
from fastbp.kernels import cpu

from .common import (DEVICES, DTYPES, Benchmark, cached, median_seconds, normal,
                     require_device, synchronize)

# (batch, in, out): an MNIST hidden layer, a square medium layer, a wide one.
SHAPES = ["64x784x128", "128x512x512", "256x1024x1024"]

TANH = codes.ACTIVATION_CODES["tanh"]


def _shape(shape):
    batch, n_in, n_out = (int(v) for v in shape.split("x"))
    return batch, n_in, n_out


@cached
def _layer(shape, dtype, device):
    batch, n_in, n_out = _shape(shape)
    X = normal((batch, n_in), dtype, seed=1)
    W = normal((n_out, n_in), dtype, seed=2, scale=n_in ** -0.5)
    b = normal((n_out,), dtype, seed=3)
    S = normal((batch, n_out), dtype, seed=4)
    A = normal((batch, n_out), dtype, seed=5)
    dA = normal((batch, n_out), dtype, seed=6)
    dS = normal((batch, n_out), dtype, seed=7)
    dX = normal((batch, n_in), dtype, seed=8)
    dW = normal((n_out, n_in), dtype, seed=9)
    db = normal((n_out,), dtype, seed=10)
    layer = dict(X=X, W=W, b=b, S=S, A=A, dA=dA, dS=dS, dX=dX, dW=dW, db=db)
    layer["kernels"] = cpu
    if device == "cuda":   # the numba.cuda twins take device arrays, same signature
        from numba import cuda

        from fastbp.kernels import cuda as cuda_kernels
        layer = {k: cuda.to_device(v) for k, v in layer.items() if k != "kernels"}
        layer["kernels"] = cuda_kernels
    layer["device"] = device
    forward(layer)    # compile (or load numba's cache) and touch every buffer
    backward(layer)
    return layer


def forward(l):
    l["kernels"].linear_forward(l["X"], l["W"], l["b"], TANH, 0.01, l["S"], l["A"])
    synchronize(l["device"])


def backward(l):
    l["kernels"].linear_backward(l["dA"], l["A"], l["S"], l["X"], l["W"], TANH, 0.01,
                                 l["dS"], l["dX"], l["dW"], l["db"], True)
    synchronize(l["device"])


class LinearForward(Benchmark):
    """linear_forward with tanh: one product plus the fused bias/activation pass."""
    params = [SHAPES, DTYPES, DEVICES]
    param_names = ["batch_x_in_x_out", "dtype", "device"]

    def setup(self, shape, dtype, device):
        require_device(device)
        self.layer = _layer(shape, dtype, device)

    def time_linear_forward(self, shape, dtype, device):
        forward(self.layer)

    def track_gflops(self, shape, dtype, device):
        batch, n_in, n_out = _shape(shape)
        return 2e-9 * batch * n_in * n_out / median_seconds(lambda: forward(self.layer))
    track_gflops.unit = "GFLOP/s"


class LinearBackward(Benchmark):
    """linear_backward with tanh: the fused sigma'/bias-gradient pass and two
    products (dW and dX)."""
    params = [SHAPES, DTYPES, DEVICES]
    param_names = ["batch_x_in_x_out", "dtype", "device"]

    def setup(self, shape, dtype, device):
        require_device(device)
        self.layer = _layer(shape, dtype, device)

    def time_linear_backward(self, shape, dtype, device):
        backward(self.layer)

    def track_gflops(self, shape, dtype, device):
        batch, n_in, n_out = _shape(shape)
        return 4e-9 * batch * n_in * n_out / median_seconds(lambda: backward(self.layer))
    track_gflops.unit = "GFLOP/s"
