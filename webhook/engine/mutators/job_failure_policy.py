"""job-failure-policy: a Job ``podFailurePolicy`` so node drains, preemption and node failures
(pod condition DisruptionTarget) and device failures (the policy's exit codes) are retried without
consuming ``backoffLimit``. Never replaces a user's own podFailurePolicy."""

from __future__ import annotations

from typing import Any

from webhook.engine.target import Target
from webhook.engine.workloads import get

ID = "job-failure-policy"


def mutate(t: Target) -> str | None:
    cfg = t.policy.mutate.jobFailurePolicy
    if cfg is None or not cfg.enabled or t.group.job_path is None:
        return None
    if t.spec.get("restartPolicy") != "Never":  # the API allows podFailurePolicy only with Never
        return None
    job = get(t.obj, t.group.job_path)
    if not isinstance(job, dict) or "podFailurePolicy" in job:
        return None
    rules: list[dict[str, Any]] = [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    if cfg.deviceFailureExitCodes:
        codes = sorted(set(cfg.deviceFailureExitCodes))
        rules.append({"action": "Ignore", "onExitCodes": {"operator": "In", "values": codes}})
    job["podFailurePolicy"] = {"rules": rules}
    extra = f" and device-failure exit codes {codes}" if cfg.deviceFailureExitCodes else ""
    return f"{t.describe}: drains and preemptions{extra} do not count against backoffLimit"
