"""Shared fixtures of fastbp's correctness tests.

pyproject runs pytest with ``--import-mode=importlib``, so test modules cannot import one
another (or this file): everything they share is a fixture defined here. The helper
fixtures are session-scoped plain functions, which also makes them usable inside
hypothesis tests (hypothesis rejects function-scoped fixtures).

What lives here, and nowhere else:

- ``rng``              a numpy Generator seeded from the test's id (reproducible).
- ``random_array``     random normal data pushed away from zero (never 0, never a kink).
- ``assert_close``     the one comparison rule: |actual - expected| <= rtol*(|expected| +
                       scale), scale max|expected| or the magnitudes below, rtol by
                       dtype (KERNEL_RTOL) unless given.
- ``backward_magnitudes``, ``network_gradient_magnitudes``  the error yardsticks of
                       backward passes (sums of absolute terms).
- ``central_difference`` / ``numeric_gradient``  the finite-difference oracles, and
  ``one_kernel_thread`` to run their thousands of tiny calls without pool waits.
- ``loss_inputs``, ``cpu_loss``  random (Z, y) for a loss, and the CPU loss kernel
                       called the way the network passes call it.
- ``network_from_case``, ``reference_params``, ``network_buffers``:
                       random networks with standard-normal parameters, matching
                       data, the reference's view of their parameters, and poisoned
                       workspaces for calling the compiled network passes directly.
- ``network_cases``, ``fixed_network_case``  architectures as dicts (sizes, hidden
                       activations, output activation, loss, batch): the hypothesis
                       strategy, and the fixed one per activation x loss.
- ``gemm_operands``, ``check_gemm_against_float64``  strided operands for
                       kernels/cpu/blas.py's gemm, and its float64 check under each of
                       several library settings (OpenBLAS's cut, MKL).
"""
import contextlib
import os
import time
import zlib

import numba
import numpy as np
import pytest
from hypothesis import strategies as st

import fastbp
from fastbp.kernels import codes, reference
from fastbp.kernels import cpu
from fastbp.layout import Workspace

# Kernel vs float64 reference. float64 kernels differ from numpy only by summation
# order and libm rounding; float32 kernels are compared with the float64 reference run
# on the same (float32-representable) inputs.
KERNEL_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}

# Analytic gradient vs central finite differences (float64 throughout).
FD_RTOL = 1e-6

# Values |x| < MIN_ABS are never drawn: far from relu/leaky_relu's kink at 0 compared
# with any finite-difference step used here, and never exactly zero.
MIN_ABS = 0.05

# A run of at least this many tests has each xdist worker compile one dtype's shared
# kernels first (pytest_collection_finish); the whole suite collects about 2400.
PRECOMPILE_MIN_TESTS = 1000


# One process of the suite builds networks of many activation sets, so it compiles the
# general passes (every activation) once instead of its first sets' own passes first:
# kernels/cpu/network.py says why the choice exists; test_warmup.py restores it where
# the specialisation itself is under test. Results are bit-identical either way.
# The subprocesses tests start (the command line, MPI ranks, examples) inherit the
# variable, so they load the general passes the workers compiled first
# (pytest_collection_finish) instead of compiling their networks' own (the default
# network's: about 25 s of CPU); test_warmup_split.py sets it where a cold compile of a
# network's own passes is under test.
os.environ[cpu.network.SPECIALISED_SETS_ENV] = "0"
cpu.network.SPECIALISED_SETS = 0

# The suite's two xdist workers keep both cores busy, so a cold training pass compiles
# in one process here and in the subprocesses tests start (they inherit the variable);
# test_warmup_split.py sets it where the second process is under test.
os.environ["FASTBP_COMPILE_PROCESSES"] = "1"


def _compile_general_kernels(dtype):
    """Compile (or load from numba's cache) what most of the suite runs for ``dtype``:
    every whole-network pass of the general (every-activation) passes, the jacobian,
    and the single-layer, loss and optimizer kernels, each with the argument types the
    tests call it with (C-contiguous arrays, int64 codes)."""
    from fastbp.kernels.cpu.jacobian import jacobian_pass
    from fastbp.kernels.cpu.linear import activation_backward_bias, bias_activation
    from fastbp.warmup import ESTIMATE_S, warmup
    from fastbp.plan import plan_for

    net = fastbp.MLP([3, 4, 2], activation="tanh", dtype=dtype, seed=0)
    opt = fastbp.SGD(net, lr=0.1)
    warmup(net, opt, passes=tuple(ESTIMATE_S))
    X = np.ones((2, 3), dtype)
    net.train_step(X, np.zeros(2, np.int64), opt)   # and its compiled batch check
    plan = plan_for(net, 2)
    passes = net._kernels
    if dtype == "float64":   # backprop alone: the L-BFGS solver's, float64 in the suite
        passes.backprop(*plan.backprop_args(X, np.zeros((0, 0), dtype)))
    jacobian_pass(passes.act_set)(*plan.jacobian_args(X, np.empty_like(net.grads),
                                                      np.empty_like(X),
                                                      np.empty((2, 2, 3), dtype)))
    a, w, b, c = (np.ones((2, 2), dtype), np.ones((2, 2), dtype), np.ones(2, dtype),
                  codes.ACTIVATIONS.index("tanh"))
    cpu.linear_forward(a, w, b, c, 0.01, a.copy(), a.copy())
    cpu.linear_backward(a.copy(), a, a, a, w, c, 0.01, a.copy(), a.copy(), w.copy(),
                        b.copy(), True)
    cpu.activation_forward(a, a.copy(), c, 0.01)
    cpu.activation_backward(a, a, a, a.copy(), c, 0.01)
    bias_activation(a.copy(), b, a.copy(), c, 0.01)
    activation_backward_bias(a, a, a, a.copy(), b.copy(), c, 0.01)
    labels = np.zeros(2, np.int64)
    for loss_code in range(len(codes.LOSSES)):
        cpu.loss_forward_backward(loss_code, a, labels, a, a.copy())
    cpu.softmax_cross_entropy(a, labels, a.copy())
    cpu.mse(a, a, a.copy())
    cpu.bce_with_logits(a, a, a.copy())
    params = np.ones(4, dtype)
    cpu.sgd_update(params, params.copy(), 0.1)
    hparams = np.zeros(codes.N_HPARAMS[codes.SGD])
    hparams[0] = 0.1   # plain SGD: every other entry 0, meaning off
    cpu.optimizer_update(codes.SGD, params, params.copy(), np.zeros((0, 4), dtype),
                         hparams, 1)


# Seconds each of the longest test files took in a whole cold run (empty numba cache,
# two workers, benchmarks/suite_profile.py; the run of 2026-12-02 on a 2-vCPU AMD EPYC,
# Zen 3, where the whole run took 2.7 times as long as on the Xeons before it): scikit-learn's
# estimator checks and the subprocesses that compile in a fresh cache, run mpiexec,
# NVVM or the benchmarks. Under xdist's --dist loadfile a file runs whole on one worker,
# in the order of the collection (pyproject's --no-loadscope-reorder), so
# pytest_collection_modifyitems puts these first, longest first, and the many short
# files fill in behind them: otherwise the last long file ran on one worker while the
# other sat idle (test_yardstick.py, unlisted, ended 37 s after the other worker's last
# file in the run these numbers come from). A file not listed here counts as short; add
# a new file here if a cold run shows it taking long.
COLD_FILE_SECONDS = {
    "test_cuda_compile.py": 72, "test_gpu_tools.py": 63, "test_cuda_plan.py": 56,
    "test_warmup_split.py": 55, "test_estimators.py": 49, "test_yardstick.py": 40,
    "test_mkl.py": 39, "test_warmup.py": 32, "test_distributed.py": 32,
    "test_cuda_network.py": 25, "test_optim_specialised.py": 21,
    "test_elementary.py": 21, "test_cuda_install.py": 20, "test_packaging.py": 19,
    "test_pool_before_cache.py": 16, "test_cuda_kernels.py": 16,
    "test_concurrency.py": 11, "test_device_data.py": 10, "test_cli.py": 10,
    "test_threads.py": 8, "test_optimise_once.py": 8, "test_loss_precision.py": 8,
    "test_cuda_fused.py": 8, "test_sklearn_mlp_suite.py": 7, "test_sklearn_device.py": 7,
    "test_kernels_cpu.py": 7, "test_activation_table.py": 7, "test_kernel_registry.py": 6,
    "test_twins.py": 5, "test_cuda_graphs.py": 5,
    "test_inline_once.py": 9,   # added later: 9 s alone, warm
}


def pytest_collection_modifyitems(session, config, items):
    """The longest files first (COLD_FILE_SECONDS), the others after them in the order
    collected; the tests of a file keep their order."""
    items.sort(key=lambda item: -COLD_FILE_SECONDS.get(item.path.name, 0))


def pytest_collection_finish(session):
    """Under pytest-xdist, with a whole-suite run collected, worker gw0 compiles the
    float32 kernels most tests share and gw1 the float64 ones before either runs a
    test: otherwise both workers compile the same kernels at the same time, as numba
    cannot see what another process is compiling (its disk cache only has what is
    finished). Each kernel is then compiled once, on one of the two cores, and loaded
    from the cache everywhere else. A no-op on a warm cache and for small selections."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    dtype = {"gw0": "float32", "gw1": "float64"}.get(worker)
    if dtype is not None and len(session.items) >= PRECOMPILE_MIN_TESTS:
        _compile_general_kernels(dtype)


@pytest.fixture
def rng(request):
    """A Generator seeded from the test id: reproducible, different per test case."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _random_array(rng, shape, dtype=np.float64, scale=1.0, min_abs=MIN_ABS):
    z = rng.standard_normal(shape)
    return np.ascontiguousarray(np.copysign(min_abs + np.abs(z), z) * scale, dtype=dtype)


@pytest.fixture(scope="session")
def random_array():
    """random_array(rng, shape, dtype=float64, scale=1.0, min_abs=MIN_ABS): C-contiguous
    scale * (sign(z) * (min_abs + |z|)), z standard normal; so |x| >= scale * min_abs."""
    return _random_array


def _assert_close(actual, expected, dtype=None, rtol=None, scale=None, what=""):
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    if rtol is None:
        rtol = KERNEL_RTOL[np.dtype(dtype if dtype is not None else actual.dtype)]
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(expected).all(), f"{what}: the reference itself is not finite"
    assert np.isfinite(actual).all(), f"{what}: non-finite values in {actual}"
    if scale is None:
        scale = np.abs(expected).max() if expected.size else 0.0
    error = np.abs(actual.astype(np.float64) - expected)
    bound = rtol * (np.abs(expected) + scale)
    bad = ~(error <= bound)
    if bad.any():
        at = np.unravel_index(np.argmax(np.where(bad, error / np.maximum(bound, 1e-300), 0)),
                              expected.shape)
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} entries differ by more than rtol={rtol:g} "
            f"of (|expected| + scale); worst at {at}: actual {actual[at]!r}, expected "
            f"{expected[at]!r}, error {error[at]:.3g} > bound {bound[at]:.3g}")


@pytest.fixture(scope="session")
def assert_close():
    """assert_close(actual, expected, dtype=None, rtol=None, scale=None, what=""):
    shapes equal, everything finite, and entry by entry

        |actual - expected| <= rtol * (|expected| + scale)

    ``scale`` (a number or an array broadcasting to expected) is the size of the terms
    the computation rounds, the yardstick of its error; by default max|expected|, which
    makes the check relative to the array's scale, so entries small by cancellation
    (1 - tanh^2 at large s) are judged against the values around them. Backward passes
    pass the magnitudes from ``backward_magnitudes``. rtol defaults to KERNEL_RTOL of
    ``dtype`` (or of actual's dtype).
    """
    return _assert_close


def _backward_magnitudes(dA, X, W):
    """(dS, dX, dW, db) of a layer run on |dA|, |X|, |W| with sigma' = 1: the sums of
    absolute terms that bound the rounding error of each backward output (every
    activation here has |sigma'| <= 1.13)."""
    return reference.linear_backward(np.abs(dA), dA, np.abs(X), np.abs(W), codes.IDENTITY)


@pytest.fixture(scope="session")
def backward_magnitudes():
    """backward_magnitudes(dA, X, W) -> (dS, dX, dW, db) error yardsticks of one layer's
    backward pass (see ``assert_close``'s scale)."""
    return _backward_magnitudes


def _loss_gradient_terms(loss_code, Z, y):
    """The sums of absolute terms the loss gradient dZ is computed from (its rounding
    error yardstick): (p + onehot) / batch for softmax cross-entropy, whose dZ is the
    small difference p - onehot where the softmax saturates (p = 1 - tiny at the label:
    rounded at 1, not at |dZ|); 2 (|z| + |t|) / size for mse; (sigmoid(z) + |t|) / size
    for BCE."""
    if loss_code == codes.SOFTMAX_CROSS_ENTROPY:
        _, dZ = reference.softmax_cross_entropy(Z, y)
        batch = dZ.shape[0]
        dZ[np.arange(batch), y] += 2.0 / batch   # (p - 1) / batch -> (p + 1) / batch
        return dZ
    loss = reference.mse if loss_code == codes.MSE else reference.bce_with_logits
    T = np.abs(np.asarray(y, np.float64))
    return loss(np.abs(Z) if loss_code == codes.MSE else Z, -T)[1]


@pytest.fixture(scope="session")
def network_gradient_magnitudes():
    """network_gradient_magnitudes(weights, biases, ref_layers, X, loss_code, y) ->
    [(dW, db) per layer]: error yardsticks of a whole backward pass, as sums of the
    absolute terms each gradient is computed from. ref_layers is
    reference.network_forward's output [(S, A) per layer].

    - The loss gradient enters as the terms it is computed from
      (``_loss_gradient_terms``), taken at their array scale (their max everywhere) as
      the default rule of ``assert_close`` would.
    - A layer's input enters as the terms its forward value was computed from: S_l is
      a sum of products rounded at the scale of |W_l| |x| + |b_l| (a small S from
      cancelling terms carries that absolute error), and sigma(s) is only accurate to
      rounding of terms of size |s| (gelu at s << 0 is a tiny difference of O(|s|)
      terms), so x_l = |W_l| x_(l-1) + |b_l| + |A_l|, x_0 = |X|; every activation here
      has |sigma'| <= 1.13.
    """
    def network_gradient_magnitudes(weights, biases, ref_layers, X, loss_code, y):
        inputs = [np.abs(np.asarray(X, np.float64))]
        for (W, b), (_, A) in zip(zip(weights, biases), ref_layers[:-1]):
            inputs.append(inputs[-1] @ np.abs(W).T + np.abs(b) + np.abs(A))
        terms = _loss_gradient_terms(loss_code, ref_layers[-1][1], y)
        dA = np.full(np.shape(terms), np.abs(terms).max())
        out = [None] * len(weights)
        for l in range(len(weights) - 1, -1, -1):
            _, dA, dW, db = _backward_magnitudes(dA, inputs[l], weights[l])
            out[l] = (dW, db)
        return out
    return network_gradient_magnitudes


@pytest.fixture(scope="session")
def kernel_rtol():
    """kernel_rtol(dtype) -> the default rtol of ``assert_close`` for that dtype."""
    return lambda dtype: KERNEL_RTOL[np.dtype(dtype)]


@pytest.fixture(scope="session")
def fd_rtol():
    return FD_RTOL


@pytest.fixture(scope="session")
def one_kernel_thread():
    """Context manager: numba's pool at one thread inside, restored after.

    For tests that call the compiled passes thousands of times on tiny networks
    (finite differences): each call enters parallel regions, and on a shared 2-core
    machine a region waits for a descheduled pool thread (measured 10-20 ms a call
    instead of 10 us). What they check is the arithmetic; the kernel tests run the
    parallel paths with the full pool."""
    @contextlib.contextmanager
    def one_kernel_thread():
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            yield
        finally:
            numba.set_num_threads(before)
    return one_kernel_thread


@pytest.fixture(scope="session")
def central_difference():
    """central_difference(f, x, h): (f(x + h) - f(x - h)) / 2h for an *elementwise*
    f, all entries at once; equals f'(x) entry by entry."""
    def central_difference(f, x, h):
        return (f(x + h) - f(x - h)) / (2.0 * h)
    return central_difference


@pytest.fixture(scope="session")
def numeric_gradient():
    """numeric_gradient(f, x, h): gradient of the scalar f at the float64 array x by
    central differences, one entry at a time. x is restored afterwards."""
    def numeric_gradient(f, x, h):
        grad = np.empty(x.shape)
        flat, gflat = x.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            original = flat[i]
            flat[i] = original + h
            up = f(x)
            flat[i] = original - h
            down = f(x)
            flat[i] = original
            gflat[i] = (up - down) / (2.0 * h)
        return grad
    return numeric_gradient


def _loss_targets(rng, loss_code, shape, dtype):
    """y for a loss on outputs of ``shape``: int labels in [0, shape[1]) for
    softmax_cross_entropy, normal targets for mse, uniform targets in [0, 1] for
    bce_with_logits."""
    if loss_code == codes.SOFTMAX_CROSS_ENTROPY:
        return rng.integers(0, shape[1], size=shape[0]).astype(np.int64)
    if loss_code == codes.MSE:
        return _random_array(rng, shape, dtype)
    return rng.uniform(0.0, 1.0, size=shape).astype(dtype)


@pytest.fixture(scope="session")
def loss_inputs():
    """loss_inputs(rng, loss_code, shape, dtype, scale=3.0) -> (Z, y): random logits
    (never zero) and matching labels or targets."""
    def loss_inputs(rng, loss_code, shape, dtype, scale=3.0):
        return (_random_array(rng, shape, dtype, scale=scale),
                _loss_targets(rng, loss_code, shape, dtype))
    return loss_inputs


@pytest.fixture(scope="session")
def cpu_loss():
    """cpu_loss(loss_code, Z, y) -> (loss, dZ) through cpu.loss_forward_backward, with
    the argument the loss ignores passed empty, as the network passes do."""
    def cpu_loss(loss_code, Z, y):
        dZ = np.full_like(Z, np.nan)
        if loss_code == codes.SOFTMAX_CROSS_ENTROPY:
            labels, targets = y, np.zeros((0, Z.shape[1]), Z.dtype)
        else:
            labels, targets = np.zeros(0, np.int64), y
        return cpu.loss_forward_backward(loss_code, Z, labels, targets, dZ), dZ
    return cpu_loss


def _random_mlp(rng, sizes, activations, output_activation="identity",
                loss="softmax_cross_entropy", dtype="float64", leaky_relu_slope=0.01):
    """An MLP whose W are standard normal / sqrt(fan_in) and b standard normal / 2."""
    net = fastbp.MLP(sizes, activation=activations, output_activation=output_activation,
                     loss=loss, dtype=dtype, leaky_relu_slope=leaky_relu_slope, seed=0)
    for layer in net.layers:
        layer.W = rng.standard_normal((layer.n_out, layer.n_in)) / np.sqrt(layer.n_in)
        layer.b = 0.5 * rng.standard_normal(layer.n_out)
    return net


def _mlp_batch(rng, net, batch):
    """(X, y) for ``net``: X random normal; y int labels, normal targets (mse) or
    uniform targets in [0, 1] (bce_with_logits)."""
    X = _random_array(rng, (batch, net.sizes[0]), net.dtype)
    return X, _loss_targets(rng, codes.LOSS_CODES[net.loss], (batch, net.sizes[-1]),
                            net.dtype)


@pytest.fixture(scope="session")
def reference_params():
    """reference_params(net) -> (weights, biases, act_codes, slopes): the network as
    fastbp.kernels.reference's network functions take it, in float64."""
    def reference_params(net):
        weights = [np.array(layer.W, dtype=np.float64) for layer in net.layers]
        biases = [np.array(layer.b, dtype=np.float64) for layer in net.layers]
        act_codes = [codes.ACTIVATION_CODES[a] for a in net.activations]
        slopes = [net.leaky_relu_slope] * len(act_codes)
        return weights, biases, act_codes, slopes
    return reference_params


@pytest.fixture(scope="session")
def network_buffers():
    """network_buffers(net, batch, spare_rows=5) -> (acts, pres, dbuf) sized for
    ``batch + spare_rows`` rows (as the API's workspace is after a bigger batch) and
    filled with NaN, so a kernel that reads a slot it did not write shows up as NaN."""
    def network_buffers(net, batch, spare_rows=5):
        acts, pres, dbuf = Workspace(net.layout, net.dtype).ensure(batch + spare_rows)
        for buf in (acts, pres, dbuf):
            buf.fill(np.nan)
        return acts, pres, dbuf
    return network_buffers


@pytest.fixture(scope="session")
def network_from_case():
    """network_from_case(case, rng, dtype="float64", leaky_relu_slope=0.01) ->
    (net, X, y): the random network a case dict describes (see ``network_cases`` and
    ``fixed_network_case``) and a batch of case["batch"] rows for it."""
    def network_from_case(case, rng, dtype="float64", leaky_relu_slope=0.01):
        net = _random_mlp(rng, case["sizes"], case["activations"],
                          case["output_activation"], case["loss"], dtype,
                          leaky_relu_slope=leaky_relu_slope)
        X, y = _mlp_batch(rng, net, case["batch"])
        return net, X, y
    return network_from_case


@pytest.fixture(scope="session")
def fixed_network_case():
    """fixed_network_case(activation, loss) -> case dict: 5 inputs, hidden layers of 17
    and 3 units of ``activation``, an identity output for the logit losses and
    ``activation`` on the output for mse; batch 7."""
    def fixed_network_case(activation, loss):
        n_out = 3 if loss == "softmax_cross_entropy" else 2
        output = activation if loss == "mse" else "identity"
        return dict(sizes=[5, 17, 3, n_out], activations=[activation, activation],
                    output_activation=output, loss=loss, batch=7)
    return fixed_network_case


@st.composite
def _network_case(draw, max_width=17, max_hidden=3):
    loss = draw(st.sampled_from(codes.LOSSES))
    n_hidden = draw(st.integers(0, max_hidden))
    widths = st.sampled_from(tuple(w for w in (1, 2, 3, 5, 8, 17, 129) if w <= max_width))
    min_out = 2 if loss == "softmax_cross_entropy" else 1
    sizes = ([draw(widths)] + [draw(widths) for _ in range(n_hidden)]
             + [draw(widths.filter(lambda w: w >= min_out))])
    hidden = [draw(st.sampled_from(codes.ACTIVATIONS)) for _ in range(n_hidden)]
    output = (draw(st.sampled_from(codes.ACTIVATIONS)) if loss == "mse" else "identity")
    return dict(sizes=sizes, activations=hidden, output_activation=output, loss=loss,
                batch=draw(st.sampled_from((1, 2, 3, 17))),
                seed=draw(st.integers(0, 2**32 - 1)))


@pytest.fixture(scope="session")
def network_cases():
    """network_cases(max_width=17, max_hidden=3): hypothesis strategy of dicts with
    sizes, activations (hidden), output_activation, loss, batch and seed. Use with
    ``data.draw(network_cases())``. Logit losses get an identity output layer; mse any."""
    return _network_case


class _ClockEvent:
    """A stand-in GPU event that reads the host clock; elapsed_time in milliseconds, like
    numba's and torch's events."""

    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, stop):
        return (stop.t - self.t) * 1e3


@pytest.fixture(scope="session")
def clock_events():
    """A factory of (start, stop) host-clock events, in place of a GPU's."""
    return lambda: (_ClockEvent(), _ClockEvent())


@pytest.fixture
def stand_in_gpu(monkeypatch, clock_events):
    """Make ``compare`` and ``gpu_tune`` take their real-GPU path here: CUDA kernels run
    in the simulator, timed by host-clock events, and 'cuBLAS' is numpy."""
    from fastbp import compare
    from fastbp import device as fdevice
    monkeypatch.setattr(fdevice, "simulator_enabled", lambda: False)
    monkeypatch.setattr(fdevice, "cuda_status", lambda: (True, "a stand-in GPU"))
    monkeypatch.setattr(compare, "vendor",
                        lambda: ("numpy stand-in", np.asarray, lambda: None, clock_events))
    monkeypatch.setattr(compare, "cuda_events", clock_events)


@pytest.fixture(scope="session")
def gemm_operands():
    """operands(rng, dtype, trans_a, trans_b, m, n, k): op(A) (m, k) and op(B) (k, n)
    for kernels/cpu/blas.py's gemm, as column blocks of wider arrays (rows strided)."""
    def operands(rng, dtype, trans_a, trans_b, m, n, k):
        a_shape = (k, m) if trans_a else (m, k)
        b_shape = (n, k) if trans_b else (k, n)
        A = rng.standard_normal((a_shape[0], a_shape[1] + 5)).astype(dtype)
        B = rng.standard_normal((b_shape[0], b_shape[1] + 3)).astype(dtype)
        return A[:, 2:2 + a_shape[1]], B[:, 1:1 + b_shape[1]]
    return operands


@pytest.fixture(scope="session")
def check_gemm_against_float64(gemm_operands):
    """check(rng, dtype, trans_a, trans_b, m, n, k, settings): C[:, 3:3+n] = 0.5 op(A)
    op(B) - 2 C on strided blocks, once after each of ``settings`` (callables that set
    the BLAS up), within 2e-5 (float32) or 1e-12 (float64) of a float64 reference
    relative to |op(A)| |op(B)| + 2 |C|, and nothing written outside C's block."""
    from fastbp.kernels.cpu.blas import gemm

    def check(rng, dtype, trans_a, trans_b, m, n, k, settings):
        tol = 2e-5 if dtype == np.float32 else 1e-12
        A, B = gemm_operands(rng, dtype, trans_a, trans_b, m, n, k)
        opA = (A.T if trans_a else A).astype(np.float64)
        opB = (B.T if trans_b else B).astype(np.float64)
        C0 = rng.standard_normal((m, n + 4)).astype(dtype)
        want = 0.5 * opA @ opB - 2.0 * C0[:, 3:3 + n].astype(np.float64)
        scale = np.abs(opA) @ np.abs(opB) + 2.0 * np.abs(C0[:, 3:3 + n])
        for setting in settings:
            setting()
            big = C0.copy()
            gemm(trans_a, trans_b, 0.5, A, B, -2.0, big[:, 3:3 + n])
            err = np.abs(big[:, 3:3 + n] - want) / scale
            assert err.max() <= tol, (m, n, k, setting)
            assert np.array_equal(big[:, :3], C0[:, :3])
            assert np.array_equal(big[:, 3 + n:], C0[:, 3 + n:])
    return check
