#!/usr/bin/env bash
# Set up everything Mendel's tests and demos need, from a clean clone on a fresh machine:
#   1. a virtual environment in .venv with Mendel and its operator, worker and dev extras
#      (torch pinned to the CPU build first, so nothing pulls a multi-GB CUDA build);
#   2. the local Kubernetes control plane for the cluster tests (hack/control-plane.sh).
# Idempotent: a second run reuses the environment and the cached control-plane binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${MENDEL_TORCH_VERSION:-2.13.0}

log() { printf '[setup] %s\n' "$*" >&2; }

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
log "installing torch==$TORCH_VERSION and mendel[dev]"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==$TORCH_VERSION"
.venv/bin/python -m pip install --quiet -e '.[dev]'

if [[ ${MENDEL_SKIP_CONTROL_PLANE:-0} != 1 ]]; then
  log "building (or reusing) the local control plane"
  hack/control-plane.sh install
fi
log "done: run the tests with  .venv/bin/python -m pytest"
