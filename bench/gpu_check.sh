#!/usr/bin/env bash
# The GPU checks, as one command (run on a machine with CUDA, from the repo root, with torch installed):
#   BNVIZ_DATA=<folder with the four Fashion-MNIST files> OUT=<folder for results> bash bench/gpu_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/bnviz-gpu}; mkdir -p "$OUT"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
# the layer and the engine on the GPU: buffers follow .to('cuda'), auto picks CUDA, a short run trains
$PY -m pytest -q -p no:cacheprovider tests/test_batchnorm.py tests/test_engine.py -x 2>&1 | tail -3 | tee "$OUT/tests.txt"
$PY -m bnviz train --epochs 1 --device auto --out "$OUT/cli" 2>&1 | tail -4 | tee "$OUT/cli.txt"
$PY bench/engine_bench.py --device cuda --steps 300 --json "$OUT/engine_cuda.json" 2>&1 | tee "$OUT/engine_cuda.txt"
$PY bench/benchmark.py --device cuda --markdown --json "$OUT/bench_cuda.json" > "$OUT/bench_cuda.md" 2> "$OUT/bench_cuda.err"
tail -40 "$OUT/bench_cuda.md"
