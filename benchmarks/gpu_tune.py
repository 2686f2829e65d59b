"""Time candidate geometries of the CUDA matrix product against cuBLAS, on a real GPU.

For each geometry (bm, bn, bk, tm, tn[, min_blocks]) and each of the three products a
layer runs (forward X @ W.T + b with sigma fused; dW = dS.T @ X; dX = dS @ W), at one
size (default m = n = k = 4096), it checks the result against cuBLAS in float64 (the
largest error relative to the largest reference value), and times it: median of
``--repeat`` samples of 3 back-to-back launches measured with CUDA events, after a
warm-up that compiles it. The
same products in cuBLAS FP32 (PyTorch with TF32 off, or CuPy, whose default is off) are
timed the same way in the same run (``fastbp.compare.vendor``), and the table gives TFLOP/s and the fraction of
cuBLAS. The JSON (``--json``) holds every number.

    python benchmarks/gpu_tune.py                       # the built-in candidates
    python benchmarks/gpu_tune.py --geometry 128,128,8,8,8 --geometry 128,64,8,8,4,2

Under numba's CUDA simulator it runs the same code on a tiny size (default 9) and a
tiny geometry to check the script itself; its times mean nothing and are not printed.
"""
import argparse
import functools
import importlib.util
import json
import os
import statistics
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# Screened with benchmarks/cuda_resources.py (registers, spills) before any GPU run.
# 128,256,8,8,16: 16 x 8 outputs a thread like cuBLAS's 256x128 kernel (211-216
# registers, one block a multiprocessor, no spills), not timed yet.
CANDIDATES = ["128,128,8,8,8", "128,256,8,8,16", "128,128,16,8,8,2", "128,64,8,8,4",
              "64,64,8,4,4"]
SIM_CANDIDATES = ["4,4,2,2,2", "8,4,4,2,2"]


def products(m, n, k):
    """(name, trans_a, trans_b, A shape, B shape, fused forward?) of a layer's products
    with batch m, outputs n and inputs k (forward S = X @ W.T; dW = dS.T @ X is
    (n, k) from (m, n) and (m, k); dX = dS @ W is (m, k) from (m, n) and (n, k))."""
    return [("forward", False, True, (m, k), (n, k), (m, n), True),
            ("dW", True, False, (m, n), (m, k), (n, k), False),
            ("dX", False, False, (m, n), (n, k), (m, k), False)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometry", action="append", default=[],
                        help="bm,bn,bk,tm,tn[,min_blocks] (repeatable; default: candidates)")
    parser.add_argument("--size", type=int, default=None,
                        help="m = n = k (4096; 9 under the simulator)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--activation", default="tanh")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", default="gpu_tune.json")
    parser.add_argument("--profile", action="store_true",
                        help="at the end, run one forward product of the first geometry "
                             "and one of cuBLAS between cuda.profile_start/stop (for ncu)")
    args = parser.parse_args(argv)

    if importlib.util.find_spec("fastbp") is None:
        # not installed: run from a tree laid out as installed (benchmarks/gpu_check.sh)
        sys.path.insert(0, os.path.dirname(HERE))
    from fastbp import device as fdevice
    usable, reason = fdevice.cuda_status()
    if not usable:
        sys.exit(f"gpu_tune: no usable GPU: {reason}")
    simulated = fdevice.simulator_enabled()
    from numba import cuda
    from fastbp.kernels import codes
    from fastbp.kernels import reference as ref
    from fastbp.compare import cuda_events, median_gpu_seconds, vendor
    from fastbp.kernels.cuda import blas, launch_config

    size = args.size or (9 if simulated else 4096)
    geometries = args.geometry or (SIM_CANDIDATES if simulated else CANDIDATES)
    code = codes.ACTIVATION_CODES[args.activation]
    slope = codes.DEFAULT_LEAKY_RELU_SLOPE
    lib = None if simulated else vendor()
    rng = np.random.default_rng(0)
    m = n = k = size
    print(f"gpu_tune: {reason}; m = n = k = {size}, {args.dtype}, sigma {args.activation}, "
          f"median of {args.repeat}; reference and baseline: {lib[0] if lib else 'numpy'}")

    results = {"gpu": reason, "size": size, "dtype": args.dtype, "activation": args.activation,
               "repeat": args.repeat, "vendor": lib[0] if lib else None, "rows": []}
    vendor_s, vendor_fn, first_forward = {}, {}, None
    cases = []
    for name, ta, tb, a_shape, b_shape, c_shape, fused in products(m, n, k):
        A = rng.standard_normal(a_shape).astype(args.dtype)
        B = (rng.standard_normal(b_shape) / np.sqrt(k)).astype(args.dtype)
        bias = rng.standard_normal(c_shape[1]).astype(args.dtype)
        opA = A.T if ta else A
        opB = B.T if tb else B
        if lib:   # reference in float64 on the GPU (a CPU product at 4096 takes a while)
            tA, tB = lib[1](opA.astype(np.float64)), lib[1](opB.astype(np.float64))
            want = tA @ tB
            want = (want.cpu().numpy() if hasattr(want, "cpu")          # torch
                    else want.get() if hasattr(want, "get") else np.asarray(want))   # cupy
            fA, fB = lib[1](np.ascontiguousarray(opA)), lib[1](np.ascontiguousarray(opB))
            vendor_fn[name] = lambda fA=fA, fB=fB: fA @ fB
            vendor_s[name] = median_gpu_seconds(vendor_fn[name], lib[3], args.repeat, lib[2],
                                                inner=3)
        else:
            want = opA.astype(np.float64) @ opB
        if fused:
            want = want + bias
        cases.append((name, ta, tb, A, B, bias, c_shape, fused, want))

    flops = 2.0 * m * n * k
    header = (f"{'geometry':>18s} {'product':8s}{'max rel err':>12s}{'ms':>9s}{'TFLOP/s':>9s}"
              f"{'cuBLAS ms':>10s}{'/cuBLAS':>8s}")
    print(header)
    for name, *_ in cases:
        if name in vendor_s:
            print(f"{'cuBLAS':>18s} {name:8s}{'':>12s}{vendor_s[name] * 1e3:9.3f}"
                  f"{flops / vendor_s[name] / 1e12:9.2f}")
    for g in geometries:
        for name, ta, tb, A, B, bias, c_shape, fused, want in cases:
            dA, dB, db = cuda.to_device(A), cuda.to_device(B), cuda.to_device(bias)
            C = cuda.to_device(np.full(c_shape, np.nan, args.dtype))   # unwritten shows
            out = cuda.device_array(c_shape, args.dtype)
            if fused:
                run = lambda: blas.gemm_bias_activation(  # noqa: E731
                    ta, tb, dA, dB, db, C, out, code, slope)
            else:
                run = lambda: blas.gemm(ta, tb, 1.0, dA, dB, 0.0, C)   # noqa: E731
            row = {"geometry": g, "product": name}
            if first_forward is None and fused:   # bound now: the loop rebinds the names
                first_forward = (g, functools.partial(blas.gemm_bias_activation, ta, tb, dA,
                                                      dB, db, C, out, code, slope))
            try:
                with launch_config(gemm=g):
                    run()
                    got = C.copy_to_host().astype(np.float64)
                    err = float(np.abs(got - want).max() / np.abs(want).max())
                    if fused:
                        a_want = ref.activation_forward(want, code, slope)
                        a_err = float(np.abs(out.copy_to_host() - a_want).max()
                                      / max(np.abs(a_want).max(), 1e-30))
                        err = max(err, a_err)
                    row["max_rel_error"] = err if np.isfinite(err) else float("inf")
                    if not simulated:
                        sec = median_gpu_seconds(run, cuda_events, args.repeat,
                                                 cuda.synchronize, inner=3)
                        row.update(ms=sec * 1e3, tflops=flops / sec / 1e12)
                        if name in vendor_s:
                            row["vs_cublas"] = vendor_s[name] / sec
            except Exception as exc:   # a geometry the device cannot launch, say
                row["error"] = f"{type(exc).__name__}: {exc}"
            results["rows"].append(row)
            def fmt(key, width, spec):
                return f"{row[key]:{width}{spec}}" if key in row else f"{'-':>{width}}"
            print(f"{g:>18s} {name:8s}{fmt('max_rel_error', 12, '.2e')}{fmt('ms', 9, '.3f')}"
                  f"{fmt('tflops', 9, '.2f')}{'':>10s}{fmt('vs_cublas', 8, '.2f')}"
                  + (f"  {row['error'][:60]}" if "error" in row else ""))
    ok = [r for r in results["rows"] if "vs_cublas" in r and r["max_rel_error"] < 1e-3]
    if ok:
        by_geometry = {}
        for r in ok:
            by_geometry.setdefault(r["geometry"], []).append(r["vs_cublas"])
        best = max(by_geometry, key=lambda g: statistics.fmean(by_geometry[g]))
        results["best"] = best
        print(f"best geometry by mean fraction of cuBLAS over the three products: {best} "
              f"({statistics.fmean(by_geometry[best]):.2f})")
    if args.profile and first_forward and not simulated:
        # one launch each of the first geometry's forward and cuBLAS's, alone between
        # profile_start and profile_stop: Nsight Compute with --profile-from-start off
        # reports exactly these two (benchmarks/gpu_check.sh's profile stage)
        with launch_config(gemm=first_forward[0]):
            cuda.synchronize()
            cuda.profile_start()
            first_forward[1]()
            if "forward" in vendor_fn:
                vendor_fn["forward"]()
            cuda.synchronize()
            cuda.profile_stop()
        print(f"profiled one forward product of {first_forward[0]} and of {results['vendor']}")
    with open(args.json, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
