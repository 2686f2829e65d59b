"""Reductions inside a thread block, shared by the CUDA losses and optimizers."""
from numba import cuda


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
