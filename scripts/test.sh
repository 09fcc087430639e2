#!/usr/bin/env bash
# Install siamtool with its dev extras into .venv (created if missing) and run the test suite.
# TORCH_SPEC picks the torch build: users with a GPU install torch for their CUDA first and set
# TORCH_SPEC="" to keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC-"torch==2.14.1 torchvision==0.29.1"}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
if [ -n "$TORCH_SPEC" ] && ! python -c "import torch, torchvision" 2>/dev/null; then
  echo "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  python -m pip install -q $TORCH_SPEC
fi
python -m pip install -q -e ".[dev]"
ruff check .
python -m pytest "$@"
