"""General matrix products on the GPU (numba.cuda twin of kernels/cpu/blas.py).

    gemm(trans_a, trans_b, alpha, A, B, beta, C)
        C = alpha * op(A) @ op(B) + beta * C       as the CPU twin (BLAS ?gemm): with
                                                   beta == 0, C is not read
    gemm_bias_activation(trans_a, trans_b, A, B, bias, C, out, code, slope)
        C = op(A) @ op(B) + bias,  out = sigma(C)  in one kernel (the layers' forward)

    op(M) = M.T if trans_M else M; op(A) (m, k), op(B) (k, n), C and out (m, n), bias
    (n,): C-contiguous device arrays of one float dtype; out may be C. The fused
    bias-and-activation epilogue has no CPU twin: there BLAS computes the product and
    kernels/cpu/linear.py applies bias and sigma per column block while it is in cache.

One kernel per (geometry, dtype, trans_a, trans_b, epilogue, activation), compiled on
first use, so the transposes, the epilogue and sigma are compile-time constants: no
branches, and the unrolled epilogue keeps the accumulators in registers.

How a block works (geometry ``(bm, bn, bk, tm, tn)`` from ``_launch.config.gemm``):

- It owns a bm x bn tile of C and walks k in steps of bk. Each step's slices,
  op(A)[m0:m0+bm, k:k+bk] and op(B)[k:k+bk, n0:n0+bn], are staged in shared memory laid
  out [k][row], so the inner loop reads a column of each.
- Shared memory is double-buffered and the next slices are fetched into registers
  before the current ones are multiplied: the global loads are in flight during the
  arithmetic, and one barrier per step suffices.
- Each thread keeps tm x tn outputs in registers, in runs of 4 adjacent rows (and
  columns; 2 or 1 where 4 does not divide tm or tn), the runs bm/tm*4 rows apart: a run
  is one 16-byte shared load (LDS.128), a warp's loads are broadcasts or 128 consecutive
  bytes per quarter-warp (no bank conflicts), and its stores to C stay within a few
  cache lines. Per k a thread loads (tm + tn)/4 vectors for tm*tn fused multiply-adds.
- The staging rows are padded (``_pad``) so the transposing stores of an operand that
  is not k-major hit distinct banks, and stay 16-byte aligned for the vector loads.
- Ragged edges read zeros (masked loads) and skip stores: any m, n, k is correct.
- The epilogue's loops over the thread's outputs are unrolled, so that ``acc`` is
  indexed by constants only and stays in registers (one run-time index would move the
  whole array to local memory, main loop included). An activation that calls exp, tanh
  or erf makes the loop too large to unroll, so for those the epilogue stores
  S = C + bias from registers first, then a plain loop reads each S back (the thread's
  own writes, from cache) and stores sigma(S).

Small outputs (``_launch.product_shape``): a product whose C has few tiles runs on a
smaller geometry, and if even that leaves most multiprocessors idle, k is split: block
(x, y, z) multiplies k in [z*kc, (z+1)*kc) and stores its tile to a workspace (the SPLIT
epilogue, out[z] = that range's product), then ``_split_sum`` adds the ranges in order
of z and applies the real epilogue. The result is deterministic (no atomics); only the
summation order differs from the unsplit product's.

``benchmarks/cuda_resources.py`` prints the registers, stack and spills ptxas gives each
variant (no GPU needed); ``benchmarks/gpu_tune.py`` times geometries against cuBLAS.
"""
import functools
import inspect

import numba
import numpy as np
from numba import cuda

from ._jit import kernel
from ._launch import blocks, config, launch, multiprocessors, product_shape
from .activations import CHEAP, FORWARD
from .reduce import workspace

# numba-cuda's jit takes launch bounds; the simulator's and numba's old built-in
# CUDA target do not (there geometry.min_blocks has no effect).
_HAS_LAUNCH_BOUNDS = "launch_bounds" in inspect.signature(cuda.jit).parameters

STORE = 0            # epilogue: C = product
BIAS_ACTIVATION = 1  # epilogue: C = product + bias, out = sigma(C)
SCALE = 2            # epilogue: C = alpha * product + beta * C (C read only if beta != 0)
SPLIT = 3            # epilogue: out[z] = the product over block z's range of k (split k)


def _run(t):
    """Outputs per contiguous run of a thread: 4, 2 or 1, whichever divides t."""
    return 4 if t % 4 == 0 else (2 if t % 2 == 0 else 1)


def _pad(bk):
    """Row padding of a [bk][rows] staging buffer: with 32/bk, a warp's transposing
    stores (32/bk rows x bk k's) fall into 32 different 4-byte banks when rows is a
    multiple of 32; rounded up to a multiple of 4 so rows stay 16-byte aligned."""
    return -(-max(32 // bk, 1) // 4) * 4


def _operand(rows, bk, k_major, zero):
    """Device functions staging one operand, seen as R x K (rows of the tile by k):
    ``coords(e)`` maps a thread's e-th staged element to (row, k) within the tile,
    ordered so consecutive threads read consecutive addresses of the source;
    ``fetch(src, r, k, R, K)`` reads element (r, k), from src[k, r] when the source is
    k_major (laid out K x R) and src[r, k] otherwise, or zero outside R x K."""
    @cuda.jit(device=True)
    def coords(e):
        if k_major:                # source (K, R): walk rows fastest
            k = e // rows
            return e - k * rows, k
        r = e // bk                # source (R, K): walk k fastest
        return r, e - r * bk

    @cuda.jit(device=True)
    def fetch(src, r, k, R, K):
        if r < R and k < K:     # in bounds and non-negative: index unsigned (no wraparound)
            if k_major:
                return src[np.uint64(k), np.uint64(r)]
            return src[np.uint64(r), np.uint64(k)]
        return zero(0)

    return coords, fetch


@functools.lru_cache(maxsize=None)
def _kernel(geometry, dtype, trans_a, trans_b, epilogue, code=0):
    """The product kernel for one geometry, dtype name, transposes, epilogue and
    activation code (used by the BIAS_ACTIVATION epilogue only). Block z multiplies k
    in [z*kc, min((z+1)*kc, K)): with one block in z and kc = K, the whole product."""
    BM, BN, BK, TM, TN, min_blocks = geometry
    TY, TX = BM // TM, BN // TN          # thread grid of a block
    NT = TX * TY
    # A thread's outputs come in runs of VM rows (VN columns) that are adjacent in
    # shared memory, so each run is one vector load (LDS.64/.128); runs are TY*VM rows
    # apart, so a warp's loads stay conflict-free and its stores to C coalesce.
    VM, VN = _run(TM), _run(TN)
    LA, LB = BM * BK // NT, BN * BK // NT  # elements each thread stages per k-step
    # rows padded for conflict-free staging, kept a multiple of 4 so every row of the
    # staging buffers starts 16-byte aligned (vector loads need it)
    LDA, LDB = BM + _pad(BK), BN + _pad(BK)
    SA, SB = 2 * BK * LDA, 2 * BK * LDB    # shared elements of the two staging buffers
    zero = np.dtype(dtype).type
    sigma = FORWARD[code]
    inline_sigma = code in CHEAP
    nbtype = numba.from_dtype(np.dtype(dtype))
    # op(A) is staged by its rows m, op(B) by its columns n: A is k-major (K x M) when
    # transposed, B when not (op(B) = B is K x N).
    a_coords, a_fetch = _operand(BM, BK, trans_a, zero)
    b_coords, b_fetch = _operand(BN, BK, not trans_b, zero)
    options = {"launch_bounds": (NT, min_blocks)} if min_blocks and _HAS_LAUNCH_BOUNDS else {}

    @kernel(**options)
    def gemm(A, B, C, bias, out, slope, alpha, beta, kc):
        M = C.shape[0]
        N = C.shape[1]
        K = A.shape[0] if trans_a else A.shape[1]   # folded: trans_a is a constant
        kz = cuda.blockIdx.z
        k_begin = kz * kc
        k_end = min(K, k_begin + kc)
        tid = cuda.threadIdx.x
        ty = tid // TX
        tx = tid - ty * TX
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        # [buffer][k][row] staging, flat: the inner loop then steps one base index per
        # k and reaches a thread's rows at constant offsets (no per-element index math).
        As = cuda.shared.array(SA, nbtype)
        Bs = cuda.shared.array(SB, nbtype)
        acc = cuda.local.array((TM, TN), nbtype)
        a_col = cuda.local.array(TM, nbtype)
        b_row = cuda.local.array(TN, nbtype)
        a_next = cuda.local.array(LA, nbtype)
        b_next = cuda.local.array(LB, nbtype)
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = 0
        steps = (k_end - k_begin + BK - 1) // BK
        for step in range(steps + 1):
            # Fetch step `step` into registers (before the arithmetic on step-1, so the
            # loads overlap it), ...
            if step < steps:
                k0 = k_begin + step * BK
                for l in range(LA):
                    r, k = a_coords(tid + l * NT)
                    a_next[l] = a_fetch(A, m0 + r, k0 + k, M, k_end)
                for l in range(LB):
                    r, k = b_coords(tid + l * NT)
                    b_next[l] = b_fetch(B, n0 + r, k0 + k, N, k_end)
            # ... multiply step-1's slices, staged in buffer (step-1) % 2, ...
            if step > 0:
                a_at = ((step - 1) & 1) * BK * LDA + ty * VM
                b_at = ((step - 1) & 1) * BK * LDB + tx * VN
                for kk in range(BK):
                    # unsigned indices: numba adds no negative-index wraparound, which
                    # cost a compare and a select per load here
                    for i in range(TM):
                        a_col[i] = As[np.uint64(a_at + (i // VM) * (TY * VM) + i % VM)]
                    for j in range(TN):
                        b_row[j] = Bs[np.uint64(b_at + (j // VN) * (TX * VN) + j % VN)]
                    for i in range(TM):
                        for j in range(TN):
                            acc[i, j] += a_col[i] * b_row[j]
                    a_at += LDA
                    b_at += LDB
            # ... then stage step into the other buffer. Nobody reads it now: the
            # barrier that ended the previous iteration came after its last reads.
            if step < steps:
                nxt = step & 1
                for l in range(LA):
                    r, k = a_coords(tid + l * NT)
                    As[np.uint64((nxt * BK + k) * LDA + r)] = a_next[l]
                for l in range(LB):
                    r, k = b_coords(tid + l * NT)
                    Bs[np.uint64((nxt * BK + k) * LDB + r)] = b_next[l]
            cuda.syncthreads()
        for i in range(TM):
            m = m0 + (i // VM) * (TY * VM) + ty * VM + i % VM
            if m < M:
                for j in range(TN):
                    n = n0 + (j // VN) * (TX * VN) + tx * VN + j % VN
                    if n < N:
                        if epilogue == STORE:
                            C[m, n] = acc[i, j]
                        elif epilogue == SPLIT:
                            out[kz, m, n] = acc[i, j]
                        elif epilogue == SCALE:
                            v = alpha * acc[i, j]
                            if beta != 0.0:
                                v += beta * C[m, n]
                            C[m, n] = v
                        else:
                            s = acc[i, j] + bias[n]
                            C[m, n] = s
                            if inline_sigma:
                                out[m, n] = sigma(s, slope)
        if epilogue == BIAS_ACTIVATION and not inline_sigma:
            for e in range(TM * TN):
                i = e // TN
                j = e - i * TN
                m = m0 + (i // VM) * (TY * VM) + ty * VM + i % VM
                n = n0 + (j // VN) * (TX * VN) + tx * VN + j % VN
                if m < M and n < N:
                    out[m, n] = sigma(C[m, n], slope)

    return gemm


@functools.lru_cache(maxsize=None)
def _split_sum(epilogue, code=0):
    """The kernel that finishes a split product: C = the sum over z of P[z] (in order of
    z), then ``epilogue`` (STORE, SCALE or BIAS_ACTIVATION with activation ``code``) as
    the unsplit kernel applies it. One thread per element of C, grid-strided."""
    sigma = FORWARD[code]

    @kernel
    def split_sum(P, C, bias, out, slope, alpha, beta):
        M = C.shape[0]
        N = C.shape[1]
        for idx in range(cuda.grid(1), M * N, cuda.gridsize(1)):
            m = idx // N
            n = idx - m * N
            s = P[0, m, n]
            for z in range(1, P.shape[0]):
                s += P[z, m, n]
            if epilogue == STORE:
                C[m, n] = s
            elif epilogue == SCALE:
                v = alpha * s
                if beta != 0.0:
                    v += beta * C[m, n]
                C[m, n] = v
            else:
                s += bias[n]
                C[m, n] = s
                out[m, n] = sigma(s, slope)

    return split_sum


def _launch_gemm(trans_a, trans_b, A, B, C, epilogue, bias, out, code, slope, alpha, beta):
    M, N = C.shape
    if M == 0 or N == 0:
        return
    dtype = np.dtype(C.dtype).name
    K = A.shape[0] if trans_a else A.shape[1]
    geometry, splits, kc = product_shape(M, N, K, dtype)
    grid = (blocks(N, geometry.bn), blocks(M, geometry.bm), splits)
    scalars = (float(slope), float(alpha), float(beta))
    if splits == 1:
        kernel = _kernel(geometry, dtype, bool(trans_a), bool(trans_b), epilogue, int(code))
        launch(kernel, grid, geometry.threads, (A, B, C, bias, out) + scalars + (kc,))
        return
    P = workspace((splits, M, N), C.dtype)
    kernel = _kernel(geometry, dtype, bool(trans_a), bool(trans_b), SPLIT)
    launch(kernel, grid, geometry.threads, (A, B, C, bias, P) + scalars + (kc,))
    threads = config.block
    launch(_split_sum(epilogue, int(code)),
           min(blocks(M * N, threads), 4 * multiprocessors()), threads,
           (P, C, bias, out) + scalars)


def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """C = alpha * op(A) @ op(B) + beta * C (module docstring), as the CPU twin; the
    common alpha = 1, beta = 0 runs the plain store (no scaling in the epilogue). The
    geometry is ``config.gemm[C.dtype]``, or a smaller one for a small C
    (``_launch.product_shape``); kernels compile on first use."""
    epilogue = STORE if alpha == 1.0 and beta == 0.0 else SCALE
    # bias and out are placeholders the STORE and SCALE epilogues never read
    _launch_gemm(trans_a, trans_b, A, B, C, epilogue, C[0], C, 0, 0.0, alpha, beta)


def gemm_bias_activation(trans_a, trans_b, A, B, bias, C, out, code, slope):
    """C = op(A) @ op(B) + bias and out = sigma_code(C) (``slope``: leaky_relu's) in one
    kernel; see the module docstring for shapes."""
    _launch_gemm(trans_a, trans_b, A, B, C, BIAS_ACTIVATION, bias, out, code, slope, 1.0,
                 0.0)
