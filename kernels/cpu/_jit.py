"""The numba decorators every CPU kernel uses, set in one place.

``cache=True`` keeps compiled machine code on disk (NUMBA_CACHE_DIR moves it), so a
warm start costs milliseconds instead of seconds per kernel. ``fastmath`` is limited to
the flags that let LLVM vectorise and reassociate sums; "nnan"/"ninf" are left out on
purpose because the losses must stay correct for huge logits and the API's finiteness
checks rely on NaN propagating.
"""
from numba import njit

FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

# Elementwise scalar helpers, inlined into the kernels that call them.
scalar = njit(cache=True, inline="always", fastmath=FASTMATH)

# Array kernels that parallelise with prange.
parallel = njit(cache=True, parallel=True, fastmath=FASTMATH)

# Drivers that only call other kernels (their parallelism lives in the callees).
serial = njit(cache=True, fastmath=FASTMATH)
