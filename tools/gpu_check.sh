#!/usr/bin/env bash
# tools/gpu_check.sh - the GPU checks in one run, on a machine with an NVIDIA GPU:
# build with FASTBP_CUDA=1 in place, run the GPU tests (tests/test_cuda.py and the
# MLP(device="cuda") tests; they skip without a GPU elsewhere), then the step
# benchmark against the cuBLAS GEMM floor and PyTorch (bench/cuda_step.py, float32
# and a float64 subset). Logs go to $OUT (default ./gpu-out).
#
# Needs: nvcc, cuBLAS (toolkit or NVIDIA's pip wheels), Cython, NumPy, CuPy,
# pytest; PyTorch for its columns; scipy-openblas32 (fastbp's CPU BLAS) from pip
# or from wheels in .whl/ (a machine with no package index).
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
log() { printf '[gpu_check %s] %s\n' "$(date +%T)" "$*"; }

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
    | tee "$OUT/gpu.txt"
nvcc --version | tail -2
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}

log "build (FASTBP_CUDA=1, in place)"
# the copied tree's mtimes may be older than objects left by a previous run: the
# nvcc objects are cheap to redo, so they are always rebuilt
find build -path '*cuda*' -name '*.o' -delete 2>/dev/null; rm -f src/fastbp/_cuda*.so build/lib*/fastbp/_cuda*.so
FASTBP_CUDA=1 $PY setup.py -q build_ext --inplace -j 2 >"$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; log "BUILD FAILED"; exit 1; }
$PY -c "import fastbp, fastbp.cuda as c; print('fastbp.cuda available:', c.is_available()); fastbp.show_config()"

log "tests"
timeout 240 $PY -m pytest -q -p no:cacheprovider --benchmark-disable --tb=short -rs \
    tests/test_cuda.py tests/test_model.py -k "cuda or Cuda or gpu" 2>&1 | tee "$OUT/tests.log" | tail -25
log "tests exit ${PIPESTATUS[0]}"

if [[ -n "${GPU_CHECK_NO_BENCH:-}" ]]; then log "done (no benchmark)"; exit 0; fi
log "benchmark float32"
timeout 200 $PY bench/cuda_step.py --repeat 30 2>&1 | tee "$OUT/bench_f32.log"
log "benchmark float64 (book..large)"
timeout 60 $PY bench/cuda_step.py --dtype float64 --sizes book,small,medium,large --repeat 20 \
    2>&1 | tee "$OUT/bench_f64.log"
log "done"
