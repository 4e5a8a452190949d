"""singleton-role: a sole coordinator (PyTorchJob Master, TFJob Chief, MPIJob Launcher, Ray head
without GCS fault tolerance) whose loss stops the whole job."""

from __future__ import annotations

from typing import Any

from webhook.engine.target import Finding, Target
from webhook.engine.workloads import get

ID = "singleton-role"
DEFAULT_ACTION = "warn"
ROLES = {"master", "chief", "launcher", "head"}
CHECKPOINT = "checkpoint often so a restarted job resumes where it stopped"
# the fix that exists for each kind: elastic training is PyTorchJob's (elasticPolicy), not XGBoost's or Volcano's
FIX_BY_KIND = {
    ("kubeflow.org", "PyTorchJob", "master"): (
        "use elastic training (spec.elasticPolicy with a c10d rendezvous, no Master) and checkpoint often"
    ),
    ("kubeflow.org", "TFJob", "chief"): (
        "checkpoint often so a restarted chief resumes; consider MultiWorkerMirroredStrategy without a chief"
    ),
    ("kubeflow.org", "MPIJob", "launcher"): (
        "checkpoint often; the launcher holds no state but its node failing restarts the job"
    ),
    ("kubeflow.org", "XGBoostJob", "master"): (
        "XGBoostJob has no elastic mode: save the booster every few rounds (xgboost.callback.TrainingCheckPoint) "
        "so a restarted job resumes from the last checkpoint"
    ),
    ("ray.io", "RayCluster", "head"): (
        "enable GCS fault tolerance (spec.gcsFaultToleranceOptions with an external Redis)"
    ),
    ("ray.io", "RayJob", "head"): (
        "enable GCS fault tolerance (spec.rayClusterSpec.gcsFaultToleranceOptions with an external Redis)"
    ),
}
VOLCANO_FIX = (
    f"{CHECKPOINT}, and let Volcano restart the job when the pod is lost "
    "(spec.policies: event PodEvicted / PodFailed, action RestartJob)"
)


def fix_for(group: str, kind: str, role: str) -> str:
    """The advice that fits this kind and role (never another framework's field)."""
    if group == "batch.volcano.sh":
        return VOLCANO_FIX
    return FIX_BY_KIND.get((group, kind, role), CHECKPOINT)


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
            f"Fix: {fix_for(t.kind.group, t.kind.kind, role)}",
        )
    ]
