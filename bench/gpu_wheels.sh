#!/usr/bin/env bash
# Fetch, on this machine (which reaches the package registries), the wheels that bench/gpu_check.sh needs on a lent
# GPU machine (Python 3.12, torch; no internet, no Plotly, segno or Streamlit), into ./.whl, with the data into
# ./.gpudata (both ignored through .git/info/exclude), then print the device command that uses them.
#   bash bench/gpu_wheels.sh            # Plotly, narwhals, segno and Streamlit with what it needs there: ~35 MB
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
grep -qx '/.gpudata/' .git/info/exclude 2>/dev/null || echo '/.gpudata/' >> .git/info/exclude
PY=.venv/bin/python
version() { $PY -m pip show "$1" 2>/dev/null | awk '/^Version/{print $2}'; }
wanted=()
# what the engine's tests import, then Streamlit's requirements that the GPU image lacks (read there, 2026-11);
# not pydeck (11 MB, imported only by st.pydeck_chart): the working tree and these may travel 64 MiB in all
for name in plotly narwhals segno streamlit altair itsdangerous python-multipart starlette uvicorn websockets \
            watchdog jsonschema jsonschema-specifications referencing rpds-py; do
  wanted+=("$name==$(version "$name")")
done
mkdir -p .whl .gpudata
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux1_x86_64 -d .whl "${wanted[@]}"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -e ".gpudata/$f.gz" ] || cp "/usr/share/datasets/fashion-mnist/$f.gz" .gpudata/
done
du -sh .whl .gpudata
total=$(( $(du -sb .whl .gpudata | awk '{s += $1} END {print s}') + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) ))
echo "travels: $((total / 1048576)) MiB of the 64 MiB a device call takes"
cat <<'TXT'
device run (the folder must be named site-packages: Streamlit installed anywhere else starts in its
development mode, which refuses the server.port of .streamlit/config.toml; carry [".whl", ".gpudata"], timeout_s 480):
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-packages .whl/*.whl \
    && export PYTHONPATH=/tmp/site-packages || exit; BNVIZ_DATA=$PWD/.gpudata SKIP_CORE=1 REPEATS=3 BUDGET=400 bash bench/gpu_check.sh
TXT
