#!/usr/bin/env bash
# The GPU checks, as one command (run on a machine with CUDA, from the repo root, with torch installed):
#   BNVIZ_DATA=<folder with the four Fashion-MNIST files> OUT=<folder for results> bash bench/gpu_check.sh
# CLI_EAGER=1 also times the CLI with graphs off (about 45 s more). BUDGET=<seconds> (default 480) skips the steps
# that would start too late to finish; each step has its own timeout, so one that hangs costs only its own slot.
# Results go to $OUT step by step, so a cut-off run keeps them.
# On the workplace's lent GPU machines (Python 3.12, torch, no internet, no Plotly, segno or Streamlit) it ran as
#   pip install --no-index --no-deps --target /tmp/site-packages .whl/*.whl && PYTHONPATH=/tmp/site-packages \
#     BNVIZ_DATA=$PWD/.gpudata SKIP_CORE=1 REPEATS=3 BUDGET=400 bash bench/gpu_check.sh
# with .whl and .gpudata filled here by `bash bench/gpu_wheels.sh` (about 270 s without the page check).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
OUT=${OUT:-/tmp/bnviz-gpu}; mkdir -p "$OUT"
PY=${PY:-python3}
BUDGET=${BUDGET:-480}
REPEATS=${REPEATS:-3}
step() {  # step <seconds> <log> <command...>: run it under a timeout when at least that much budget is left
  local limit=$1 log=$2; shift 2
  if (( SECONDS + limit / 2 > BUDGET )); then echo "## skipped (budget): $*" | tee -a "$OUT/$log"; return; fi
  echo "## [$SECONDS s] $*" | tee -a "$OUT/$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$log"
  echo "## rc ${PIPESTATUS[0]} after $SECONDS s" | tee -a "$OUT/$log"
}
PT="$PY -m pytest -q -p no:cacheprovider --durations=5"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
# issue 13 first: the captured CUDA-graph step against eager (alone and in the engine), then its speed targets
step 150 graphs.txt $PT -m gpu tests/test_graphed_step.py
EAGER=(); [ "${CLI_EAGER:-0}" = 1 ] && EAGER=(--cli-eager)
step 300 gpu_speed.txt $PY bench/gpu_speed.py --device cuda --repeats "$REPEATS" "${EAGER[@]}" --json "$OUT/gpu_speed.json"
# the dashboard on the GPU (AppTest, no browser): the child trains at the GPU's rate with the page open, 1 Hz per view
if $PY -c "import streamlit" 2>/dev/null; then
  step 150 gpu_page.txt $PY bench/gpu_page.py --seconds 8 --json "$OUT/gpu_page.json"
else
  echo "## skipped: bench/gpu_page.py needs Streamlit (bash bench/gpu_wheels.sh fetches it)" | tee -a "$OUT/gpu_page.txt"
fi
# every other test marked gpu (the batch-statistics study on the device; torch's nn.SyncBatchNorm against ours)
step 150 tests.txt $PT -m gpu tests/test_studies.py tests/test_sync_batchnorm.py
# the dashboard's engine in a child process (forkserver) on CUDA: trains there, snapshots and clones come back
step 90 process_cuda.txt $PY - <<'PYEOF'
import time
from bnviz.data.fashion_mnist import load_fashion_mnist
from bnviz.live.engine import Settings
from bnviz.live.experiment_process import ExperimentProcess
from bnviz.live.processes import warm_up
warm_up()
exp = ExperimentProcess(load_fashion_mnist(), Settings(epochs=2, device="auto"))
t = time.monotonic(); exp.start(); assert exp.wait(300); wall = time.monotonic() - t
snap = exp.snapshot()
print("device in the child:", snap.device, "| status", snap.status, f"| {wall:.1f} s for two epochs of both lanes")
for lane in snap.lanes:
    print(f"  {lane.label}: step {lane.step}, test accuracy {lane.tables['epochs']['val_acc'][-1]:.3f}, "
          f"{lane.images_per_s:,.0f} images/s")
model = exp.clone_model(1)
print("clone on", next(model.parameters()).device, "| bn1.gamma[:3]", model.bn1.gamma.flatten()[:3].tolist())
exp.stop()
PYEOF
# the layer and the engine on the GPU: buffers follow .to('cuda'), auto picks CUDA, short runs train
step 200 tests.txt $PT -x tests/test_batchnorm.py tests/test_engine.py tests/test_norms.py tests/test_precise_bn.py
step 150 tests.txt $PT -x tests/test_experiment_process.py
step 120 engine_cuda.txt $PY bench/engine_bench.py --device cuda --steps 300 --repeats "$REPEATS" --json "$OUT/engine_cuda.json"
if [ -z "${SKIP_CORE:-}" ]; then  # the core benchmark (layer, pipelines): several minutes
  step 400 bench_cuda.txt $PY bench/benchmark.py --device cuda --markdown --json "$OUT/bench_cuda.json"
fi
echo "## done after $SECONDS s"
