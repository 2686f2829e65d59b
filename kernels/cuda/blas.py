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
- A thread's staged elements of an operand lie a constant apart, in the source (a
  per-launch constant) and in shared memory (a compile-time one), because the thread
  count and bm, bn, bk divide one another (``_operand``): a k-step adds one offset per
  operand instead of recomputing each element's row, column and bounds (that was
  about 120 instructions per k-step, a fifth of the kernel, in the SASS). A block
  whose tile lies inside C loads its full k-steps without any check.
- The k loop of a step is unrolled by hand (``multiply`` called per k): left to LLVM
  it stayed a loop, 15 instructions of bookkeeping per k and no loads hoisted ahead.
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
variant (no GPU needed; 124-126 registers at the default geometry, so two blocks fit a
multiprocessor); ``benchmarks/gpu_tune.py`` times geometries against cuBLAS (on an
H200: 0.73 / 0.85 / 0.81 of cuBLAS FP32 for forward / dW / dX at 4096).
"""
import functools
import inspect

import numba
import numpy as np
from numba import cuda

from ._jit import kernel
from ._launch import SIMULATOR, blocks, config, launch, multiprocessors, product_shape
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


if SIMULATOR:
    @cuda.jit(device=True)
    def _flat(M, x):
        """M.flat[x] of a C-contiguous matrix (x unsigned, in range)."""
        n = M.shape[1]
        return M[x // n, x % n]     # the simulator indexes numpy arrays: keep in range
else:
    @cuda.jit(device=True)
    def _flat(M, x):
        """M.flat[x] of a C-contiguous matrix (x unsigned, in range): numba computes a
        C-layout element's offset from the indices and shape (i * shape[1] + j), with
        no bounds check and no wraparound for unsigned indices, so M[0, x] is the x-th
        element: one address add, where M[i, j] with i and j recomputed per element
        cost a 64-bit multiply, a stride load and two compares (a view made with
        reshape would call a host helper numba-cuda does not link)."""
        return M[np.uint64(0), x]


# The device functions of a kernel come from factories cached on their parameters, so
# the kernels that share them (a geometry's epilogues, both operands of a square tile)
# share one compiled device function each: numba-cuda types and lowers a device
# function once per signature and links it into every kernel that calls it.
@functools.lru_cache(maxsize=None)
def _operand(rows, bk, k_major, threads, zero):
    """How a thread stages one operand, seen as R x K (rows of the tile by k) and read
    from a flat view of its source: K x R (``k_major``) or R x K, row-major, ld its
    row length. Consecutive threads take consecutive addresses along the source's
    contiguous ("fast") axis; the e-th element of the tile a block stages is
    (fast, slow) = (e % F, e // F), F the fast extent (rows or bk), and a thread stages
    e = tid + l * threads, l = 0, 1, ... Since threads and F divide one another
    (GemmGeometry.check), element l of a thread lies at

        fast = fast0 + (l % P) * threads,   slow = slow0 + (l // P) * Q

    with compile-time P and Q: so its source address is the first element's plus a
    per-launch constant, and its shared-memory slot the first's plus a compile-time
    one. Returns ``first(tid)`` -> (fast0, slow0), ``coords(fast0, slow0, l)`` -> (r, k)
    within the tile, ``load(src, flat, slow, l)`` -> element l (``flat``: the first's
    flat index in src, ``slow``: Q source rows), ``load_checked(src, flat, slow, fast0,
    slow0, l, row0, R, k0, K)`` -> the same, or zero where the tile's row row0 + r or
    k0 + k falls outside R rows or K, and (P, Q)."""
    fast = rows if k_major else bk
    if threads % fast == 0:
        P, Q = 1, threads // fast
    else:
        P, Q = fast // threads, 1

    @cuda.jit(device=True)
    def first(tid):
        if P == 1:
            return tid % fast, tid // fast
        return tid, 0

    @cuda.jit(device=True)
    def coords(fast0, slow0, l):
        f = fast0 + (l % P) * threads
        w = slow0 + (l // P) * Q
        if k_major:
            return f, w
        return w, f

    @cuda.jit(device=True)
    def load(src, flat, slow, l):
        return _flat(src, np.uint64(flat + (l // P) * slow + (l % P) * threads))

    @cuda.jit(device=True)
    def load_checked(src, flat, slow, fast0, slow0, l, row0, R, k0, K):
        r, k = coords(fast0, slow0, l)
        if row0 + r < R and k0 + k < K:
            return load(src, flat, slow, l)
        return zero(0)

    return first, coords, load, load_checked, P, Q


@functools.lru_cache(maxsize=None)
def _multiplier(TM, TN, VM, VN, TY, TX):
    """``multiply(As, Bs, a_at, b_at, acc, a_col, b_row)``: acc += op(A)[:, k] op(B)[k, :]
    for a thread's TM x TN outputs (runs of VM rows and VN columns, TY x TX threads),
    the column and row of one k read from shared memory at a_at and b_at."""
    @cuda.jit(device=True)
    def multiply(As, Bs, a_at, b_at, acc, a_col, b_row):
        for i in range(TM):
            a_col[i] = As[np.uint64(a_at + (i // VM) * (TY * VM) + i % VM)]
        for j in range(TN):
            b_row[j] = Bs[np.uint64(b_at + (j // VN) * (TX * VN) + j % VN)]
        for i in range(TM):
            for j in range(TN):
                acc[i, j] += a_col[i] * b_row[j]
    return multiply


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
    A_KM, B_KM = trans_a, not trans_b
    a_first, a_coords, a_load, a_checked, AP, AQ = _operand(BM, BK, A_KM, NT, zero)
    b_first, b_coords, b_load, b_checked, BP, BQ = _operand(BN, BK, B_KM, NT, zero)
    # shared-memory distance of one step along an operand's slow and fast axes (the
    # staging buffers are [k][row]: a k is LDA or LDB apart, a row 1)
    A_SLOW, A_FAST = (AQ * LDA, NT) if A_KM else (AQ, NT * LDA)
    B_SLOW, B_FAST = (BQ * LDB, NT) if B_KM else (BQ, NT * LDB)
    # the kk loop unrolled by hand, UK steps at a time (LLVM leaves a loop of 64
    # multiply-adds rolled: 15 more instructions per k, and no loads hoisted ahead)
    UK = 8 if BK % 8 == 0 else (4 if BK % 4 == 0 else (2 if BK % 2 == 0 else 1))

    multiply = _multiplier(TM, TN, VM, VN, TY, TX)
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
        # Where this thread's first staged element of each operand lies in it (as a
        # flat array, _flat) and in shared memory; element l is a constant away from
        # it (_operand), so a k-step costs one add per operand, not per element.
        a_ld = A.shape[1]
        b_ld = B.shape[1]
        af, aw = a_first(tid)
        bf, bw = b_first(tid)
        a_r, a_k = a_coords(af, aw, 0)
        b_r, b_k = b_coords(bf, bw, 0)
        if A_KM:
            a_flat = (k_begin + a_k) * a_ld + m0 + a_r
        else:
            a_flat = (m0 + a_r) * a_ld + k_begin + a_k
        if B_KM:
            b_flat = (k_begin + b_k) * b_ld + n0 + b_r
        else:
            b_flat = (n0 + b_r) * b_ld + k_begin + b_k
        a_inc = BK * a_ld if A_KM else BK
        b_inc = BK * b_ld if B_KM else BK
        a_slow = AQ * a_ld      # source distance of one step of the slow axis (l // P)
        b_slow = BQ * b_ld
        a_sh = a_k * LDA + a_r  # shared slot of the first element (buffer 0)
        b_sh = b_k * LDB + b_r
        # a block whose whole tile lies inside C reads its interior without checks
        inside = m0 + BM <= M and n0 + BN <= N
        for step in range(steps + 1):
            # Fetch step `step` into registers (before the arithmetic on step-1, so the
            # loads overlap it), ...
            if step < steps:
                k0 = k_begin + step * BK
                if inside and k0 + BK <= k_end:
                    for l in range(LA):
                        a_next[l] = a_load(A, a_flat, a_slow, l)
                    for l in range(LB):
                        b_next[l] = b_load(B, b_flat, b_slow, l)
                else:
                    for l in range(LA):
                        a_next[l] = a_checked(A, a_flat, a_slow, af, aw, l, m0, M, k0, k_end)
                    for l in range(LB):
                        b_next[l] = b_checked(B, b_flat, b_slow, bf, bw, l, n0, N, k0, k_end)
                a_flat += a_inc
                b_flat += b_inc
            # ... multiply step-1's slices, staged in buffer (step-1) % 2, ...
            if step > 0:
                a_at = ((step - 1) & 1) * BK * LDA + ty * VM
                b_at = ((step - 1) & 1) * BK * LDB + tx * VN
                for kk in range(0, BK, UK):
                    multiply(As, Bs, a_at, b_at, acc, a_col, b_row)
                    if UK > 1:
                        multiply(As, Bs, a_at + LDA, b_at + LDB, acc, a_col, b_row)
                    if UK > 2:
                        multiply(As, Bs, a_at + 2 * LDA, b_at + 2 * LDB, acc, a_col, b_row)
                        multiply(As, Bs, a_at + 3 * LDA, b_at + 3 * LDB, acc, a_col, b_row)
                    if UK > 4:
                        multiply(As, Bs, a_at + 4 * LDA, b_at + 4 * LDB, acc, a_col, b_row)
                        multiply(As, Bs, a_at + 5 * LDA, b_at + 5 * LDB, acc, a_col, b_row)
                        multiply(As, Bs, a_at + 6 * LDA, b_at + 6 * LDB, acc, a_col, b_row)
                        multiply(As, Bs, a_at + 7 * LDA, b_at + 7 * LDB, acc, a_col, b_row)
                    a_at += UK * LDA
                    b_at += UK * LDB
            # ... then stage step into the other buffer. Nobody reads it now: the
            # barrier that ended the previous iteration came after its last reads.
            if step < steps:
                nxt = step & 1
                for l in range(LA):
                    As[np.uint64(nxt * BK * LDA + a_sh + (l // AP) * A_SLOW
                                 + (l % AP) * A_FAST)] = a_next[l]
                for l in range(LB):
                    Bs[np.uint64(nxt * BK * LDB + b_sh + (l // BP) * B_SLOW
                                 + (l % BP) * B_FAST)] = b_next[l]
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
