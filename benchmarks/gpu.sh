#!/usr/bin/env bash
# GPU readiness in one prepared script (issue 23): on a CUDA machine without network, install
# the project from wheels carried in a folder, run the tests that need a GPU, and the step,
# fused and peer benchmarks with --device cuda into benchmarks/results/*_cuda.json.
#
#   where there is network (once):   bash benchmarks/gpu.sh download WHEELS_DIR
#   on the GPU machine:              bash benchmarks/gpu.sh run WHEELS_DIR [--quick]
#
# `download` fetches every wheel the project and its dev extra need, torch==2.13.0 built for
# CUDA (the cu126 index by default; TORCH_INDEX overrides it). `run` makes .venv-gpu from
# those wheels only (pip --no-index), checks that torch sees a GPU, runs the CUDA tests and
# the benchmarks, then prints the summary table of the _cuda results.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-}; wheels=${2:-}
[ -n "$what" ] && [ -n "$wheels" ] || { echo "usage: bash benchmarks/gpu.sh {download|run} WHEELS_DIR [--quick]" >&2; exit 2; }
PY=${PYTHON:-python3}
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu126}

case "$what" in
  download)
    mkdir -p "$wheels"
    "$PY" -m pip download -d "$wheels" "torch==2.13.0" --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple
    "$PY" -m pip download -d "$wheels" ".[dev]" setuptools wheel
    echo "wheels in $wheels: carry the folder and this checkout to the GPU machine" ;;
  run)
    quick=${3:-}
    VENV=.venv-gpu
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --no-index --find-links "$wheels" "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q --no-index --find-links "$wheels" -e ".[dev]"
    "$VENV/bin/python" -c "import sys, torch; ok = torch.cuda.is_available(); print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU:', torch.cuda.get_device_name(0) if ok else None); sys.exit(0 if ok else 3)" \
      || { echo "error: torch sees no GPU on this machine" >&2; exit 3; }
    # the tests that only run where torch sees a GPU (they skip elsewhere)
    "$VENV/bin/python" -m pytest -q -p no:randomly -n 0 \
      tests/test_api.py::test_train_intervention_on_a_gpu_matches_the_cpu \
      tests/test_benchmarks.py::test_step_variants_on_a_gpu_compute_the_cpus_loss
    for bench in step fused peer; do
      "$VENV/bin/python" benchmarks/run.py "$bench" --device cuda $quick
    done
    "$VENV/bin/python" benchmarks/run.py summary --device cuda $quick ;;
  *) echo "usage: bash benchmarks/gpu.sh {download|run} WHEELS_DIR [--quick]" >&2; exit 2 ;;
esac
