"""singleton-role: a sole coordinator (PyTorchJob Master, TFJob Chief, MPIJob Launcher, Ray head
without GCS fault tolerance) whose loss stops the whole job."""

from __future__ import annotations

from typing import Any

from webhook.engine.target import Finding, Target
from webhook.engine.workloads import get

ID = "singleton-role"
DEFAULT_ACTION = "warn"
ROLES = {"master", "chief", "launcher", "head"}
FIX = {
    "master": "use elastic training (spec.elasticPolicy with a c10d rendezvous) and checkpoint often",
    "chief": "checkpoint often so a restarted chief resumes; consider MultiWorkerMirroredStrategy without a chief",
    "launcher": "checkpoint often; the launcher holds no state but its node failing restarts the job",
    "head": "enable GCS fault tolerance (spec.gcsFaultToleranceOptions with an external Redis)",
}


def _ray_fault_tolerant(obj: dict[str, Any]) -> bool:
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    if str(ann.get("ray.io/ft-enabled", "")).lower() == "true":
        return True
    return any(
        get(obj, p)
        for p in (("spec", "gcsFaultToleranceOptions"), ("spec", "rayClusterSpec", "gcsFaultToleranceOptions"))
    )


def check(t: Target) -> list[Finding]:
    role = t.group.role
    if role not in ROLES or t.group.replicas != 1 or not t.group.path:
        return []
    if role == "head" and _ray_fault_tolerant(t.obj):
        return []
    return [
        Finding(
            t.path(),
            f"{t.describe} is the job's only {role}: if its node fails the whole job stops and restarts. "
            f"Fix: {FIX[role]}",
        )
    ]
