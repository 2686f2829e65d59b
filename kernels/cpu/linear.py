"""A fully connected layer, forward and backward, with bias and activation fused.

    linear_forward   S = X @ W.T + b,  A = sigma(S)
                     X (batch, in)  W (out, in)  b (out,)  S, A (batch, out)
    linear_backward  dS = dA * sigma'(S);  dW = dS.T @ X;  db = dS.sum(0);  dX = dS @ W
                     dA, A, S, dS (batch, out)  dX (batch, in)  dW (out, in)  db (out,)

How the work is split. One thread pool does everything: numba's threads each take a
block of columns and call single-threaded BLAS (kernels/cpu/blas.py) on it, then run
the elementwise epilogue on the block while it is still in cache. Splitting by columns
gives each thread a share of W instead of all of it, which measured 10-20% faster than
splitting the batch for every yardstick layer (benchmarks/README.md, "Product core").

- forward: blocks of output columns; each computes S[:, cols] = X W[cols]^T, then adds
  b and applies sigma to those columns.
- backward, pass 1: blocks of output columns; each computes dS[:, cols] (sigma'
  fused), reduces db[cols] from it, then dW[cols] = dS[:, cols]^T X. A block owns its
  rows of dW and entries of db outright: no races, no atomics, no partial copies.
- backward, pass 2 (skipped for the first layer): blocks of input columns;
  dX[:, cols] = dS W[:, cols].

A layer whose product is below ``blocks.PARALLEL_MIN_FLOPS`` runs as one block on the
calling thread: starting the pool costs more than such a layer's whole product.
"""
from numba import prange, uint64

from .activations import ALL, specialised
from .blas import gemm
from .blocks import PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_FLOPS, block_bounds, n_blocks
from ._jit import parallel, scalar, serial


# The loops below come in an in-place form for when two arguments are the same array
# (A is S, dS is dA, as the network passes use them). Written through two names, LLVM
# cannot prove the stores and loads apart, checks at run time, finds them overlapping
# and falls back to scalar code: 35 us instead of about 5 for a 64 x 256 epilogue.


@scalar
def _bias_activation_loop(f, df, args):
    S, b, A, slope, r0, r1, j0, j1 = args
    if A.ctypes.data == S.ctypes.data:
        for i in range(uint64(r0), uint64(r1)):
            for j in range(uint64(j0), uint64(j1)):
                A[i, j] = f(A[i, j] + b[j], slope)
    else:
        for i in range(uint64(r0), uint64(r1)):
            for j in range(uint64(j0), uint64(j1)):
                s = S[i, j] + b[j]
                S[i, j] = s
                A[i, j] = f(s, slope)


_bias_activation_for = specialised(_bias_activation_loop)


@scalar
def _sigma_prime_bias_loop(f, df, args):
    dA, A, S, dS, db, slope, j0, j1 = args
    for j in range(uint64(j0), uint64(j1)):
        db[j] = 0.0
    if dS.ctypes.data == dA.ctypes.data:
        for i in range(dA.shape[0]):
            for j in range(uint64(j0), uint64(j1)):
                d = dA[i, j] * df(A[i, j], S[i, j], slope)
                dA[i, j] = d
                db[j] += d
    else:
        for i in range(dA.shape[0]):
            for j in range(uint64(j0), uint64(j1)):
                d = dA[i, j] * df(A[i, j], S[i, j], slope)
                dS[i, j] = d
                db[j] += d


_sigma_prime_bias_for = specialised(_sigma_prime_bias_loop)


@parallel
def bias_activation(S, b, A, code, slope):
    """Epilogue of the forward product, in place: S += b, then A = sigma(S).

    S, A: (batch, out); b: (out,). A may be the same array as S.
    """
    batch, n = S.shape
    # Blocks of columns, with the arguments typed as the network passes' epilogue
    # (_forward_cols): numba then compiles the loop of each activation once for both,
    # not twice (this kernel's compile: 11.7 s before, 4.5 s after, float32, under load).
    nblocks = n_blocks(n, batch * n, PARALLEL_MIN_ELEMENTS)
    for blk in prange(nblocks):
        j0, j1 = block_bounds(blk, nblocks, n)
        _bias_activation_for(ALL, code, (S, b, A, slope, 0, batch, j0, j1))


@parallel
def activation_backward_bias(dA, A, S, dS, db, code, slope):
    """dS = dA * sigma'(S) and db = dS.sum(axis=0) in one pass. dS may be dA.

    dA, A, S, dS: (batch, out); db: (out,), overwritten.
    """
    batch, n = dA.shape
    nblocks = n_blocks(n, batch * n, PARALLEL_MIN_ELEMENTS)
    for blk in prange(nblocks):
        j0, j1 = block_bounds(blk, nblocks, n)
        _sigma_prime_bias_for(ALL, code, (dA, A, S, dS, db, slope, j0, j1))


# A block's work is a compiled function of its own (not inlined): the one-thread path
# and the parallel loop's body share one compiled copy of the epilogue loops, and the
# parallel loop's body stays small, where numba's parfor passes are slow on big bodies.
@serial
def _forward_cols(act_set, X, W, b, code, slope, S, A, j0, j1):
    gemm(False, True, 1.0, X, W[j0:j1], 0.0, S[:, j0:j1])
    _bias_activation_for(act_set, code, (S, b, A, slope, 0, S.shape[0], j0, j1))


@parallel
def _forward_col_blocks(act_set, X, W, b, code, slope, S, A, nblocks):
    for blk in prange(nblocks):
        j0, j1 = block_bounds(blk, nblocks, W.shape[0])
        _forward_cols(act_set, X, W, b, code, slope, S, A, j0, j1)


@scalar
def linear_forward_for(act_set, X, W, b, code, slope, S, A):
    """linear_forward compiled for the activation set ``act_set`` (a compile-time
    constant, activations.py) that ``code`` belongs to."""
    batch, n_in = X.shape
    n_out = W.shape[0]
    nblocks = n_blocks(n_out, 2 * batch * n_in * n_out, PARALLEL_MIN_FLOPS)
    if nblocks == 1:
        # bounds as run-time values: a constant 0 would make numba compile a second
        # copy of _forward_cols for it, beside the parallel loop's
        j0, j1 = block_bounds(0, 1, n_out)
        _forward_cols(act_set, X, W, b, code, slope, S, A, j0, j1)
    else:
        _forward_col_blocks(act_set, X, W, b, code, slope, S, A, nblocks)


@serial
def linear_forward_transposed(act_set, X, W, WT, b, code, slope, S, A):
    """linear_forward_for of a layer through its weights transposed: W (out, in) is
    copied into WT (in, out), then S = X @ WT + b and A = sigma(S), all on the calling
    thread (for products below blocks.PARALLEL_MIN_FLOPS; the caller chooses).

    Why: OpenBLAS (scipy's 0.3.30, when measured) multiplies by a C-contiguous W.T
    ("NN" to BLAS) faster than by W transposed ("TN", what linear_forward_for asks
    for) at these sizes, and "NN" is cut into blocks for OpenBLAS's small-matrix
    kernels more often (blas.gemm): for 200 rows, 9 us instead of 21 for 100 inputs to
    10 outputs, 38 instead of 53 for 64 inputs to 100 outputs when measured; the copy
    of the weights costs a few percent of that (benchmarks/README.md, "scikit-learn
    drop-in")."""
    n_out, n_in = W.shape
    for i in range(n_in):
        for o in range(n_out):
            WT[i, o] = W[o, i]
    gemm(False, False, 1.0, X, WT, 0.0, S)
    j0, j1 = block_bounds(0, 1, n_out)   # run-time values (see linear_forward_for)
    _bias_activation_for(act_set, code, (S, b, A, slope, 0, S.shape[0], j0, j1))


@serial
def linear_forward(X, W, b, code, slope, S, A):
    """A = sigma(X @ W.T + b), keeping S = X @ W.T + b.

    X: (batch, in), W: (out, in), b: (out,), S and A: (batch, out), one float dtype,
    all C-contiguous. ``code`` is an activation code (kernels.codes), ``slope`` the
    leaky_relu slope. Pass the same array for S and A when S need not be kept.
    """
    linear_forward_for(ALL, X, W, b, code, slope, S, A)


@serial
def _weight_grad_cols(act_set, dA, A, S, X, code, slope, dS, dW, db, j0, j1):
    _sigma_prime_bias_for(act_set, code, (dA, A, S, dS, db, slope, j0, j1))
    gemm(True, False, 1.0, dS[:, j0:j1], X, 0.0, dW[j0:j1])


@parallel
def _weight_grad_col_blocks(act_set, dA, A, S, X, code, slope, dS, dW, db, nblocks):
    for blk in prange(nblocks):
        j0, j1 = block_bounds(blk, nblocks, dA.shape[1])
        _weight_grad_cols(act_set, dA, A, S, X, code, slope, dS, dW, db, j0, j1)


@parallel
def input_grad_col_blocks(dS, W, dX, nblocks):
    for blk in prange(nblocks):
        k0, k1 = block_bounds(blk, nblocks, W.shape[1])
        gemm(False, False, 1.0, dS, W[:, k0:k1], 0.0, dX[:, k0:k1])


@scalar
def weight_grad_for(act_set, dA, A, S, X, code, slope, dS, dW, db):
    """Pass 1 of linear_backward_for: dS, db and dW, in blocks of output columns."""
    batch, n_out = dA.shape
    n_in = X.shape[1]
    nblocks = n_blocks(n_out, 2 * batch * n_out * n_in, PARALLEL_MIN_FLOPS)
    if nblocks == 1:
        j0, j1 = block_bounds(0, 1, n_out)   # run-time values (see linear_forward_for)
        _weight_grad_cols(act_set, dA, A, S, X, code, slope, dS, dW, db, j0, j1)
    else:
        _weight_grad_col_blocks(act_set, dA, A, S, X, code, slope, dS, dW, db, nblocks)


@scalar
def input_grad_blocks(dS, W):
    """How many blocks of input columns pass 2 (dX = dS W) is cut into; 1: it runs on
    the calling thread."""
    batch, n_out = dS.shape
    n_in = W.shape[1]
    return n_blocks(n_in, 2 * batch * n_out * n_in, PARALLEL_MIN_FLOPS)


@scalar
def input_grad_for(dS, W, dX, nblocks):
    """Pass 2 of linear_backward_for: dX = dS W in ``nblocks`` blocks of input
    columns."""
    if nblocks == 1:
        gemm(False, False, 1.0, dS, W, 0.0, dX)
    else:
        input_grad_col_blocks(dS, W, dX, nblocks)


@scalar
def linear_backward_for(act_set, dA, A, S, X, W, code, slope, dS, dX, dW, db, compute_dX):
    """linear_backward compiled for the activation set ``act_set`` (as
    linear_forward_for)."""
    weight_grad_for(act_set, dA, A, S, X, code, slope, dS, dW, db)
    if compute_dX:
        input_grad_for(dS, W, dX, input_grad_blocks(dS, W))


@serial
def linear_backward(dA, A, S, X, W, code, slope, dS, dX, dW, db, compute_dX):
    """Gradients of a layer from the gradient of its output.

    dA: (batch, out) gradient of the loss w.r.t. A; A, S: the forward's output and
    pre-activation (S may be A, see activations.py); X: (batch, in) the layer input;
    W: (out, in). Writes dS (batch, out; may be dA), dW (out, in), db (out,) and, when
    ``compute_dX`` is true, dX (batch, in); the first layer skips dX.
    """
    linear_backward_for(ALL, dA, A, S, X, W, code, slope, dS, dX, dW, db, compute_dX)
