"""Compiling a network's CPU kernels before they are first needed, and saying so.

numba compiles a kernel the first time it is called with new argument types and keeps
the machine code in its on-disk cache, so only the first run on a machine (or after
fastbp's kernel sources change) pays for compilation: tens of seconds on a 2-core
machine. ``warmup(net, optimizer)`` compiles, or loads from the cache, every pass that
training and prediction run (``PASSES``), before any training clock starts: ``fit`` and
``python -m fastbp train`` call it, so the progress bar, the per-epoch times and the
final "s training" count training only. When something has to be compiled it first
prints one line on stderr (also when stderr is not a terminal):

    compiling fastbp's kernels for this machine, once; about 25 s

``python -m fastbp warmup`` does the same ahead of time for the command line's networks.

On device="cuda" the same call compiles (or loads from numba-cuda's cache) the CUDA
kernels the network's steps launch, without launching any (fastbp.cuda_plan.prepare),
with its own notice; ``MLP(..., device="cuda")`` and ``net.to("cuda")`` do so for the
passes, and ``fit`` for its optimizer's update too.
"""
import contextlib
import sys
import time

import numpy as np
from numba import typeof
from numba.core import event

from .concurrency import start_pool
from .layout import Workspace

# Seconds a cold compile takes on this project's 2-core machine, quiet
# (benchmarks/compile_time.py; the table is in benchmarks/README.md, "Compile time");
# only used for the estimate. Every pass of a network calls the same shared passes
# (forward, loss, backward: kernels/cpu/network.py), which the first pass compiled in a
# process compiles for the network's dtype and activations (COLD_S); each later pass
# adds its own part (ESTIMATE_S). train_step alone: 27-29 s, measured 2026-11-30 (Xeon,
# quiet); later that day the default train's first epoch line came at 38.6-40.3 s cold
# (the same machine gave the earlier commit 35.8 s then), so train_step counts 34 s.
PASSES = ("train_step", "loss", "forward")
# a pass compiled first (the shared passes it calls included), per pass
COLD_S = {"train_step": 34.0, "train_epoch": 30.0, "backward": 27.0, "loss": 5.0,
          "forward": 4.0, "update": 6.0, "layer_backward": 20.0, "layer_input_grad": 8.0,
          "batch_check": 1.0}
# ... and once the shared passes are there
ESTIMATE_S = {"train_step": 6.0, "loss": 2.0, "forward": 1.0, "backward": 4.0,
              "train_epoch": 6.0,
              # a distributed step: backward, the all-reduce, then the update alone
              "update": 3.0,
              # backward layer by layer (fastbp.overlap)
              "layer_backward": 5.0, "layer_input_grad": 3.0,
              "batch_check": 1.0}   # MLP.train_step's check of a ready batch's values
_NEEDS_OPTIMIZER = ("train_step", "train_epoch", "update")

MESSAGE = ("compiling fastbp's kernels for this machine ({}); about {:.0f} s, kept in "
           "numba's cache for later runs")
# numba-cuda: 0.5-1.8 s per kernel on an H200 host, about ten kernels per network
CUDA_ESTIMATE_S = 12.0
CUDA_MESSAGE = ("compiling fastbp's CUDA kernels for this GPU; about {:.0f} s, kept in "
                "numba-cuda's cache for later runs")


def _pass_call(net, optimizer, name):
    """(dispatcher, args) of pass ``name`` as the network calls it, on a one-row
    batch in fresh workspaces: the same argument types as a real call, so compiling
    for them is compiling what the real call runs."""
    passes = net._kernels
    X = np.zeros((1, net.sizes[0]), net.dtype)
    if net.is_classifier:
        labels, targets = np.zeros(1, np.int64), net._no_targets
    else:
        labels, targets = net._no_labels, np.zeros((1, net.sizes[-1]), net.dtype)
    acts, pres, dbuf = Workspace(net.layout, net.dtype).ensure(1)
    layout = net.layout.compiled_args()
    if optimizer is not None:   # stand-ins of the types its update takes (its state may
        opt = (optimizer.code, np.zeros((1, 1), net.dtype),   # still be on a GPU)
               np.zeros(1, np.float64), optimizer.steps + 1)
    if name == "forward":
        return passes.network_forward, (net.params, *layout, X, acts, pres)
    if name == "loss":
        return passes.network_loss, (net.params, *layout, net._loss_code, X, labels,
                                     targets, acts, pres, dbuf)
    if name == "backward":
        return passes.network_backward, (net.params, net.grads, *layout, net._loss_code,
                                         X, labels, targets, acts, pres, dbuf)
    if name == "layer_backward":   # kernels.cpu.linear.linear_backward, any layer alike
        from .kernels.cpu.linear import linear_backward
        dA = dbuf[:net.sizes[1]].reshape(1, -1)
        return linear_backward, (dA, dA, dA, X, net.layers[0].W, net.layout.act_codes[0],
                                 net.layout.slopes[0], dA, X, net.layers[0].dW,
                                 net.layers[0].db, True)
    if name == "layer_input_grad":   # kernels.cpu.linear.input_grad_for: a layer's dX
        from .kernels.cpu.linear import input_grad_for
        dA = dbuf[:net.sizes[1]].reshape(1, -1)
        return input_grad_for, (dA, net.layers[0].W, X, 1)
    if name == "train_step":
        return passes.network_train_step, (
            net.params, net.grads, *layout, net._loss_code, X, labels, targets, acts,
            pres, dbuf, *opt)
    if name == "batch_check":   # MLP.train_step's value check of a ready batch
        from .kernels.cpu.checks import batch_values_ok
        return batch_values_ok, (X, labels, int(net.sizes[-1]), targets,
                                 net.loss == "bce_with_logits")
    if name == "update":
        from .kernels.cpu.optim import optimizer_update
        return optimizer_update, (opt[0], net.params, net.grads, *opt[1:])
    if name == "train_epoch":
        return passes.network_train_epoch, (
            net.params, net.grads, *layout, net._loss_code, X, labels, targets, 1, acts,
            pres, dbuf, *opt, np.empty(1, np.float64))
    raise ValueError(f"passes: unknown pass {name!r}; expected some of "
                     f"{', '.join(ESTIMATE_S)}")


class _Announcer(event.Listener):
    """Prints ``text`` once, when numba starts compiling (not when it loads from its
    cache)."""

    def __init__(self, text, stream):
        self.text, self.stream, self.said = text, stream, False

    def on_start(self, ev):
        if not self.said:
            self.said = True
            print(self.text, file=self.stream or sys.stderr, flush=True)

    def on_end(self, ev):
        pass


@contextlib.contextmanager
def announced(what, seconds, stream=None):
    """Within the block, print the one-line notice (MESSAGE, naming ``what``, with an
    estimate of ``seconds``) on ``stream`` (default sys.stderr) before numba starts
    compiling anything, if it does: for compiled work outside ``warmup``'s passes
    (the scikit-learn estimators' epoch)."""
    with event.install_listener("numba:compile",
                                _Announcer(MESSAGE.format(what, seconds), stream)):
        yield


def tree_ready(net):
    """True when this process has compiled (or loaded) the shared passes for ``net``'s
    activation set and dtype (kernels/cpu/network.py's ``forward_for``, which every
    pass calls, holds a version for them)."""
    from .kernels.cpu.network import forward_for
    if getattr(net, "device", "cpu") != "cpu":
        return False
    act_set, params = net._kernels.act_set, typeof(net.params)
    return any(len(sig) > 1 and getattr(sig[0], "literal_value", None) == act_set
               and sig[1] == params for sig in forward_for.overloads)


def _warmup_cuda(net, optimizer, device_inputs, stream):
    """warmup for a network on "cuda": every CUDA kernel of its passes (and with an
    optimizer, of its training step) compiled or loaded from numba-cuda's disk cache
    (fastbp.cuda_plan.prepare). The notice is printed when numba-cuda starts a compiler
    pass, which a kernel loaded from the cache never runs."""
    from . import cuda_plan
    start = time.perf_counter()
    try:   # numba-cuda's own events (numba's built-in CUDA target has none)
        from numba.cuda.core import event as cuda_event
    except ImportError:
        cuda_plan.prepare(net, optimizer, device_inputs)
        return time.perf_counter() - start

    class Announcer(cuda_event.Listener):
        said = False

        def on_start(self, ev):
            if not self.said:
                self.said = True
                print(CUDA_MESSAGE.format(CUDA_ESTIMATE_S), file=stream or sys.stderr,
                      flush=True)

        def on_end(self, ev):
            pass

    with cuda_event.install_listener("numba-cuda:run_pass", Announcer()):
        cuda_plan.prepare(net, optimizer, device_inputs)
    return time.perf_counter() - start


def warmup(net, optimizer=None, passes=PASSES, stream=None, device_inputs=False):
    """Compile (or load from numba's cache) the CPU passes ``passes`` of ``net``, or on
    "cuda" the CUDA kernels its passes launch.

    Parameters
    ----------
    net : fastbp.MLP on "cpu" or "cuda"
    optimizer : the optimizer training will use (any fastbp optimizer: they share one
        compiled update); "train_step" and "train_epoch" are skipped without it. On
        "cuda" its update's kernels are compiled too.
    passes : names among "train_step", "train_epoch", "loss", "forward", "backward",
        "layer_backward", "layer_input_grad".
        On "cuda" every pass's kernels are compiled whatever the names (they share
        them), the update's only when ``passes`` names a training pass.
    stream : where the one-line notice goes (default sys.stderr).
    device_inputs : on "cuda", also the check of inputs that live on the GPU
        (fastbp.device_inputs).

    Returns the seconds spent. Prints the notice (once) only when a pass is neither
    compiled in this process nor in numba's disk cache; the estimate assumes that
    every pass not yet compiled in this process needs compiling.
    """
    if getattr(net, "device", "cpu") == "cuda":
        training = any(name in _NEEDS_OPTIMIZER for name in passes)
        return _warmup_cuda(net, optimizer if training else None, device_inputs, stream)
    if getattr(net, "device", "cpu") != "cpu":
        return 0.0
    start = time.perf_counter()
    # The kernels ask numba's pool for its thread count through a symbol that exists
    # only once the pool is launched (kernels/cpu/blocks.py); compiling a pass links
    # them in, and without the pool LLVM aborts the process ("Symbol not found:
    # allocate_sched"), as a first call of warmup in a fresh process did.
    start_pool()
    todo = []
    if "train_step" in passes and "batch_check" not in passes:
        passes = (*passes, "batch_check")   # train_step checks a ready batch's values
    for name in passes:
        if name in _NEEDS_OPTIMIZER and optimizer is None:
            continue
        dispatcher, args = _pass_call(net, optimizer, name)
        signature = tuple(typeof(a) for a in args)
        if signature not in dispatcher.overloads:
            todo.append((name, dispatcher, signature))
    seconds = sum(ESTIMATE_S[name] for name, _, _ in todo)
    if todo and not tree_ready(net):   # the first of them compiles the shared passes
        seconds += max(COLD_S[name] - ESTIMATE_S[name] for name, _, _ in todo)
    what = f"{net.dtype.name}: {', '.join(name for name, _, _ in todo)}"
    with announced(what, seconds, stream):
        for name, dispatcher, signature in todo:
            dispatcher.compile(signature)
    return time.perf_counter() - start
