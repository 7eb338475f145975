"""Multi-node CompressorTraining: a torchrun rendezvous that works on old and new clusters.

Shape (no JobSet, no Indexed Job needed, so it runs on Kubernetes 1.20 as well):

- a headless Service selecting the leader Pod, publishing it before it is ready;
- a leader Job (one Pod, node rank 0) whose Pod has a stable DNS name through
  `hostname: leader` + `subdomain: <service>`: `leader.<service>`;
- a worker Job with parallelism numNodes-1 whose Pods join the same c10d rendezvous on the
  leader; torchrun assigns their node ranks (Indexed where the server supports it, which
  only adds JOB_COMPLETION_INDEX for logs).

Every Pod gets the torchrun environment (PET_*), so the worker image runs
`torchrun` with no arguments of its own.
"""

from __future__ import annotations

from typing import Any

from mendel.controller.runs import manifests, naming, specs
from mendel.controller.runs.manifests import JobInputs

__all__ = ["LEADER_HOSTNAME", "MASTER_PORT", "RDZV_PORT", "leader_job", "rendezvous_service",
           "run_jobs", "worker_job"]

LEADER_HOSTNAME = "leader"
MASTER_PORT = 29500
RDZV_PORT = 29400


def leader_address(inputs: JobInputs) -> str:
    """DNS name of the leader Pod, resolvable from any Pod of the namespace."""
    return f"{LEADER_HOSTNAME}.{inputs.name(naming.ROLE_RENDEZVOUS)}"


def rendezvous_service(inputs: JobInputs) -> dict[str, Any]:
    """Headless Service that gives the leader Pod its stable name."""
    meta = manifests.metadata(inputs, naming.ROLE_RENDEZVOUS,
                              inputs.name(naming.ROLE_RENDEZVOUS))
    run = inputs.run
    selector = {naming.LABEL_UID: run.uid, naming.LABEL_ROLE: naming.ROLE_LEADER}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector,
            "ports": [
                {"name": "master", "port": MASTER_PORT, "targetPort": MASTER_PORT},
                {"name": "rdzv", "port": RDZV_PORT, "targetPort": RDZV_PORT},
            ],
        },
    }


def _torchrun_env(inputs: JobInputs, rank: int | None) -> list[dict[str, Any]]:
    address = leader_address(inputs)
    env = {
        "PET_NNODES": str(specs.num_nodes(inputs.spec)),
        "PET_NPROC_PER_NODE": str(specs.procs_per_node(inputs.spec)),
        "PET_MASTER_ADDR": address,
        "PET_MASTER_PORT": str(MASTER_PORT),
        "PET_RDZV_BACKEND": "c10d",
        "PET_RDZV_ENDPOINT": f"{address}:{RDZV_PORT}",
        "PET_RDZV_ID": f"{inputs.run.uid}-{inputs.attempt}",
    }
    if rank is not None:
        env["PET_NODE_RANK"] = str(rank)
    return [{"name": k, "value": v} for k, v in env.items()]


def leader_job(inputs: JobInputs) -> dict[str, Any]:
    """The rank-0 Pod's Job."""
    role = naming.ROLE_LEADER
    template = manifests.pod_template(inputs, role, _torchrun_env(inputs, rank=0))
    template["spec"]["hostname"] = LEADER_HOSTNAME
    template["spec"]["subdomain"] = inputs.name(naming.ROLE_RENDEZVOUS)
    return manifests.job(inputs, role, template)


def worker_job(inputs: JobInputs) -> dict[str, Any]:
    """The Job of the other numNodes-1 Pods; torchrun's c10d rendezvous ranks them."""
    role = naming.ROLE_WORKER
    template = manifests.pod_template(inputs, role, _torchrun_env(inputs, rank=None))
    template["spec"]["subdomain"] = inputs.name(naming.ROLE_RENDEZVOUS)
    return manifests.job(inputs, role, template, parallelism=specs.num_nodes(inputs.spec) - 1,
                         indexed=inputs.capabilities.indexed_jobs)


def run_jobs(inputs: JobInputs) -> list[dict[str, Any]]:
    """Every Job and Service of one attempt, in creation order."""
    if specs.num_nodes(inputs.spec) <= 1:
        return [manifests.driver_job(inputs)]
    return [rendezvous_service(inputs), leader_job(inputs), worker_job(inputs)]
