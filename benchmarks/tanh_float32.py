"""The float32 tanh activation against the general tanh, on every float32 input.

fastbp's tanh activation on float32 arrays runs kernels/cpu/elementary.py's
``tanh_for_float32`` (one polynomial on a reduced range) where it ran ``tanh``
(expm1's series and exp, and a select). This checks, for each of the 2**32 float32 bit
patterns, that the public kernel ``activation_forward`` now stores the same float32 as
``tanh`` rounded to float32 (the result before the change), bit for bit, NaN for NaN;
then it times both per element at one thread, with the form before the fitted
polynomial (expm1's 15-term series) and numpy's float32 ``np.tanh`` beside them.

    python benchmarks/tanh_float32.py              # all 2**32 inputs (about 30 s on 2 cores)
    python benchmarks/tanh_float32.py --stride 97  # every 97th bit pattern

Exit status 1 if any input differs.
"""
import argparse
import sys
import time

import numpy as np

CHUNK = 1 << 25


def loop_of(fn):
    """A parallel loop storing ``fn`` (a scalar function inlined into it) of a float32
    array into one, compiled with the kernels' own flags (kernels/cpu/_jit.py)."""
    from numba import prange
    from fastbp.kernels.cpu._jit import parallel

    @parallel
    def loop(S, A):
        for i in prange(S.shape[0]):
            A[i] = fn(S[i])
    return loop


def general_tanh_loop():
    """``loop_of(elementary.tanh)``: the general tanh, the reference."""
    from fastbp.kernels.cpu import elementary
    return loop_of(elementary.tanh)


def series_form():
    """The float32 form as it was before 2026-12-01: expm1's 15-term Taylor series on
    the reduced argument where ``_expm1_reduced`` now has a fitted polynomial of 10
    multiply-adds (the same float32 results), kept here as the before of its timing."""
    from fastbp.kernels.cpu import elementary as el
    from fastbp.kernels.cpu._jit import scalar

    @scalar
    def form(x):
        x = float(x)
        y = -2.0 * abs(x)
        y = -40.0 if y < -40.0 else y
        shifted, r = el._reduce(y)
        two_k = el._pow2(el._k_of(shifted))
        return el._tanh_from(x, two_k * el._expm1_series(r) + (two_k - 1.0))
    return form


def compare_all(stride):
    """(inputs compared, inputs that differ, up to 10 of them) over every ``stride``-th
    float32 bit pattern."""
    from fastbp.kernels import codes
    from fastbp.kernels.cpu import activation_forward
    general = general_tanh_loop()
    mine = np.empty((1, CHUNK), np.float32)
    ref = np.empty(CHUNK, np.float32)
    checked, bad, examples = 0, 0, []
    for start in range(0, 1 << 32, CHUNK * stride):
        bits = np.arange(start, min(start + CHUNK * stride, 1 << 32), stride,
                         dtype=np.uint64).astype(np.uint32)
        S = bits.view(np.float32)
        n = S.size
        activation_forward(S.reshape(1, n), mine[:, :n], codes.TANH, 0.0)
        general(S, ref[:n])
        a, b = mine[0, :n], ref[:n]
        differ = (a.view(np.uint32) != b.view(np.uint32)) & ~(np.isnan(a) & np.isnan(b))
        bad += int(differ.sum())
        examples.extend(S[differ][:10 - len(examples)].tolist())
        checked += n
    return checked, bad, examples


def ns_per_element(fn, S, A, repeats=300):
    fn(S, A)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(S, A)
        times.append(time.perf_counter() - t0)
    return 1e9 * float(np.median(times)) / S.size


def speeds():
    """ns per element, one thread, 16384 float32 normal(0, 2) inputs."""
    import fastbp
    from fastbp.kernels import codes
    from fastbp.kernels.cpu import activation_forward, elementary
    fastbp.set_num_threads(1)
    general = general_tanh_loop()
    fitted = loop_of(elementary.tanh_for_float32)
    series = loop_of(series_form())
    S = (np.random.default_rng(0).standard_normal(1 << 14) * 2).astype(np.float32)
    A = np.empty_like(S)
    S2, A2 = S.reshape(1, -1), A.reshape(1, -1)
    rows = {}
    for _ in range(2):   # alternate, keep the later round
        rows["activation_forward (tanh_for_float32)"] = ns_per_element(
            lambda s, a: activation_forward(s, a, codes.TANH, 0.0), S2, A2)
        rows["tanh_for_float32, one-dimensional loop"] = ns_per_element(fitted, S, A)
        rows["the same, 15-term series (before)"] = ns_per_element(series, S, A)
        rows["elementary.tanh, same loop"] = ns_per_element(general, S, A)
        rows["numpy np.tanh (float32 arithmetic)"] = ns_per_element(
            lambda s, a: np.tanh(s, out=a), S, A)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=1,
                        help="check every STRIDE-th bit pattern (default: all)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    checked, bad, examples = compare_all(args.stride)
    print(f"{checked} float32 inputs checked in {time.perf_counter() - t0:.0f} s: "
          f"{bad} differ{' (e.g. ' + repr(examples) + ')' if bad else ''}")
    for name, ns in speeds().items():
        print(f"  {name:38s} {ns:6.3f} ns per element")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
