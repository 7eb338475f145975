"""QDEvolution through `mendel worker`, as a driver Pod runs it, with an evaluator under
which mixtures of experts score higher than the experts (so children become elites):
a finished run whose budget is raised continues from its checkpoint on a fresh disk and
ends where one longer run ends, and two torchrun processes end where one process ends."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from tests.integration.test_worker import run_worker
from tests.support.tiny_models import save_family

from mendel.tracking import contract

pytestmark = pytest.mark.slow

SCORER = Path(__file__).with_name("mixture_score.py")
MIXTURES = {"a": {"a": 0.6, "b": 0.4}, "b": {"b": 0.6, "a": 0.4}}


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> tuple[dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("family")
    paths = save_family(root / "models", ["a", "b"])
    config = root / "scorer.json"
    config.write_text(json.dumps({"base": str(paths["base"]),
                                  "experts": {n: str(paths[n]) for n in "ab"},
                                  "mixtures": MIXTURES}))
    return paths, config


def resource(family, name: str, generations: int, **spec: object) -> dict:
    paths, config = family
    command = [sys.executable, str(SCORER), "{model}", "{task}", str(config)]
    tasks = [{"name": n, "expert": n, "descriptor": {"bins": 5},
              "evaluator": {"type": "command", "command": command, "timeoutSeconds": 60}}
             for n in "ab"]
    body = {"baseModel": {"uri": str(paths["base"])},
            "experts": [{"name": n, "uri": str(paths[n])} for n in "ab"],
            "tasks": tasks, "precision": "float32", "seed": 5,
            "budget": {"generations": generations}, "checkpoint": {"everyGenerations": 1},
            "resources": {"driver": {"gpus": 0}}, **spec}
    return {"apiVersion": "mendel.dev/v1alpha1", "kind": "QDEvolution",
            "metadata": {"name": name, "namespace": "team"}, "spec": body}


def final_state(work_dir: Path, generations: int) -> dict:
    return json.loads((work_dir / "checkpoints" / f"gen-{generations:06d}" / "state.json")
                      .read_text())


def decisions(state: dict) -> dict:
    """What the run decided: archives and kept genomes (scores as exact floats)."""
    return {"archives": state["archives"], "genomes": state["genomes"],
            "failures": state["failures"]}


def child_elites(state: dict) -> set[str]:
    return {elite["genome"] for archive in state["archives"].values()
            for elite in archive["cells"].values() if elite["genome"].startswith("g")}


def test_a_raised_budget_resumes_the_finished_run_from_its_checkpoint(tmp_path, family):
    database = tmp_path / "mlflow.db"
    code, first = run_worker(tmp_path, resource(family, "raise", 2), MENDEL_UID="uid-raise",
                             MENDEL_WORK_DIR=str(tmp_path / "pod-1"))
    assert code == 0, first
    assert first["generations"] == 2 and first["resumedFrom"] is None
    code, raised = run_worker(tmp_path, resource(family, "raise", 5), MENDEL_UID="uid-raise",
                              MENDEL_WORK_DIR=str(tmp_path / "pod-2"))  # a fresh disk
    assert code == 0, raised
    assert raised["runId"] == first["runId"]
    assert raised["resumedFrom"] == "gen-000002" and raised["generations"] == 5
    client = MlflowClient(f"sqlite:///{database}")
    steps = [m.step for m in client.get_metric_history(raised["runId"],
                                                       contract.METRIC_PROGRESS_STEP)]
    assert sorted(steps) == [0, 1, 2, 3, 4, 5]  # no generation run twice

    code, single = run_worker(tmp_path, resource(family, "single", 5), MENDEL_UID="uid-single",
                              MENDEL_WORK_DIR=str(tmp_path / "pod-3"))
    assert code == 0, single
    resumed, uninterrupted = final_state(tmp_path / "pod-2", 5), final_state(tmp_path / "pod-3", 5)
    assert decisions(resumed) == decisions(uninterrupted)
    assert raised["final"]["scores"] == single["final"]["scores"]

    assert child_elites(uninterrupted), "merged children should have entered the archives"
    experts = uninterrupted["expertScores"]
    assert any(raised["best"][task] > max(s[task] for s in experts.values()) for task in "ab")


def test_two_torchrun_processes_end_where_one_process_ends(tmp_path, family):
    batch = {"algorithm": {"childrenPerGeneration": 3}}
    code, one = run_worker(tmp_path, resource(family, "one", 3, **batch),
                           MENDEL_UID="uid-one", MENDEL_WORK_DIR=str(tmp_path / "pod-1"))
    assert code == 0, one
    two_gpus = {**batch, "resources": {"driver": {"gpus": 2}}}  # on CPU: two gloo processes
    code, two = run_worker(tmp_path, resource(family, "two", 3, **two_gpus),
                           MENDEL_UID="uid-two", MENDEL_WORK_DIR=str(tmp_path / "pod-2"))
    assert code == 0, two
    assert (one["processes"], two["processes"]) == (1, 2)
    one_state, two_state = final_state(tmp_path / "pod-1", 3), final_state(tmp_path / "pod-2", 3)
    assert decisions(two_state) == decisions(one_state)
    assert two["final"]["scores"] == one["final"]["scores"]
    assert any("-" in g for g in child_elites(two_state)), "a batch's later child is an elite"

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the driver replayed rank 0
    steps = [m.step for m in client.get_metric_history(two["runId"],
                                                       contract.METRIC_PROGRESS_STEP)]
    assert sorted(steps) == [0, 1, 2, 3]
    tags = client.get_run(two["runId"]).data.tags
    assert tags[contract.TAG_CHECKPOINT_URI].endswith("/gen-000003")
    final = client.get_logged_model(two["final"]["modelId"])
    assert final.tags.get("mendel.genome_id") == "final"
    children = client.search_logged_models(experiment_ids=[final.experiment_id],
                                           filter_string="name LIKE 'genome-g%'")
    assert {m.tags["mendel.genome_id"] for m in children} >= child_elites(two_state)
