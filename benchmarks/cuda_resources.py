"""What ptxas makes of each CUDA matrix-product kernel, without a GPU.

For every variant of ``kernels/cuda/blas.py`` that the layers launch (forward with the
bias-activation epilogue, the dW and dX products), both dtypes, and each geometry given
(default: every geometry a product may run on, ``_launch.tiers``; on the smaller ones
the tanh forward and dW and, on the smallest, the split-k products), it compiles the kernel to PTX with numba-cuda, assembles it with ptxas for the target
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


def variants(tier=0, last=True):
    """(name, trans_a, trans_b, epilogue, activation code) of the product variants the
    registered kernels launch (fastbp.kernels.registry: linear_forward's forward with a
    few activations, linear_backward's dW and dX) on the ``tier``-th geometry of
    ``_launch.tiers``: every one on the first; on the smaller ones (where only small
    products run) the tanh forward and dW, and on the ``last`` one the split products
    too. The accumulators, which the check is about, are the same in every variant of
    a geometry; the tanh epilogue is the one that stores and reloads (blas.py), and the
    first tier's rows check the others compile. About 0.6 s a row, in the test suite."""
    from fastbp.kernels import codes, registry
    from fastbp.kernels.cuda import blas
    chosen = [p for p in registry.products()
              if tier == 0 or p.label in ("fwd +b tanh", "dW = dS.T@X")]
    if tier > 0 and last:
        chosen += registry.SPLIT_PRODUCTS
    return [(p.label, p.trans_a, p.trans_b, getattr(blas, p.epilogue),
             codes.ACTIVATION_CODES[p.activation]) for p in chosen]


def other_kernels(dtype):
    """(name, kernel, argument types) of every other CUDA kernel, as the registry lists
    them (fastbp.kernels.registry.cuda_compiled: the registered kernels' own and those
    launched elsewhere, with the argument types their launchers pass).
    tests/test_cuda_compile.py fails when a kernel of kernels/cuda is missing there."""
    from fastbp.kernels import registry
    return [(c.label, c.kernel(), registry.argument_types(c.signature, dtype))
            for c in registry.cuda_compiled()]


def resources(geometry, dtype, trans_a, trans_b, epilogue, code, cc, ptxas):
    from numba import types
    from fastbp.kernels.cuda import blas
    kernel = blas._kernel(geometry, dtype, trans_a, trans_b, epilogue, code)
    f = getattr(types, dtype)
    m2, v1 = types.Array(f, 2, "C"), types.Array(f, 1, "C")
    out = types.Array(f, 3, "C") if epilogue == blas.SPLIT else m2   # the workspace
    f64 = types.float64   # slope, alpha, beta; then kc, k per block
    return compiled(kernel, (m2, m2, m2, v1, out, f64, f64, f64, types.int64), cc, ptxas)


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
                        help="exit 1 if a kernel keeps anything in local memory "
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
                      or list(_launch.tiers(dtype)))
        for tier, geometry in enumerate(geometries):
            for name, trans_a, trans_b, epilogue, code in variants(
                    tier, tier == len(geometries) - 1):
                r = resources(geometry, dtype, trans_a, trans_b, epilogue, code, cc, ptxas)
                where = ",".join(map(str, geometry))
                show(dtype, where, name, r)
                if r["ptx_local"] or r["stack"] or r["spill_st"]:
                    failures.append(f"{dtype} {where} {name}")
        if args.all:
            for name, kernel, sig in other_kernels(dtype):
                r = compiled(kernel, sig, cc, ptxas)
                show(dtype, "", name, r)
                if r["ptx_local"] or r["stack"] or r["spill_st"]:   # e.g. fused_step's
                    failures.append(f"{dtype} {name}")               # row accumulators
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
