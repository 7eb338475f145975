#!/usr/bin/env bash
# The main job on a laptop CPU: CycleQD over three tiny skill experts, no cluster needed.
#   1. trains the tiny base model and three experts once (~2.5 minutes; cached in
#      $MENDEL_TINY_DIR, default /tmp/mendel-tiny, where examples/qdevolution-small.yaml
#      expects them);
#   2. `mendel run -f examples/qdevolution-small.yaml` (~1 minute): 300 generations against
#      a local MLflow store in ./.mendel, final model registered as tiny-skills-cycleqd;
#   3. `mendel lineage` prints the final model's ancestry back to the experts.
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=${MENDEL_TINY_DIR:-/tmp/mendel-tiny}
PY=.venv/bin/python

if [[ ! -f $TINY/prepare.json ]]; then
  "$PY" benchmarks/skill_acquisition/prepare.py --out "$TINY" --size tiny
fi
if [[ $TINY != /tmp/mendel-tiny ]]; then
  manifest=$(mktemp --suffix .yaml)
  sed "s|/tmp/mendel-tiny|$TINY|g" examples/qdevolution-small.yaml > "$manifest"
else
  manifest=examples/qdevolution-small.yaml
fi
.venv/bin/mendel run -f "$manifest"
.venv/bin/mendel lineage models:/tiny-skills-cycleqd@candidate
