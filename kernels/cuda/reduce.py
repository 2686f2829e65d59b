"""Reductions inside a thread block, shared by the CUDA losses and optimizers, and the
scratch their launchers reduce into.

The CPU twins of those launchers (losses, grad_norm, optimizer_update, the network
passes) take no scratch argument: a CPU reduction sums in registers. So the CUDA
launchers take none either and keep their own (``scratch``): one small device array
per name, per thread and per GPU, made on first use and reused. The launch plan
(plan.py) passes its own buffers instead, since it reads them on the device.
"""
import threading

import numpy as np
from numba import cuda

from ._launch import config

_local = threading.local()


def _held(key, make):
    """The calling thread's device array ``key`` on the current GPU, ``make()`` on
    first use. Per thread, so that networks stepped in two threads at once never share
    one (fastbp.concurrency); per GPU, because device memory is."""
    context = cuda.current_context()
    key = key + (getattr(context.device, "id", 0),)   # the simulator has one GPU
    arrays = getattr(_local, "arrays", None)
    if arrays is None:
        arrays = _local.arrays = {}
    array = arrays.get(key)
    if array is None:
        array = arrays[key] = make()
    return array


_SCRATCH = {"partials": lambda: cuda.device_array(max(config.max_reduce_blocks, 256),
                                                 np.float64),
            "counter": lambda: cuda.to_device(np.zeros(1, np.int32)),
            "no_labels": lambda: cuda.device_array(0, np.int64),
            "steps": lambda: cuda.to_device(np.zeros(2, np.int64))}


def scratch(name):
    """The calling thread's scratch device array ``name`` on the current GPU:
    "partials" float64 (>= config.max_reduce_blocks entries), the partial sums of a
    block reduction; "counter" a one-element int32 counter that its users keep at 0
    between calls (optim's non-finite count); "no_labels" an empty int64 array (the
    losses' stand-in labels, never read); "steps" a two-element int64 array (the step
    number an unplanned Adam update reads, optim.step_counter)."""
    make = _SCRATCH.get(name)
    if make is None:
        raise ValueError(f"name: expected 'partials', 'counter', 'no_labels' or 'steps', "
                         f"got {name!r}")
    return _held((name,), make)


def workspace(shape, dtype):
    """The calling thread's scratch device array of this shape and dtype on the current
    GPU (the split products' partial tiles, blas.py), made on first use and reused: a
    launch plan records it once, and launches on one stream run in order, so two
    products of a step never hold it at once."""
    shape, dtype = tuple(shape), np.dtype(dtype)
    return _held(("workspace", shape, dtype.name), lambda: cuda.device_array(shape, dtype))


@cuda.jit(device=True)
def block_sum(part, tid):
    """Tree-sum the block's shared float64 array ``part`` (one entry per thread, length
    a power of two) into part[0]. Every thread of the block must call it, after writing
    part[tid] (it synchronises before and between the halving steps)."""
    cuda.syncthreads()
    half = part.shape[0] // 2
    while half > 0:
        if tid < half:
            part[tid] = part[tid] + part[tid + half]
        cuda.syncthreads()
        half //= 2
