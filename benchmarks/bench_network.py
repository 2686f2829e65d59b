"""Whole networks through the public API: MLP.forward, MLP.backward (forward, loss and
backward, filling the gradients) and MLP.train_step (one compiled call: forward, loss,
backward and the SGD update), on every device (the "cuda" cases skip without a GPU).

Networks (tanh hidden layers, softmax cross-entropy), as in benchmarks/yardstick.py:
tiny 64-64-10 (batch 32), mnist 784-128-10 (batch 64), medium 784-512-512-10 (batch 128).
"""
import numpy as np

import fastbp

from .common import (DEVICES, DTYPES, Benchmark, cached, median_seconds, normal,
                     require_device, rng, synchronize)

NETWORKS = {
    # name: (sizes, batch)
    "tiny": ([64, 64, 10], 32),
    "mnist": ([784, 128, 10], 64),
    "medium": ([784, 512, 512, 10], 128),
}
LR = 1e-3


def product_flops(sizes, batch):
    """FLOPs of a training step's matrix products: per layer 2*batch*in*out each for
    S = X W^T, dW = dS^T X and dX = dS W, except the first layer's dX (not needed)."""
    per_layer = [2 * batch * i * o for i, o in zip(sizes[:-1], sizes[1:])]
    return 3 * sum(per_layer) - per_layer[0]


@cached
def _network(name, dtype, device):
    sizes, batch = NETWORKS[name]
    kwargs = {} if device == "cpu" else {"device": device}
    try:
        net = fastbp.MLP(sizes, activation="tanh", dtype=dtype, seed=0, **kwargs)
    except TypeError as exc:   # a commit whose MLP takes no device
        raise NotImplementedError(f"MLP(device={device!r}): {exc}") from None
    X = normal((batch, sizes[0]), dtype, seed=1)
    y = rng(2).integers(0, sizes[-1], batch).astype(np.int64)
    opt = fastbp.SGD(net, lr=LR)
    net.forward(X)            # compile (or load numba's cache), allocate workspaces
    net.backward(X, y)
    if hasattr(net, "train_step"):
        net.train_step(X, y, opt)
    synchronize(device)
    return net, X, y, opt


class _Network(Benchmark):
    params = [list(NETWORKS), DTYPES, DEVICES]
    param_names = ["network", "dtype", "device"]

    def setup(self, name, dtype, device):
        require_device(device)
        self.net, self.X, self.y, self.opt = _network(name, dtype, device)


class NetworkForward(_Network):
    def time_forward(self, name, dtype, device):
        self.net.forward(self.X)      # returns a host array: synchronous


class NetworkBackward(_Network):
    def time_backward(self, name, dtype, device):
        self.net.backward(self.X, self.y)   # returns the loss as a float: synchronous


class TrainStep(_Network):
    def setup(self, name, dtype, device):
        super().setup(name, dtype, device)
        if not hasattr(self.net, "train_step"):
            raise NotImplementedError("MLP.train_step does not exist on this commit")

    def time_train_step(self, name, dtype, device):
        # float(): on "cuda" train_step returns before the GPU is done (its loss is read
        # lazily); reading it waits, so a sample is a whole step on both devices
        float(self.net.train_step(self.X, self.y, self.opt))

    def peakmem_train_step(self, name, dtype, device):
        self.net.train_step(self.X, self.y, self.opt)

    def track_gflops(self, name, dtype, device):
        """Achieved GFLOP/s of the step's matrix products (the step's whole time
        counted, so overhead shows up as a lower rate)."""
        sizes, batch = NETWORKS[name]
        seconds = median_seconds(lambda: float(self.net.train_step(self.X, self.y, self.opt)))
        return 1e-9 * product_flops(sizes, batch) / seconds
    track_gflops.unit = "GFLOP/s"


class BackwardForwardRatio(_Network):
    """(time of forward+loss+backward - time of forward) / time of forward, as
    benchmarks/yardstick.py prints it; about 2 when the products dominate. On the CPU
    it times the compiled passes directly (kernels.cpu.network_forward and
    network_backward), so API input checks and the output copy do not blur it; on a
    GPU it times MLP.forward and MLP.backward."""

    def track_backward_forward_ratio(self, name, dtype, device):
        net, X, y = self.net, self.X, self.y
        if device == "cpu":
            from fastbp.kernels import cpu
            from fastbp.layout import Workspace
            lay = net.layout.compiled_args()
            acts, pres, dbuf = Workspace(net.layout, net.dtype).ensure(X.shape[0])
            no_targets = np.zeros((0, net.sizes[-1]), net.dtype)

            passes = cpu.network_passes(net.layout.act_codes)   # this network's kernels

            def forward():
                passes.network_forward(net.params, *lay, X, acts, pres)

            def forward_backward():
                passes.network_backward(net.params, net.grads, *lay, 0, X, y, no_targets,
                                        acts, pres, dbuf)
        else:
            def forward():
                net.forward(X)

            def forward_backward():
                net.backward(X, y)
        t_forward = median_seconds(forward)
        t_forward_backward = median_seconds(forward_backward)
        return (t_forward_backward - t_forward) / t_forward
    track_backward_forward_ratio.unit = "ratio"
