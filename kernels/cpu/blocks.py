"""How kernels split work across numba's thread pool, and when they do not.

A note for every loop over a block [start, stop): write ``range(uint64(start),
uint64(stop))``. numba guards every signed array index against negative values
(Python's wraparound), and a loop whose start LLVM cannot prove non-negative keeps that
select per element, which stops vectorisation: a tanh epilogue over a 64 x 256 block
took 128 us with int64 indices and 16 us with uint64 ones. (Loops from 0 are fine.)

Every parallel kernel cuts its rows (or columns) into near-equal blocks, one task per
block. Small work runs as one block on the calling thread instead: waking the pool
costs microseconds on an idle machine and milliseconds on a busy one (measured here
with other processes on the cores: a 2-iteration prange took 40-150 us), which is more
than a small layer's entire work.
"""
from numba.np.ufunc.parallel import _iget_num_threads

from ._jit import scalar

# Below these amounts of work one thread does the job (benchmarks/README.md, "Product
# core", has the measurements that set them). Products: two threads tied with one at
# 0.8-3.2 MFLOP on an idle machine and won from 25 (1.6x); on a busy one each parallel
# region can wait milliseconds for a descheduled thread. At 1 MFLOP the 200 x 30 x 100
# and 200 x 64 x 100 layers of scikit-learn's bundled data sets (batch 200) went
# parallel and fitted 2-3x slower on two threads than on one (benchmarks/README.md,
# "scikit-learn drop-in").
PARALLEL_MIN_FLOPS = 4_000_000       # matrix products: 2 * m * n * k
PARALLEL_MIN_ELEMENTS = 32_768       # elementwise passes and reductions

# numba.get_num_threads() inside compiled code calls the threading layer through a
# ctypes pointer, which makes every caller uncacheable; the intrinsic calls the same
# function by symbol name. The symbol exists once numba's pool is launched, which must
# happen before cached code that uses it is loaded. It is not launched here, at import:
# a process that has launched GNU OpenMP's pool cannot fork safely, and importing must
# not cost that. Every caller of n_blocks is a prange kernel or calls one, and numba
# launches the pool itself before it loads such cached code (its parfor reload hook);
# fastbp's API also launches it before its first kernel call (fastbp/concurrency.py).


@scalar
def n_blocks(n, work, min_work):
    """How many blocks to cut ``n`` rows or columns into, for ``work`` units of work
    where fewer than ``min_work`` units stay on one thread."""
    if work < min_work:
        return 1
    return max(1, min(_iget_num_threads(), n))


@scalar
def block_bounds(blk, nblocks, n):
    """[start, stop) of block ``blk`` of ``nblocks`` near-equal blocks of range(n)."""
    return blk * n // nblocks, (blk + 1) * n // nblocks
