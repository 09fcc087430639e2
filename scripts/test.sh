#!/usr/bin/env bash
# Install siamtool with its dev extras and run the test suite, in the environment the README's Quick
# start made: the active virtual environment if there is one, else .venv (created if missing). torch is
# installed only when it is missing (TORCH_SPEC picks the build: users with a GPU install torch for their
# CUDA first, or set TORCH_SPEC="" to never install it here).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC-"torch==2.14.1 torchvision==0.29.1"}
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
echo "environment: $VIRTUAL_ENV"
python -m pip install -q --upgrade pip >/dev/null
if [ -n "$TORCH_SPEC" ] && ! python -c "import torch, torchvision" 2>/dev/null; then
  echo "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  python -m pip install -q $TORCH_SPEC
fi
python -m pip install -q -e ".[dev]"
python -m ruff check .
python -m pytest "$@"
