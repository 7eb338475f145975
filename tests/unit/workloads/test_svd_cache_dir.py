"""The experts' SVD bases outlive a run: on the output volume they are shared by the runs
under it; without a volume they stay in the run's scratch space."""

from __future__ import annotations

from pathlib import Path

from mendel.workloads.context import RunContext
from mendel.workloads.qdevolution import svd_cache_dir


def context(output_uri: str | None, work_dir: Path) -> RunContext:
    return RunContext(kind="QDEvolution", namespace="team", name="demo", uid="u1",
                      client=None, run_id="r", experiment_id="e", work_dir=work_dir,
                      output_uri=output_uri)


def test_on_a_volume_the_cache_sits_beside_every_runs_folder(tmp_path):
    # The operator hands the worker <output.uri>/<namespace>/<name>/<uid>.
    ctx = context("/volume/mendel/team/demo/u1", tmp_path)
    assert svd_cache_dir(ctx) == Path("/volume/mendel/svd-cache")
    other_run = context("/volume/mendel/team/other/u2", tmp_path)
    assert svd_cache_dir(other_run) == svd_cache_dir(ctx)


def test_without_a_volume_the_cache_is_the_runs_scratch(tmp_path):
    assert svd_cache_dir(context(None, tmp_path)) == tmp_path / "svd"
    assert svd_cache_dir(context("s3://bucket/runs/team/demo/u1", tmp_path)) == tmp_path / "svd"
