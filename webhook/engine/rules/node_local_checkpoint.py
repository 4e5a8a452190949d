"""node-local-checkpoint: writable hostPath or emptyDir volumes mounted at checkpoint-like paths in
a multi-replica training group: the checkpoint dies with the node."""

from __future__ import annotations

import re

from webhook.engine.target import Finding, Target

ID = "node-local-checkpoint"
DEFAULT_ACTION = "warn"
CHECKPOINT_PATH = re.compile(r"checkpoint|ckpt", re.IGNORECASE)


def check(t: Target) -> list[Finding]:
    if not t.multi or t.workload_class != "training":
        return []
    volumes = {v.get("name"): v for v in t.spec.get("volumes") or [] if isinstance(v, dict)}
    out = []
    for key in ("initContainers", "containers"):
        for ci, c in enumerate(t.spec.get(key) or []):
            for mi, m in enumerate((c or {}).get("volumeMounts") or []):
                if not isinstance(m, dict) or m.get("readOnly") or not CHECKPOINT_PATH.search(str(m.get("mountPath"))):
                    continue
                vol = volumes.get(m.get("name")) or {}
                local = "hostPath" if "hostPath" in vol else "emptyDir" if "emptyDir" in vol else None
                if local:
                    out.append(
                        Finding(
                            t.path("spec", key, ci, "volumeMounts", mi),
                            f"{t.describe} writes checkpoints to {m.get('mountPath')} on a node-local {local} volume: "
                            "when that node fails the checkpoint is lost with it and the job restarts from scratch. "
                            "Fix: write checkpoints to a PersistentVolumeClaim or object storage",
                        )
                    )
    return out
