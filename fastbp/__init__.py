"""fastbp: multilayer perceptrons trained by backpropagation on compiled kernels.

    import fastbp
    net = fastbp.MLP([64, 32, 10], activation="tanh", seed=0)
    opt = fastbp.SGD(net, lr=0.1)
    loss = net.backward(X, y); opt.step()

The compute lives in ``fastbp.kernels`` (CPU kernels, numpy reference); this package is
the thin API around it.
"""
import os as _os

# Before numba starts its GNU OpenMP thread pool: let idle pool threads sleep after
# 10,000 spins instead of libgomp's default of busy-waiting for a long time. Spinning
# idle threads took the cores from other thread pools in the process (PyTorch's steps
# ran 2-11x slower beside an idle fastbp); fastbp's own step times did not change
# (fastbp/threads.py). A value the user set wins.
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")
# Likewise for OpenBLAS's pools loaded after this line (numpy's where fastbp is imported
# before numpy, scipy's): their idle threads spin for 2**28 CPU cycles (about 0.1 s)
# after each multithreaded product by default, taking a core from numba's pool. On two
# cores, right after a two-thread numpy product, a 784-512-512-10 step ran 2x slower
# and one with nine hidden layers of 256 5x. 2**20 cycles is about the spin that
# GOMP_SPINCOUNT allows (benchmarks/pools_beside.py). A value the user set wins.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
from .datasets import load_digits, train_test_split
from .gradcheck import gradcheck
from .jacobian import jacobian
from .kernels.codes import ACTIVATIONS, LOSSES
from .network import MLP, Layer
from .persistence import ModelFileError, load
from .optim import SGD, Adam, AdamW, Optimizer, RMSprop, make_optimizer
from .schedules import CosineAnnealingLR, ExponentialLR, InverseScaling, StepLR
from .threads import get_num_threads, set_num_threads
from .training import History, StopTraining, TrainingDiverged, accuracy, fit
from .warmup import warmup

__version__ = "0.1.0"


def __getattr__(name):
    # The scikit-learn estimators load lazily: importing them imports scikit-learn
    # (when installed), which ``import fastbp`` alone should not pay for.
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")

__all__ = [
    "MLP", "Layer", "SGD", "Optimizer", "gradcheck", "fit", "accuracy", "load_digits",
    "Adam", "AdamW", "RMSprop", "make_optimizer",
    "StepLR", "ExponentialLR", "CosineAnnealingLR", "InverseScaling",
    "History", "StopTraining", "TrainingDiverged",
    "jacobian", "load", "ModelFileError", "warmup", "MLPClassifier", "MLPRegressor",
    "train_test_split", "set_num_threads", "get_num_threads", "ACTIVATIONS", "LOSSES", "__version__",
]
