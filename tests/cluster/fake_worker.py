"""A stand-in for `mendel worker` while the engine side has none: it honours the
operator/worker contract (spec snapshot, MLflow parent run, progress metrics, checkpoint
tags, termination message) without training anything.

Behaviour knobs (env): FAKE_STEPS (default 3), FAKE_STEP_SECONDS (default 0.5),
FAKE_EXIT_CODE (default 0), FAKE_LIBRARY_PROMPT (a prompt name: at the end, register an
experience library there, one experience per practice epoch, and tag the run with it, as
an ExperienceLibrary workload does).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

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
    prompt = os.environ.get("FAKE_LIBRARY_PROMPT")
    if client is not None and prompt:
        register_library(client, run_id, prompt, resource, steps)
    code = int(os.environ.get("FAKE_EXIT_CODE", "0"))
    summary = {"reason": "BudgetExhausted" if code == 0 else "Crashed", "steps": steps}
    Path(os.environ.get("MENDEL_TERMINATION_LOG", "/dev/termination-log")).write_text(
        json.dumps(summary))
    return code


def register_library(client: Any, run_id: str, prompt: str, resource: dict[str, Any],
                     steps: int) -> None:
    """The final library as a new prompt version, and the parent run's tags naming it."""
    from mendel.tracking import contract

    epochs = int(resource["spec"].get("practice", {}).get("epochs", 1))
    text = contract.render_experiences(
        [(f"G{i}", f"Lesson of epoch {i + 1}: check the units.") for i in range(epochs)])
    registered = client.register_prompt(prompt, text)
    client.set_tag(run_id, contract.TAG_LIBRARY_PROMPT_URI,
                   f"prompts:/{prompt}/{registered.version}")
    client.set_tag(run_id, contract.TAG_LIBRARY_SIZE, str(epochs))
    client.set_tag(run_id, contract.TAG_LIBRARY_VERSION, str(epochs * steps))  # steps per epoch


if __name__ == "__main__":
    sys.exit(main())
