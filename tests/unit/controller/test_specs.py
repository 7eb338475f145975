"""The facts the controller reads from a spec: how many torchrun processes a Pod runs."""

from __future__ import annotations

import pytest

from mendel.controller.runs import multinode, naming, specs

from .builders import UID, inputs, parsed


@pytest.mark.parametrize(("gpus", "children", "expected"), [
    pytest.param(0, 8, 1, id="cpu-runs-one-process"),
    pytest.param(1, 8, 1, id="one-gpu"),
    pytest.param(8, 8, 8, id="one-process-per-gpu"),
    pytest.param(8, 1, 1, id="one-child-keeps-one-process-busy"),
    pytest.param(8, 3, 3, id="no-more-processes-than-children"),
])
def test_qdevolution_runs_a_process_per_gpu_it_can_keep_busy(gpus, children, expected):
    spec = parsed("QDEvolution", resources={"driver": {"gpus": gpus}},
                  algorithm={"childrenPerGeneration": children})
    assert specs.procs_per_node(spec) == expected
    assert specs.num_nodes(spec) == 1


def test_compressor_training_processes_come_from_its_distribution():
    spec = parsed("CompressorTraining", distribution={"numNodes": 1, "numProcPerNode": 4})
    assert specs.procs_per_node(spec) == 4


def test_experience_library_runs_one_process():
    assert specs.procs_per_node(parsed("ExperienceLibrary")) == 1


def test_a_multi_gpu_qdevolution_is_one_driver_pod_with_all_its_gpus():
    """One node: the worker starts torchrun --standalone itself (no rendezvous objects)."""
    job_inputs = inputs("QDEvolution", spec={"resources": {"driver": {"gpus": 4}},
                                             "algorithm": {"childrenPerGeneration": 4}})
    (job,) = multinode.run_jobs(job_inputs)
    assert job["metadata"]["name"] == naming.child_name("demo", "driver", UID, 0)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert not any(e["name"].startswith("PET_") for e in container["env"])
