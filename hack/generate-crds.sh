#!/usr/bin/env bash
# Regenerate the CRDs from the pydantic models in mendel.api (the single source of truth):
#   crds/                           plain CRDs, for `kubectl apply` without Helm
#   charts/mendel/templates/crds/   the same CRDs as Helm templates (chart labels, keep policy),
#                                   so `helm upgrade` upgrades them (Helm never upgrades crds/)
# CI fails when the committed files differ from what this writes (tests/unit/api/test_crds.py,
# tests/chart/test_crds.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
t0=$(date +%s.%N)
"$PYTHON" -m mendel.cli crds --output-dir crds
"$PYTHON" - <<'PY'
from pathlib import Path

from mendel.api.crd import crds, render_chart_template

out = Path("charts/mendel/templates/crds")
out.mkdir(parents=True, exist_ok=True)
documents = crds()
for stale in set(p.name for p in out.glob("*.yaml")) - set(documents):
    (out / stale).unlink()
    print(f"removed {out / stale}")
for filename, document in documents.items():
    (out / filename).write_text(render_chart_template(document))
    print(f"wrote {out / filename}")
PY
echo "[generate-crds] done in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" >&2
