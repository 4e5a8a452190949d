"""The API server's cross-field and immutability rules that spreadguard's patches could break, written
down from the Kubernetes source so the tests can check every mutated object against them.

Each check names its source. The OpenAPI schema (tests use kubernetes-validate for it) carries none
of these: that is how "spec.podReplacementPolicy: Unsupported value: TerminatingOrFailed" slipped through.

- pkg/apis/batch/validation/validation.go: validateJobSpec (podFailurePolicy needs restartPolicy
  Never), validatePodReplacementPolicy (only Failed with a podFailurePolicy), validatePodFailurePolicy
  and ...RuleOnExitCodes (at most 20 rules, one of onExitCodes/onPodConditions, 1-255 exit codes,
  ordered, unique, no 0 with In), ValidateJobSpecUpdate (podFailurePolicy, completionMode, selector
  immutable) and validatePodTemplateUpdate (template immutable; with AllowMutableSchedulingDirectives
  - suspended and never started - labels, annotations, nodeSelector, node affinity, tolerations and
  schedulingGates may change).
- jobset pkg/webhooks/jobset_webhook.go ValidateUpdate: replicatedJobs immutable; while suspended the
  pod templates' labels, annotations, nodeSelector, tolerations and schedulingGates may change.
- pkg/apis/apps/validation ValidateStatefulSetSpecUpdate: only replicas, ordinals, template,
  updateStrategy, revisionHistoryLimit, persistentVolumeClaimRetentionPolicy, minReadySeconds change.
- pkg/apis/core/validation ValidatePodSpecUpdate: a Pod's spec is immutable but for additions to
  tolerations (and a few fields spreadguard never writes).
- pkg/apis/core/validation validateTopologySpreadConstraints: maxSkew > 0 (ValidateMaxSkew), one constraint
  per (topologyKey, whenUnsatisfiable), minDomains > 0 and only with whenUnsatisfiable DoNotSchedule
  (validateMinDomains), nodeTaintsPolicy/nodeAffinityPolicy Honor|Ignore, matchLabelKeys only with a
  labelSelector and never a key the selector uses; validatePodAffinityTerm: the same for matchLabelKeys.
"""

from __future__ import annotations

from typing import Any

POD_FAILURE_ACTIONS = {"FailJob", "FailIndex", "Ignore", "Count"}
SCHEDULING = {
    "job": ({"labels", "annotations"}, {"nodeSelector", "tolerations", "schedulingGates"}, True),
    "jobset": ({"labels", "annotations"}, {"nodeSelector", "tolerations", "schedulingGates"}, False),
}
STATEFULSET_MUTABLE = {
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
}


def job_spec_errors(spec: dict[str, Any], path: str = "spec") -> list[str]:
    errs: list[str] = []
    pfp = spec.get("podFailurePolicy")
    template_spec = (spec.get("template") or {}).get("spec") or {}
    prp = spec.get("podReplacementPolicy")
    if pfp is not None:
        if template_spec.get("restartPolicy") != "Never":
            errs.append(
                f"{path}.template.spec.restartPolicy: only Never is supported when podFailurePolicy is specified"
            )
        if prp is not None and prp != "Failed":
            errs.append(f'{path}.podReplacementPolicy: Unsupported value: "{prp}": supported values: "Failed"')
        rules = pfp.get("rules") or []
        if len(rules) > 20:
            errs.append(f"{path}.podFailurePolicy.rules: Too many")
        for i, rule in enumerate(rules):
            where = f"{path}.podFailurePolicy.rules[{i}]"
            if rule.get("action") not in POD_FAILURE_ACTIONS:
                errs.append(f"{where}.action: Unsupported value")
            codes, conditions = rule.get("onExitCodes"), rule.get("onPodConditions")
            if (codes is None) == (not conditions):
                errs.append(f"{where}: specifying one of OnExitCodes and OnPodConditions is required")
            if codes is not None:
                values = codes.get("values") or []
                if not 1 <= len(values) <= 255:
                    errs.append(f"{where}.onExitCodes.values: 1-255 values")
                if codes.get("operator") == "In" and 0 in values:
                    errs.append(f"{where}.onExitCodes.values: must not be 0 for the In operator")
                if values != sorted(values) or len(set(values)) != len(values):
                    errs.append(f"{where}.onExitCodes.values: must be ordered and unique")
            for c in conditions or []:
                if c.get("status") not in ("True", "False", "Unknown"):
                    errs.append(f"{where}.onPodConditions.status: Unsupported value")
    elif prp not in (None, "Failed", "TerminatingOrFailed"):
        errs.append(f"{path}.podReplacementPolicy: Unsupported value")
    return errs + pod_spec_errors(template_spec, f"{path}.template.spec")


def _keys(selector: dict[str, Any] | None) -> set[str]:
    selector = selector or {}
    return set(selector.get("matchLabels") or {}) | {e["key"] for e in selector.get("matchExpressions") or []}


def pod_spec_errors(spec: dict[str, Any], path: str = "spec") -> list[str]:
    errs: list[str] = []
    seen = set()
    for i, c in enumerate(spec.get("topologySpreadConstraints") or []):
        where = f"{path}.topologySpreadConstraints[{i}]"
        pair = (c.get("topologyKey"), c.get("whenUnsatisfiable"))
        if pair in seen:
            errs.append(f"{where}: Duplicate value: {pair}")
        seen.add(pair)
        if not isinstance(c.get("maxSkew"), int) or c["maxSkew"] <= 0:
            errs.append(f"{where}.maxSkew: must be greater than zero")
        if "minDomains" in c:
            if not isinstance(c["minDomains"], int) or c["minDomains"] <= 0:
                errs.append(f"{where}.minDomains: must be greater than zero")
            if c.get("whenUnsatisfiable") != "DoNotSchedule":
                errs.append(f"{where}.minDomains: can only use minDomains if whenUnsatisfiable=DoNotSchedule")
        for policy in ("nodeTaintsPolicy", "nodeAffinityPolicy"):
            if policy in c and c[policy] not in ("Honor", "Ignore"):
                errs.append(f"{where}.{policy}: Unsupported value")
        errs += _match_label_keys_errors(c, where)
    affinity = spec.get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        section = affinity.get(kind) or {}
        for i, term in enumerate(section.get("requiredDuringSchedulingIgnoredDuringExecution") or []):
            errs += _match_label_keys_errors(term, f"{path}.affinity.{kind}.required[{i}]")
        for i, weighted in enumerate(section.get("preferredDuringSchedulingIgnoredDuringExecution") or []):
            if not 1 <= weighted.get("weight", 0) <= 100:
                errs.append(f"{path}.affinity.{kind}.preferred[{i}].weight: must be in 1-100")
            errs += _match_label_keys_errors(
                weighted.get("podAffinityTerm") or {}, f"{path}.affinity.{kind}.preferred[{i}]"
            )
    return errs


def _match_label_keys_errors(term: dict[str, Any], where: str) -> list[str]:
    keys = term.get("matchLabelKeys") or []
    if not keys:
        return []
    if term.get("labelSelector") is None:
        return [f"{where}.matchLabelKeys: cannot be set when labelSelector isn't set"]
    both = set(keys) & _keys(term.get("labelSelector"))
    return [f"{where}.matchLabelKeys: exists in both matchLabelKeys and labelSelector: {sorted(both)}"] if both else []


def _without(template: dict[str, Any], meta: set[str], spec: set[str], node_affinity: bool) -> dict[str, Any]:
    out = {**template, "metadata": {k: v for k, v in (template.get("metadata") or {}).items() if k not in meta}}
    s = {k: v for k, v in (template.get("spec") or {}).items() if k not in spec}
    if node_affinity and isinstance(s.get("affinity"), dict):
        s["affinity"] = {k: v for k, v in s["affinity"].items() if k != "nodeAffinity"} or None
        if s["affinity"] is None:
            del s["affinity"]
    out["spec"] = s
    return out


def job_update_errors(old: dict[str, Any], new: dict[str, Any], jobspec: str = "spec") -> list[str]:
    """batch/v1 Job UPDATE (the JobSpec at ``jobspec``, "spec" for a Job)."""
    o, n = old["spec"], new["spec"]
    errs = job_spec_errors(n)
    for name in ("podFailurePolicy", "completionMode", "selector", "completions", "backoffLimitPerIndex"):
        if o.get(name) != n.get(name):
            errs.append(f"spec.{name}: field is immutable")
    mutable = o.get("suspend") is True and not (old.get("status") or {}).get("startTime")
    meta, spec, node_aff = SCHEDULING["job"] if mutable else (set(), set(), False)
    if _without(o.get("template") or {}, meta, spec, node_aff) != _without(
        n.get("template") or {}, meta, spec, node_aff
    ):
        errs.append("spec.template: field is immutable")
    return errs


def jobset_update_errors(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    suspended = (old["spec"].get("suspend") is True) or (new["spec"].get("suspend") is True)
    meta, spec, node_aff = SCHEDULING["jobset"] if suspended else (set(), set(), False)

    def munged(js: dict[str, Any]) -> list[Any]:
        out = []
        for rj in js["spec"].get("replicatedJobs") or []:
            job = rj.get("template") or {}
            jspec = job.get("spec") or {}
            out.append(
                {
                    **rj,
                    "template": {
                        **job,
                        "spec": {**jspec, "template": _without(jspec.get("template") or {}, meta, spec, node_aff)},
                    },
                }
            )
        return out

    return ["spec.replicatedJobs: field is immutable"] if munged(old) != munged(new) else []


def statefulset_update_errors(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    o = {k: v for k, v in old["spec"].items() if k not in STATEFULSET_MUTABLE}
    n = {k: v for k, v in new["spec"].items() if k not in STATEFULSET_MUTABLE}
    return [] if o == n else ["spec: Forbidden: updates to statefulset spec for fields other than the mutable ones"]


def pod_update_errors(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    o, n = dict(old["spec"]), dict(new["spec"])
    old_tol, new_tol = o.pop("tolerations", None) or [], n.pop("tolerations", None) or []
    errs = (
        []
        if o == n
        else ["spec: Forbidden: pod updates may not change fields other than ... tolerations (only additions)"]
    )
    if new_tol[: len(old_tol)] != old_tol:
        errs.append("spec.tolerations: only additions to existing tolerations are allowed")
    return errs
