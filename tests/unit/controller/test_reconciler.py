"""The reconciler's pure helpers and the operator-side MLflow run management (fake client)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mendel.controller.runs.reconciler import status_patch
from mendel.tracking import contract
from mendel.tracking import runs as tracking


@pytest.mark.parametrize(("old", "new", "patch"), [
    pytest.param({}, {"phase": "Pending"}, {"phase": "Pending"}, id="from-empty"),
    pytest.param({"phase": "Running"}, {"phase": "Running"}, {}, id="unchanged"),
    pytest.param({"completionTime": "t", "phase": "Succeeded"}, {"phase": "Running"},
                 {"completionTime": None, "phase": "Running"}, id="removed-key-nulled"),
    pytest.param({"progress": {"step": 1, "estimatedRemainingSeconds": 9}},
                 {"progress": {"step": 2}},
                 {"progress": {"step": 2, "estimatedRemainingSeconds": None}}, id="nested"),
])
def test_status_patch_is_a_merge_patch(old: dict[str, Any], new: dict[str, Any],
                                       patch: dict[str, Any]) -> None:
    assert status_patch(old, new) == patch


class FakeMlflow:
    """Just enough of MlflowClient for tracking.runs."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.runs: dict[str, Any] = {}
        self.experiments: dict[str, str] = {}
        self.experiment_tags: dict[str, dict[str, str]] = {}

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("connection refused")

    def get_experiment_by_name(self, name: str) -> Any:
        self._check()
        if name not in self.experiments:
            return None
        return SimpleNamespace(experiment_id=self.experiments[name], lifecycle_stage="active",
                               tags=self.experiment_tags[name])

    def create_experiment(self, name: str, tags: dict[str, str] | None = None) -> str:
        self.experiments[name] = str(len(self.experiments) + 1)
        self.experiment_tags[name] = dict(tags or {})
        return self.experiments[name]

    def search_runs(self, experiments: list[str], filter_string: str, **_: Any) -> list[Any]:
        self._check()
        uid = filter_string.split("'")[1]
        return [r for r in self.runs.values() if r.data.tags.get(contract.TAG_UID) == uid]

    def create_run(self, experiment_id: str, tags: dict[str, str], run_name: str) -> Any:
        run_id = f"{len(self.runs):032d}"
        run = SimpleNamespace(
            info=SimpleNamespace(run_id=run_id, experiment_id=experiment_id, status="RUNNING"),
            data=SimpleNamespace(metrics={}, tags=dict(tags)))
        self.runs[run_id] = run
        return run

    def get_run(self, run_id: str) -> Any:
        self._check()
        return self.runs[run_id]

    def set_terminated(self, run_id: str, status: str) -> None:
        self.runs[run_id].info.status = status


TAGS = {contract.TAG_UID: "u-1", contract.TAG_KIND: "QDEvolution"}


def test_ensure_parent_run_finds_by_uid_before_creating() -> None:
    fake = FakeMlflow()
    first = tracking.ensure_parent_run(fake, experiment="e", tags=TAGS, run_name="ns/a",
                                       base_url="http://m")
    again = tracking.ensure_parent_run(fake, experiment="e", tags=TAGS, run_name="ns/a")
    assert first.run_id == again.run_id and len(fake.runs) == 1
    assert first.url == f"http://m/#/experiments/1/runs/{first.run_id}"


def test_ensure_parent_run_maps_outages_to_tracking_unavailable() -> None:
    with pytest.raises(tracking.TrackingUnavailable, match="connection refused"):
        tracking.ensure_parent_run(FakeMlflow(down=True), experiment="e", tags=TAGS,
                                   run_name="ns/a")


def test_end_run_marks_killed_once() -> None:
    fake = FakeMlflow()
    run = tracking.ensure_parent_run(fake, experiment="e", tags=TAGS, run_name="ns/a")
    assert run.run_id is not None
    tracking.end_run(fake, run.run_id)
    tracking.end_run(fake, run.run_id)
    assert fake.runs[run.run_id].info.status == "KILLED"


@pytest.mark.parametrize(("base", "url"), [
    pytest.param("http://m:5000/", "http://m:5000/#/experiments/1/runs/r", id="http"),
    pytest.param("sqlite:///x.db", None, id="not-a-web-server"),
])
def test_run_url(base: str, url: str | None) -> None:
    assert tracking.run_url(base, "1", "r") == url
