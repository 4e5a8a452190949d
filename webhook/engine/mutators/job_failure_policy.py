"""job-failure-policy: a Job ``podFailurePolicy`` so node drains, preemption and node failures
(pod condition DisruptionTarget) and device failures (the policy's exit codes) are retried without
consuming ``backoffLimit``. Never replaces a user's own podFailurePolicy.

The API server's rules for it (pkg/apis/batch/validation/validation.go), each tested in
tests/engine/test_validity.py:
- validateJobSpec: ``podFailurePolicy`` only with the template's ``restartPolicy: Never``;
- validatePodReplacementPolicy: with a ``podFailurePolicy`` only ``podReplacementPolicy: Failed``. The
  API server defaults it to TerminatingOrFailed before webhooks run, so spreadguard sets Failed (also
  the better choice for GPU pods: no replacement starts while the old pod still holds the GPUs). When
  the user's own manifest asked for TerminatingOrFailed (the object as sent, or kubectl's
  last-applied-configuration), the Job is left alone and the note says why;
- validatePodFailurePolicyRuleOnExitCodes: 1..255 values, ascending, unique, no 0 with In (the policy
  model bounds the codes; they are sorted and de-duplicated here);
- ValidateJobSpecUpdate: ``podFailurePolicy`` is immutable: CREATE only (the engine never runs this
  mutator on a Job UPDATE; see decide.UPDATE_SCOPES).
"""

from __future__ import annotations

import json
from typing import Any

from webhook.engine.target import Target
from webhook.engine.workloads import get

ID = "job-failure-policy"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_LAST_APPLIED = 256 * 1024  # the API caps all annotations together at 256 KiB


def _last_applied(obj: dict[str, Any]) -> dict[str, Any]:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not isinstance(raw, str) or len(raw) > MAX_LAST_APPLIED:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _field_owned(obj: dict[str, Any], path: tuple[str | int, ...], name: str) -> bool:
    """Whether a field manager (server-side apply, or an update) owns ``path.name`` in managedFields.
    List steps (JobSet replicatedJobs) are keyed by name in fieldsV1: not followed."""
    if any(isinstance(step, int) for step in path):
        return False
    for entry in ((obj.get("metadata") or {}).get("managedFields") or [])[:64]:
        fields = entry.get("fieldsV1") if isinstance(entry, dict) else None
        node = get(fields, tuple(f"f:{step}" for step in (*path, name)))
        if node is not None:
            return True
    return False


def user_asked_terminating(t: Target) -> bool:
    """Whether the user asked for ``podReplacementPolicy: TerminatingOrFailed`` (not the API default).

    The API server defaults the field before admission, so its value alone cannot tell; kubectl's
    last-applied configuration and the field managers (server-side apply) can.
    """
    assert t.group.job_path is not None
    last = get(_last_applied(t.obj), t.group.job_path)
    if isinstance(last, dict) and last.get("podReplacementPolicy") == "TerminatingOrFailed":
        return True
    return _field_owned(t.obj, t.group.job_path, "podReplacementPolicy")


def mutate(t: Target) -> str | None:
    cfg = t.policy.mutate.jobFailurePolicy
    if cfg is None or not cfg.enabled or t.group.job_path is None:
        return None
    if t.spec.get("restartPolicy") != "Never":  # the API allows podFailurePolicy only with Never
        return None
    job = get(t.obj, t.group.job_path)
    if not isinstance(job, dict) or "podFailurePolicy" in job:
        return None
    replacement = job.get("podReplacementPolicy")
    if replacement not in (None, "TerminatingOrFailed", "Failed"):
        return None  # a value the API rejects anyway: the user's error to fix, not ours to stack on
    if replacement == "TerminatingOrFailed" and user_asked_terminating(t):
        t.info.append(
            f"{ID}: {t.describe}: no podFailurePolicy added: your manifest asks for podReplacementPolicy: "
            "TerminatingOrFailed, and the API allows a podFailurePolicy only with Failed. Drains and preemptions "
            "will count against backoffLimit; set podReplacementPolicy: Failed to let spreadguard add it"
        )
        return None
    rules: list[dict[str, Any]] = [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    codes = sorted(set(cfg.deviceFailureExitCodes))
    if codes:
        rules.append({"action": "Ignore", "onExitCodes": {"operator": "In", "values": codes}})
    job["podFailurePolicy"] = {"rules": rules}
    job["podReplacementPolicy"] = "Failed"
    extra = f" and device-failure exit codes {codes}" if codes else ""
    return (
        f"{t.describe}: drains and preemptions{extra} do not count against backoffLimit "
        "(podFailurePolicy, with podReplacementPolicy: Failed as the API requires)"
    )
