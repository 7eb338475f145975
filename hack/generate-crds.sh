#!/usr/bin/env bash
# Regenerate crds/ from the pydantic models in mendel.api (the single source of truth).
# CI fails when the committed files differ from what this writes (tests/unit/api/test_crds.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m mendel.cli crds --output-dir crds
