"""exclusive-hostname: JobSet or LeaderWorkerSet exclusive placement keyed on ``kubernetes.io/hostname``
(``alpha.jobset.sigs.k8s.io/exclusive-topology`` / ``leaderworkerset.sigs.k8s.io/exclusive-topology``).

The controller then puts every pod of one Job (one LWS group) on a single node, alone: the group can
only start when one node holds all of it, and that node failing stops all of it. Meant for a
rack/block/zone key; on the hostname key it is a pin per group.
"""

from __future__ import annotations

from webhook.engine.target import Finding, Target

ID = "exclusive-hostname"
DEFAULT_ACTION = "warn"
KEYS = {
    "alpha.jobset.sigs.k8s.io/exclusive-topology": "Job",
    "leaderworkerset.sigs.k8s.io/exclusive-topology": "group",
}
HOSTNAME = "kubernetes.io/hostname"


def check(t: Target) -> list[Finding]:
    if t.placement != "gang" or t.group.replicas is None:
        return []
    ann = (t.obj.get("metadata") or {}).get("annotations") or {}
    for key, unit in KEYS.items():
        if ann.get(key) != HOSTNAME:
            continue
        per_unit = _pods_per_unit(t, unit)
        return [
            Finding(
                f"metadata.annotations[{key}]",
                f"{t.describe}: exclusive placement on {HOSTNAME} pins each {unit} ({per_unit} pods) to one node of "
                f"its own: the {unit} waits until one node can hold all of it, and that node failing stops all of "
                f"it. Fix: use a rack, block or zone label as the exclusive topology "
                f"(e.g. topology.kubernetes.io/zone), or drop the annotation and let spreadguard keep the gang compact",
            )
        ]
    return []


def _pods_per_unit(t: Target, unit: str) -> int:
    """Pods of one Job of a JobSet (parallelism) or one LWS group (size)."""
    from webhook.engine.workloads import get

    if unit == "Job":
        job = get(t.obj, t.group.job_path or ()) or {}
        value = job.get("parallelism", 1)
    else:
        value = get(t.obj, ("spec", "leaderWorkerTemplate", "size"), 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1
