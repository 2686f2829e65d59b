"""What ptxas makes of each CUDA matrix-product kernel, without a GPU.

For every variant of ``kernels/cuda/blas.py`` that the layers launch (forward with the
bias-activation epilogue, the dW and dX products), both dtypes, and each geometry given,
it compiles the kernel to PTX with numba-cuda, assembles it with ptxas for the target
(sm_90 by default) and prints registers per thread, stack frame, spill bytes, shared
memory, and the multiply-adds in the PTX. A non-zero stack frame means a register array
(the accumulators) went to local memory; spills mean too many registers. Neither needs
a GPU, so geometries can be screened here before a GPU session times them
(``benchmarks/gpu_tune.py``).

Needs numba-cuda with its NVVM (``pip install -e ".[cuda]"``) and, for registers
and spills, a ptxas (``pip install "nvidia-cuda-nvcc==13.*"`` or a CUDA toolkit); run
it with the CUDA simulator off:

    python benchmarks/cuda_resources.py
    python benchmarks/cuda_resources.py --geometry 128,128,8,8,8 --geometry 64,64,16,4,4
    python benchmarks/cuda_resources.py --all --check --no-ptxas   # the test suite's check

``--all`` compiles every other kernel of kernels/cuda too: the simulator runs kernels as
Python and types nothing, so this is the one check, short of a GPU, that they compile.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types as pytypes


def find_ptxas(given=None):
    """ptxas from --ptxas, PATH, or the pip package nvidia-cuda-nvcc."""
    if given:
        return given
    candidates = [shutil.which("ptxas") or ""]
    try:
        import nvidia
        for root in nvidia.__path__:
            candidates += sorted(glob.glob(os.path.join(root, "*", "bin", "ptxas")))
    except ImportError:
        pass
    # prefer the newest: NVVM's PTX version must be one ptxas knows
    found = [c for c in candidates if c and os.access(c, os.X_OK)]
    return found[-1] if found else None


def variants():
    """(name, trans_a, trans_b, epilogue, activation code) of the products linear.py
    launches; the forward with a few activations."""
    from fastbp.kernels.cuda import blas
    from fastbp.kernels import codes
    return [(f"fwd +b {name}", False, True, blas.BIAS_ACTIVATION, codes.ACTIVATION_CODES[name])
            for name in ("identity", "relu", "tanh", "gelu")] + [
            ("dW = dS.T@X", True, False, blas.STORE, 0),
            ("dX = dS@W", False, False, blas.STORE, 0),
            ("C = a*A@B + b*C", False, False, blas.SCALE, 0)]


def other_kernels(dtype):
    """(name, kernel, argument types) of every other kernel in kernels/cuda, with the
    argument types their launchers pass (float() and bool() scalars, int64 codes).
    tests/test_cuda_compile.py fails when a kernel of kernels/cuda is missing here."""
    from numba import types
    from fastbp.kernels.cuda import activations, jacobian, linear, losses, optim, plan, rows
    f = getattr(types, dtype)
    m2, v1 = types.Array(f, 2, "C"), types.Array(f, 1, "C")
    p1 = types.Array(types.float64, 1, "C")
    labels = types.Array(types.int64, 1, "C")
    counter = types.Array(types.int32, 1, "C")   # the updates' non-finite count
    i64, f64, b = types.int64, types.float64, types.boolean
    tile = 16                 # the GPU default of _launch.config.tile
    block = tile * tile
    return [
        ("activation_forward", activations._activation_forward_kernel, (m2, m2, i64, f64)),
        ("activation_backward", activations._activation_backward_kernel,
         (m2, m2, m2, m2, i64, f64)),
        ("bias_activation", linear._bias_activation_kernel, (m2, v1, m2, i64, f64)),
        ("backward_bias (dS, db)", linear._backward_bias(tile), (m2, m2, m2, m2, v1, i64, f64)),
        # labels are int64 for every loss (an empty array where targets are read)
        ("loss", losses._loss_kernel(block), (i64, m2, labels, m2, m2, p1)),
        ("sum_squares", optim._sum_squares_kernel(block), (v1, p1)),
        ("sgd", optim._sgd_kernel, (counter, v1, v1, f64)),
        # the clipping factor: a one-element float64 device array (p1) the updates read
        ("clip_factor", optim._clip_factor_kernel, (p1, i64, f64, p1)),
        ("sgd_weight_decay", optim._sgd_weight_decay_kernel,
         (counter, v1, v1, p1, f64, f64)),
        ("sgd_momentum", optim._sgd_momentum_kernel,
         (counter, v1, v1, v1, p1) + (f64,) * 4 + (b, b)),
        ("adam", optim._adam_kernel, (counter,) + (v1,) * 5 + (p1,) + (f64,) * 7 + (b,)),
        ("rmsprop", optim._rmsprop_kernel, (counter,) + (v1,) * 5 + (p1,) + (f64,) * 5 + (b,)),
        # fit's shuffle of data on the GPU: rows of X or targets, and of int64 labels
        ("take_rows", rows._take_rows_2d, (m2, labels, m2)),
        ("take_rows (1-D)", rows._take_rows_1d, (labels, labels, labels)),
        ("divide (all-reduced gradients)", optim._divide_kernel, (v1, f64)),
        # the launch plan's loss ring: partials, nblocks, counters, ring, slot, capacity
        ("record_step", plan._record_step, (p1, i64, counter, counter, p1, i64, i64)),
        ("check_inputs", plan._check_inputs, (m2, labels, m2, i64, b, counter)),
        # the jacobian's one-hot seed and its copy of dX into J[:, k, :]
        ("one_hot", jacobian._one_hot, (m2, i64)),
        ("store_column", jacobian._store_column, (m2, types.Array(f, 3, "C"), i64)),
    ]


def resources(geometry, dtype, trans_a, trans_b, epilogue, code, cc, ptxas):
    from numba import types
    from fastbp.kernels.cuda import blas
    kernel = blas._kernel(geometry, dtype, trans_a, trans_b, epilogue, code)
    f = getattr(types, dtype)
    m2, v1 = types.Array(f, 2, "C"), types.Array(f, 1, "C")
    f64 = types.float64   # slope, alpha, beta
    return compiled(kernel, (m2, m2, m2, v1, m2, f64, f64, f64), cc, ptxas)


def compiled(kernel, sig, cc, ptxas):
    """What ``kernel`` compiles to for the argument types ``sig``: the PTX's local-memory
    bytes and multiply-adds, and, when ptxas is given, its registers, stack, spills and
    shared memory (None without ptxas)."""
    from numba import cuda
    options = getattr(kernel, "targetoptions", {})   # the kernel's own, e.g. launch_bounds
    ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=cc,
                              launch_bounds=options.get("launch_bounds"))
    result = {"fma": len(re.findall(r"\bfma\.rn\.f(32|64)\b", ptx)),
              "ptx_local": sum(int(n) for n in re.findall(r"\.local[^;]*\[(\d+)\]", ptx)),
              "registers": None, "stack": None, "spill_st": None, "spill_ld": None,
              "smem": None}
    if ptxas is None:
        return result
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as fh:
            fh.write(ptx)
        arch = f"sm_{cc[0]}{cc[1]}"
        out = subprocess.run([ptxas, f"-arch={arch}", "-v", path, "-o",
                              os.path.join(tmp, "k.cubin")], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"ptxas failed: {out.stderr.strip()}")
    info = out.stderr

    def grab(pattern):
        hit = re.search(pattern, info)
        return int(hit.group(1)) if hit else 0
    result.update(registers=grab(r"Used (\d+) registers"),
                  stack=grab(r"(\d+) bytes stack frame"),
                  spill_st=grab(r"(\d+) bytes spill stores"),
                  spill_ld=grab(r"(\d+) bytes spill loads"),
                  smem=grab(r"(\d+) bytes smem"))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometry", action="append", default=[],
                        help="bm,bn,bk,tm,tn[,min_blocks] (repeatable; default: the GPU "
                             "defaults)")
    parser.add_argument("--dtype", action="append", choices=["float32", "float64"])
    parser.add_argument("--cc", default="9.0", help="compute capability (9.0)")
    parser.add_argument("--ptxas", help="path of ptxas (default: PATH or nvidia-cuda-nvcc)")
    parser.add_argument("--no-ptxas", action="store_true",
                        help="PTX only: no registers or spills, nothing beyond NVVM needed")
    parser.add_argument("--all", action="store_true",
                        help="also compile every other CUDA kernel (elementwise, losses, "
                             "optimizers): a check that all of them compile for the GPU, "
                             "which the simulator cannot give")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a product kernel keeps anything in local memory "
                             "(PTX local arrays; with ptxas also stack or spills)")
    args = parser.parse_args(argv)
    import numba
    if numba.config.ENABLE_CUDASIM:
        sys.exit("cuda_resources: the CUDA simulator is on; unset NUMBA_ENABLE_CUDASIM")
    ptxas = None if args.no_ptxas else find_ptxas(args.ptxas)
    if ptxas is None and not args.no_ptxas:
        sys.exit('cuda_resources: no ptxas found; pip install "nvidia-cuda-nvcc==13.*", '
                 "pass --ptxas, or --no-ptxas for PTX only")
    # Compiling device functions asks the current device for its compute capability;
    # with no GPU, answer with the target's.
    cc = tuple(int(v) for v in args.cc.split("."))
    import numba.cuda.dispatcher as dispatcher
    if not numba.cuda.is_available():
        dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=cc)
    from fastbp.kernels.cuda import _launch
    dtypes = args.dtype or ["float32", "float64"]
    print(f"ptxas: {ptxas or 'not used (PTX only)'}; target sm_{cc[0]}{cc[1]}")
    print(f"{'dtype':8s}{'geometry':>18s}  {'kernel':22s}{'regs':>5s}{'stack':>6s}"
          f"{'spill st/ld':>12s}{'smem':>7s}{'fma':>5s}{'ptx local':>10s}")
    failures = []
    for dtype in dtypes:
        geometries = ([_launch._parse_gemm(g) for g in args.geometry]
                      or [_launch.GPU_GEMM[dtype]])
        for geometry in geometries:
            for name, trans_a, trans_b, epilogue, code in variants():
                r = resources(geometry, dtype, trans_a, trans_b, epilogue, code, cc, ptxas)
                where = ",".join(map(str, geometry))
                show(dtype, where, name, r)
                if r["ptx_local"] or r["stack"] or r["spill_st"]:
                    failures.append(f"{dtype} {where} {name}")
        if args.all:
            for name, kernel, sig in other_kernels(dtype):
                show(dtype, "", name, compiled(kernel, sig, cc, ptxas))
    if args.check and failures:
        print("local memory in: " + "; ".join(failures))
        return 1
    return 0


def show(dtype, geometry, name, r):
    def cell(key, width):
        return f"{'-' if r[key] is None else r[key]:>{width}}"
    spills = "-" if r["spill_st"] is None else f"{r['spill_st']}/{r['spill_ld']}"
    print(f"{dtype:8s}{geometry:>18s}  {name:22s}{cell('registers', 5)}{cell('stack', 6)}"
          f"{spills:>12s}{cell('smem', 7)}{cell('fma', 5)}{cell('ptx_local', 10)}")


if __name__ == "__main__":
    sys.exit(main())
