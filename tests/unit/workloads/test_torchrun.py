"""The torchrun helper: the command line on a laptop and in an operator's Pod, and a
progress file followed line by line, never half a line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mendel.workloads import torchrun


def test_a_laptop_run_is_standalone_with_the_process_count(monkeypatch):
    monkeypatch.delenv("PET_NNODES", raising=False)
    line = torchrun.command("mendel.x", ["plan.json"], 3)
    assert line[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in line and "--nproc-per-node=3" in line
    assert line[-3:] == ["-m", "mendel.x", "plan.json"]


def test_in_an_operators_pod_torchrun_reads_the_pet_variables(monkeypatch):
    monkeypatch.setenv("PET_NNODES", "2")
    assert torchrun.command("mendel.x", [], 8) == [
        sys.executable, "-m", "torch.distributed.run", "-m", "mendel.x"]


def test_follow_returns_complete_lines_and_keeps_the_rest_for_later(tmp_path):
    path = tmp_path / "progress.jsonl"
    assert torchrun.follow(path, 0) == ([], 0)
    with torchrun.progress_writer(path) as write:
        write({"step": 1})
    with path.open("a") as handle:
        handle.write('{"step": 2')  # rank 0 is mid-write
    lines, offset = torchrun.follow(path, 0)
    assert lines == [{"step": 1}]
    with path.open("a") as handle:
        handle.write("}\n")
    assert torchrun.follow(path, offset)[0] == [{"step": 2}]


def test_supervise_passes_the_last_lines_and_fails_on_a_nonzero_exit(tmp_path):
    path = tmp_path / "progress.jsonl"
    script = f"open({str(path)!r}, 'a').write('{{\"step\": 7}}\\n'); raise SystemExit(3)"
    seen: list[dict] = []
    with pytest.raises(RuntimeError, match="torchrun exited with code 3"):
        torchrun.supervise(subprocess.Popen([sys.executable, "-c", script]), path, 0,
                           seen.append, poll_seconds=0.05)
    assert seen == [{"step": 7}]
