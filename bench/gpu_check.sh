#!/usr/bin/env bash
# The GPU checks, as one command (run on a machine with CUDA, from the repo root, with torch installed):
#   BNVIZ_DATA=<folder with the four Fashion-MNIST files> OUT=<folder for results> bash bench/gpu_check.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/bnviz-gpu}; mkdir -p "$OUT"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
# issue 13 first: the captured CUDA-graph step against eager (alone and in the engine), then its speed targets
$PY -m pytest -q -p no:cacheprovider -m gpu tests/test_graphed_step.py 2>&1 | tail -5 | tee "$OUT/graphs.txt"
$PY bench/gpu_speed.py --device cuda --repeats ${REPEATS:-3} --json "$OUT/gpu_speed.json" 2>&1 | tee "$OUT/gpu_speed.txt"
# the layer and the engine on the GPU: buffers follow .to('cuda'), auto picks CUDA, a short run trains
$PY -m pytest -q -p no:cacheprovider tests/test_batchnorm.py tests/test_engine.py -x 2>&1 | tail -3 | tee -a "$OUT/tests.txt"
# the dashboard's engine in a child process (forkserver) on CUDA: trains there, snapshots and clones come back
$PY -m pytest -q -p no:cacheprovider tests/test_experiment_process.py -x 2>&1 | tail -3 | tee -a "$OUT/tests.txt"
# every test marked gpu (torch's nn.SyncBatchNorm runs on CUDA only: ours against it), and the new layers on CUDA
$PY -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tail -3 | tee -a "$OUT/tests.txt"
$PY -m pytest -q -p no:cacheprovider tests/test_norms.py tests/test_precise_bn.py -x 2>&1 | tail -3 | tee -a "$OUT/tests.txt"
$PY - <<'PYEOF' 2>&1 | tee "$OUT/process_cuda.txt"
import time
from bnviz.data import load_fashion_mnist
from bnviz.engine import Settings
from bnviz.experiment_process import ExperimentProcess, warm_up
warm_up()
exp = ExperimentProcess(load_fashion_mnist(), Settings(epochs=1, device="auto"))
t = time.monotonic(); exp.start(); assert exp.wait(300); wall = time.monotonic() - t
snap = exp.snapshot()
print("device in the child:", snap.device, "| status", snap.status, f"| {wall:.1f} s for one epoch of both lanes")
for lane in snap.lanes:
    print(f"  {lane.label}: step {lane.step}, test accuracy {lane.tables['epochs']['val_acc'][-1]:.3f}, "
          f"{lane.images_per_s:,.0f} images/s")
model = exp.clone_model(1)
print("clone on", next(model.parameters()).device, "| bn1.gamma[:3]", model.bn1.gamma.flatten()[:3].tolist())
exp.stop()
PYEOF
$PY -m bnviz train --epochs 1 --device auto --out "$OUT/cli" 2>&1 | tail -4 | tee "$OUT/cli.txt"
$PY bench/engine_bench.py --device cuda --steps 300 --repeats ${REPEATS:-3} --json "$OUT/engine_cuda.json" 2>&1 | tee "$OUT/engine_cuda.txt"
if [ -z "${SKIP_CORE:-}" ]; then  # the core benchmark (layer, pipelines): several minutes
  $PY bench/benchmark.py --device cuda --markdown --json "$OUT/bench_cuda.json" > "$OUT/bench_cuda.md" 2> "$OUT/bench_cuda.err"
  tail -40 "$OUT/bench_cuda.md"
fi
