#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (issue 3): validate every CUDA kernel on
# the real GPU, time it against the CPU and cuBLAS, and sweep the product geometries.
#
#   bash benchmarks/gpu_check.sh                 # all stages: cache, compare, yardstick, tests, tune
#   bash benchmarks/gpu_check.sh compare tune    # only those stages, in that order
#
# Stages, each under its own time limit so that one slow stage cannot eat the others
# (90 + 180 + 300 + 240 + 150 s: more than one 600-second device call holds, so run
# "cache compare yardstick" and "tests tune" as two calls):
#   cache    benchmarks/cuda_first_step.py: a new process's first CUDA step with numba's
#            cache empty, then warm (target: under 1 s warm)
#   compare  python -m fastbp compare at 4096 (batch, inputs, outputs), float32: the
#            table for benchmarks/README.md (max error, ms, GFLOP/s, ratio to cuBLAS)
#   yardstick  benchmarks/gpu_yardstick.py: whole training steps, fastbp cuda against
#            PyTorch on the same GPU (batch on the GPU; from the host + loss.item())
#            and fastbp cpu, losses checked first (FP32, TF32 off)
#   tests    the CUDA tests, unchanged, on the real GPU (FASTBP_TEST_REAL_GPU=1), and
#            the compile check with the image's numba-cuda
#   breakdown  benchmarks/gpu_step_breakdown.py: each launch of a small network's step
#            timed alone (BREAKDOWN: the configs, default mnist,deep), for the plans
#            of BREAKDOWN_VARIANTS (default: the default one, the fused step, one
#            product geometry) and the fused step with FUSED_ROWS rows per block (4 16;
#            empty: none)
#   tune     benchmarks/gpu_tune.py: each candidate geometry against cuBLAS at 4096
#   profile  Nsight Compute (ncu) on one forward product of PROFILE_GEOMETRY and one of
#            cuBLAS at 4096: occupancy, warp stall reasons, issue slots (not run unless
#            named)
#   compare64  the compare stage in float64 (not run unless named)
# YARDSTICK_VARIANTS (default fused,fixed,nographs) names the yardstick's variant columns;
# PACK=1 also puts every output file into $OUT/all.tgz (see the end).
# TEST_FILES (default: the CUDA test files, the new paths first) is what the tests stage
# runs; TUNE_ARGS and YARDSTICK_ARGS are extra arguments of the tune and yardstick
# stages (a few --geometry, --only tiny,mnist: quicker; --schedule: a column with a new
# learning rate before every step).
# COMPARE_DEVICES (default cpu,cuda) is the compare stages' --devices: the test of this
# script sets it to cuda, since the CPU kernels of the copied tree below compile cold
# (numba's disk cache is per source path): 80 s of a test run for rows test_compare.py
# already checks.
#
# Everything goes to $OUT (the device tool's folder; ./gpu_check_out elsewhere): the
# JSON and text of each stage and summary.txt. Installs nothing and needs no network:
# the GPU image has numba-cuda, PyTorch and CuPy; fastbp runs from a copy of this
# tree laid out as installed (kernels/ as fastbp/kernels).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(cache compare yardstick tests tune)
summary="$OUT/summary.txt"
: > "$summary"
say() { echo "== $*" | tee -a "$summary"; }

say "gpu_check $(date -u +%FT%TZ) stages: ${stages[*]}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
    --format=csv 2>&1 | tee -a "$summary"
"$PY" - <<'EOF' 2>&1 | tee -a "$summary"
import importlib.metadata as md, platform
print("python", platform.python_version())
for name in ("numpy", "numba", "numba-cuda", "llvmlite", "torch", "cupy-cuda13x", "scipy",
             "pytest", "hypothesis"):
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} not installed")
EOF

# A copy of the tree laid out as installed (kernels/ as fastbp/kernels), run from its
# root: Python puts the working directory first on sys.path, so run from this checkout
# it would find fastbp/ without its kernels.
site=$(mktemp -d)
tar -C . --exclude=.git --exclude=.venv --exclude=.asv --exclude="$(basename "$OUT")" \
    -cf - . | tar -C "$site" -xf -
rm -rf "$site/fastbp/kernels"
mv "$site/kernels" "$site/fastbp/kernels"
cd "$site"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"   # scripts under benchmarks/ import fastbp
"$PY" -c "import fastbp, fastbp.kernels.cuda; from fastbp import device; print('fastbp', fastbp.__version__, 'from', fastbp.__file__, '|', device.cuda_status())" \
    2>&1 | tee -a "$summary"

status=0
for stage in "${stages[@]}"; do
    start=$(date +%s)
    case "$stage" in
    cache)
        timeout 90 "$PY" benchmarks/cuda_first_step.py --warm 3 --compare-serial --json "$OUT/cuda_first_step.json" \
            2>&1 | tee "$OUT/cuda_first_step.txt"
        rc=${PIPESTATUS[0]} ;;
    compare)
        timeout 180 "$PY" -m fastbp compare --devices "${COMPARE_DEVICES:-cpu,cuda}" \
            --json "$OUT/compare.json" 2>&1 \
            | tee "$OUT/compare.txt"
        rc=${PIPESTATUS[0]} ;;
    yardstick)
        timeout 300 "$PY" benchmarks/gpu_yardstick.py --budget 0.5 \
            --variants ${YARDSTICK_VARIANTS:-fused,fixed,nographs} ${YARDSTICK_ARGS:-} \
            --json "$OUT/gpu_yardstick.json" 2>&1 | tee "$OUT/gpu_yardstick.txt"
        rc=${PIPESTATUS[0]} ;;
    profile)
        # Nsight Compute on one forward product of PROFILE_GEOMETRY (default: the
        # default geometry) and one of cuBLAS: where each stalls (gpu_tune --profile)
        ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu \
              2>/dev/null | head -1)
        timeout 200 "${ncu:-ncu}" --profile-from-start off --section SpeedOfLight \
            --section Occupancy --section LaunchStats --section WarpStateStats \
            --section SchedulerStats --section InstructionStats \
            "$PY" benchmarks/gpu_tune.py --geometry "${PROFILE_GEOMETRY:-128,128,8,8,8}" \
            --repeat 3 --profile --json "$OUT/gpu_tune_profile.json" > "$OUT/ncu.txt" 2>&1
        rc=$?
        tail -5 "$OUT/ncu.txt" ;;
    compare64)
        timeout 180 "$PY" -m fastbp compare --dtype float64 \
            --devices "${COMPARE_DEVICES:-cpu,cuda}" --json "$OUT/compare64.json" \
            2>&1 | tee "$OUT/compare64.txt"
        rc=${PIPESTATUS[0]} ;;
    tests)
        # addopts replaced: the GPU image may lack pytest-benchmark and pytest-xdist,
        # whose options pyproject's addopts passes
        # -rfE: the failures' summary lines come first, before the tracebacks
        FASTBP_TEST_REAL_GPU=1 timeout 240 "$PY" -m pytest -q -rfE -p no:cacheprovider \
            -o addopts=--import-mode=importlib ${TEST_FILES:-\
            tests/test_cuda_graphs.py tests/test_cuda_split.py tests/test_cuda_plan.py \
            tests/test_device_data.py \
            tests/test_cuda_network.py tests/test_cuda_clipping.py \
            tests/test_cuda_kernels.py tests/test_kernel_registry.py \
            tests/test_compare.py \
            tests/test_cuda_compile.py} \
            > "$OUT/pytest.txt" 2>&1
        rc=$?
        tail -25 "$OUT/pytest.txt" ;;
    breakdown)
        # each launch of a small step's plan timed alone: the default plan (fused),
        # without the fused step, and with every product on the default geometry too
        rc=0
        for variant in ${BREAKDOWN_VARIANTS:-default fused fixed}; do
            timeout 100 "$PY" benchmarks/gpu_step_breakdown.py \
                --only "${BREAKDOWN:-mnist,deep}" --variant "$variant" \
                --json "$OUT/gpu_step_breakdown_$variant.json" 2>&1 \
                | tee "$OUT/gpu_step_breakdown_$variant.txt"
            [ "${PIPESTATUS[0]}" -ne 0 ] && rc=1
        done
        for rows in ${FUSED_ROWS-4 16}; do   # the fused step, other rows per block than 8
            FASTBP_CUDA_FUSED_ROWS=$rows timeout 100 "$PY" benchmarks/gpu_step_breakdown.py \
                --only "${BREAKDOWN:-mnist,deep}" --variant fused \
                --json "$OUT/gpu_step_breakdown_rows$rows.json" \
                2>&1 | tee "$OUT/gpu_step_breakdown_rows$rows.txt"
            [ "${PIPESTATUS[0]}" -ne 0 ] && rc=1
        done ;;
    tune)
        # TUNE_ARGS: e.g. "--geometry 128,128,8,8,8 --geometry 128,128,8,8,8,2" (a few)
        timeout 150 "$PY" benchmarks/gpu_tune.py ${TUNE_ARGS:-} --json "$OUT/gpu_tune.json" \
            2>&1 | tee "$OUT/gpu_tune.txt"
        rc=${PIPESTATUS[0]} ;;
    *)
        echo "unknown stage: $stage (cache, compare, yardstick, breakdown, tests, tune,"\
             "profile, compare64)"; rc=2 ;;
    esac
    say "$stage: exit $rc after $(( $(date +%s) - start )) s"
    [ "$rc" -ne 0 ] && status=1
done
cat "$summary"
# PACK=1: every file of $OUT also in one archive, all.tgz (the device tool brings back
# at most 8 files; a run of several stages writes more)
if [ -n "${PACK:-}" ]; then
    tar -C "$OUT" --exclude=all.tgz -czf "$site/all.tgz" . && mv "$site/all.tgz" "$OUT/"
fi
exit $status
