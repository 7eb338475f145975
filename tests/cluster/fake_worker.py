"""A stand-in for `mendel worker` while the engine side has none: it honours the
operator/worker contract (spec snapshot, MLflow parent run, progress metrics, checkpoint
tags, termination message) without training anything.

Behaviour knobs (env): FAKE_STEPS (default 3), FAKE_STEP_SECONDS (default 0.5),
FAKE_EXIT_CODE (default 0).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml


def main() -> int:
    spec_path = Path(os.environ["MENDEL_SPEC_PATH"])
    resource = yaml.safe_load(spec_path.read_text())
    assert resource["metadata"]["uid"] == os.environ["MENDEL_UID"]
    steps = int(os.environ.get("FAKE_STEPS", "3"))
    pause = float(os.environ.get("FAKE_STEP_SECONDS", "0.5"))
    run_id = os.environ.get("MENDEL_RUN_ID")
    client = None
    if run_id and os.environ.get("MLFLOW_TRACKING_URI"):
        from mlflow import MlflowClient

        client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        client.log_metric(run_id, "progress/total", steps, step=0)
    for step in range(1, steps + 1):
        time.sleep(pause)
        if client is not None:
            client.log_metric(run_id, "progress/step", step, step=step)
            client.set_tag(run_id, "mendel.checkpoint.uri", f"/tmp/ckpt/{step}")
            client.set_tag(run_id, "mendel.checkpoint.step", str(step))
    code = int(os.environ.get("FAKE_EXIT_CODE", "0"))
    summary = {"reason": "BudgetExhausted" if code == 0 else "Crashed", "steps": steps}
    Path(os.environ.get("MENDEL_TERMINATION_LOG", "/dev/termination-log")).write_text(
        json.dumps(summary))
    return code


if __name__ == "__main__":
    sys.exit(main())
