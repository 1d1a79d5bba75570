#!/usr/bin/env bash
# One entry point for a fresh clone: sets up .venv if needed, then runs a command.
#   bash run.sh train [hydra overrides]   train on the embedded default (toy model)
#   bash run.sh evaluate [overrides]      evaluate an export
#   bash run.sh test [pytest args]        run the whole test suite
#   bash run.sh docs [serve|build|tutorial]  serve the docs site on localhost:8000 (default), build
#                                         it into site/ (strict), or execute docs/tutorial.ipynb in place
#   bash run.sh setup                     only set up
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=.venv
STAMP="$VENV/.installed"
want="$(cat pyproject.toml run.sh | sha256sum | cut -d' ' -f1)"

setup() {
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then return 0; fi
  echo "[setup] creating $VENV with $("$PY" --version) (first run takes about two minutes)" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # torch first and pinned: an unpinned resolve would pull several GB of CUDA wheels.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$STAMP"
}

cmd=${1:-train}; shift || true
setup
export WANDB_SILENT=${WANDB_SILENT:-true}
case "$cmd" in
  setup) ;;
  train) exec "$VENV/bin/python" train.py "$@" ;;
  evaluate) exec "$VENV/bin/python" evaluate.py "$@" ;;
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  docs)
    export NO_MKDOCS_2_WARNING=1
    sub=${1:-serve}; shift || true
    case "$sub" in
      serve) exec "$VENV/bin/mkdocs" serve "$@" ;;
      build) exec "$VENV/bin/mkdocs" build --strict "$@" ;;
      tutorial) exec "$VENV/bin/python" docs/execute_tutorial.py "$@" ;;
      *) echo "usage: bash run.sh docs [serve|build|tutorial] [args]" >&2; exit 2 ;;
    esac ;;
  *) echo "usage: bash run.sh {train|evaluate|test|docs|setup} [args]" >&2; exit 2 ;;
esac
