"""group-label: label a group's pod template where its controller's pod names are not known at
admission (RayJob, CronJob), so anti-affinity and spread have something to select on."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.target import Target

ID = "group-label"


def mutate(t: Target) -> str | None:
    if not t.group.add_labels:
        return None
    if t.policy.mutate.antiAffinity is None and not t.policy.mutate.topologySpread:
        return None  # a policy that spreads nothing (e.g. isolation) needs no group label
    labels = podspec.path_to(t.template, "metadata", "labels")
    missing = {k: v for k, v in t.group.add_labels.items() if k not in labels}
    if not missing:
        return None
    labels.update(missing)
    return f"labelled group {t.group.name} " + ", ".join(f"{k}={v}" for k, v in missing.items())
