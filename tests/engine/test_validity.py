"""Only objects the API server accepts: every patch spreadguard returns, applied as the API server
applies it, must pass the API's own cross-field and immutability rules (tests/engine/apirules.py,
each rule named after its place in the Kubernetes source). These are the tests that would have
caught "spec.podReplacementPolicy: Unsupported value: TerminatingOrFailed" and the refused Kueue
update of a suspended Job.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
import yaml
from apirules import (
    job_spec_errors,
    job_update_errors,
    jobset_update_errors,
    pod_spec_errors,
    pod_update_errors,
    statefulset_update_errors,
)
from conftest import REPO

from webhook.engine.decide import evaluate
from webhook.engine.policy import PolicyError, load_policies, parse_policy_text
from webhook.engine.target import Context

POLICIES = load_policies(REPO / "policies")
EXAMPLES = REPO / "examples"
TEAM = "spreadguard.io/team"


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def applied(obj: dict[str, Any], ctx: Context, policies: list | None = None) -> tuple[dict[str, Any], Any]:
    """The object as the API server stores it after spreadguard's patch, and the decision."""
    d = evaluate(obj, ctx, policies or POLICIES)
    return jsonpatch.apply_patch(obj, d.patch), d


def api_defaulted_job(obj: dict[str, Any]) -> dict[str, Any]:
    """What arrives at admission: the API server has defaulted podReplacementPolicy already
    (pkg/apis/batch/v1/defaults.go: TerminatingOrFailed without a podFailurePolicy)."""
    out = copy.deepcopy(obj)
    job = out["spec"] if out["kind"] == "Job" else out["spec"]["jobTemplate"]["spec"]
    job.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    return out


# ------------------------------------------------------------- job-failure-policy on CREATE


@pytest.mark.parametrize(
    "name", ["job.yaml", "cronjob.yaml", "denied/foreign-team-toleration.yaml"], ids=lambda n: n.split(".")[0]
)
def test_job_failure_policy_passes_job_validation(name: str) -> None:
    """validatePodReplacementPolicy: with a podFailurePolicy only Failed; the API default was TerminatingOrFailed."""
    obj = api_defaulted_job(example(name))
    after, d = applied(obj, Context(namespace="ml"))
    job = after["spec"] if after["kind"] == "Job" else after["spec"]["jobTemplate"]["spec"]
    assert "podFailurePolicy" in job and job["podReplacementPolicy"] == "Failed"
    assert job_spec_errors(job) == []
    if name.startswith("denied/"):  # refused for its own rule, not for an invalid patch
        assert [v.rule for v in d.violations] == ["foreign-team-toleration"]


def test_jobset_jobs_get_failed_replacement_policy() -> None:
    obj = example("jobset.yaml")
    obj["spec"]["replicatedJobs"][0]["template"]["spec"]["podReplacementPolicy"] = "TerminatingOrFailed"
    after, _ = applied(obj, Context(namespace="ml"))
    job = after["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["podReplacementPolicy"] == "Failed" and job_spec_errors(job) == []


@pytest.mark.parametrize(
    "asked",
    [
        pytest.param("last-applied", id="kubectl apply last-applied-configuration"),
        pytest.param("managed-fields", id="server-side apply field manager"),
    ],
)
def test_user_asked_for_terminating_or_failed_leaves_the_job_alone_with_a_warning(asked: str) -> None:
    obj = example("job.yaml")
    obj["spec"]["podReplacementPolicy"] = "TerminatingOrFailed"
    if asked == "last-applied":
        obj["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(obj)}
    else:
        obj["metadata"]["managedFields"] = [
            {
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "batch/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:podReplacementPolicy": {}, "f:parallelism": {}}},
            }
        ]
    after, d = applied(obj, Context(namespace="ml"))
    assert "podFailurePolicy" not in after["spec"] and after["spec"]["podReplacementPolicy"] == "TerminatingOrFailed"
    assert job_spec_errors(after["spec"]) == []
    assert any(
        "no podFailurePolicy added: your manifest asks for podReplacementPolicy: TerminatingOrFailed" in i
        for i in d.info
    )


def test_api_default_alone_is_not_the_users_choice() -> None:
    """Defaulted TerminatingOrFailed with a last-applied that does not mention it: set Failed."""
    obj = example("job.yaml")
    obj["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(obj)}
    after, _ = applied(api_defaulted_job(obj), Context(namespace="ml"))
    assert after["spec"]["podReplacementPolicy"] == "Failed" and job_spec_errors(after["spec"]) == []


def test_malformed_last_applied_is_ignored() -> None:
    obj = api_defaulted_job(example("job.yaml"))
    obj["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{not json" * 10}
    after, _ = applied(obj, Context(namespace="ml"))
    assert after["spec"]["podReplacementPolicy"] == "Failed"


def test_device_exit_codes_are_sorted_unique_and_bounded() -> None:
    """validatePodFailurePolicyRuleOnExitCodes: ordered, unique, 1-255 values, no 0 with In."""
    text = (REPO / "policies" / "training.yaml").read_text()
    loose = text.replace("deviceFailureExitCodes: []", "deviceFailureExitCodes: [79, 48, 79]")
    [policy], problems = parse_policy_text(loose, "training.yaml")
    assert problems == []
    after, _ = applied(api_defaulted_job(example("job.yaml")), Context(namespace="ml"), [policy])
    assert after["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"] == {"operator": "In", "values": [48, 79]}
    assert job_spec_errors(after["spec"]) == []
    _, problems = parse_policy_text(text.replace("deviceFailureExitCodes: []", "deviceFailureExitCodes: [0]"), "t")
    assert problems and "deviceFailureExitCodes[0]" in problems[0]
    with pytest.raises(PolicyError):
        raise PolicyError(problems)


# ------------------------------------------------------------------ nothing immutable on UPDATE


def _kueue_update(suspended: bool, started: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Kueue admitting a suspended Job: it sets nodeSelector and tolerations of its ResourceFlavor."""
    old = api_defaulted_job(example("job.yaml"))
    old["spec"]["suspend"] = suspended
    old, _ = applied(old, Context(namespace="ml"))  # created through spreadguard
    if started:
        old["status"] = {"startTime": "2026-11-30T20:00:00Z"}
    new = copy.deepcopy(old)
    new["spec"]["suspend"] = False
    tpl = new["spec"]["template"]["spec"]
    tpl["nodeSelector"] = {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    tpl["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return old, new


def test_kueue_update_of_a_suspended_job_is_allowed_and_patches_only_scheduling_directives() -> None:
    old, new = _kueue_update(suspended=True, started=False)
    ctx = Context(operation="UPDATE", namespace="ml", old_object=old)
    after, d = applied(new, ctx)
    assert d.allowed
    assert job_update_errors(old, after) == []
    # Kueue's tolerations replaced spreadguard's: the team toleration (mutable while suspended) comes back
    assert {"key": TEAM, "operator": "Equal", "value": "vision", "effect": "NoSchedule"} in after["spec"]["template"][
        "spec"
    ]["tolerations"]
    assert {op["path"] for op in d.patch} <= {"/spec/template/spec/tolerations/1"}


def test_kueue_update_with_a_foreign_team_toleration_is_judged_normally() -> None:
    old, new = _kueue_update(suspended=True, started=False)
    new["spec"]["template"]["spec"]["tolerations"].append(
        {"key": TEAM, "operator": "Equal", "value": "nlp", "effect": "NoSchedule"}
    )
    d = evaluate(new, Context(operation="UPDATE", namespace="ml", old_object=old), POLICIES)
    assert [v.rule for v in d.violations] == ["foreign-team-toleration"]
    assert job_update_errors(old, jsonpatch.apply_patch(new, d.patch)) == []


@pytest.mark.parametrize(("suspended", "started"), [(False, True), (True, True)], ids=["running", "resuspended"])
def test_job_update_outside_the_kueue_window_patches_nothing(suspended: bool, started: bool) -> None:
    old, new = _kueue_update(suspended=suspended, started=started)
    del old["spec"]["podFailurePolicy"]  # a Job created before spreadguard
    new_copy = copy.deepcopy(new)
    del new_copy["spec"]["podFailurePolicy"]
    d = evaluate(new_copy, Context(operation="UPDATE", namespace="ml", old_object=old), POLICIES)
    assert d.patch == []


def test_job_created_before_spreadguard_gets_no_pod_failure_policy_on_update() -> None:
    """ValidateJobSpecUpdate: podFailurePolicy is immutable, also while suspended."""
    old = api_defaulted_job(example("job.yaml"))
    old["spec"]["suspend"] = True
    new = copy.deepcopy(old)
    new["spec"]["template"]["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    after, d = applied(new, Context(operation="UPDATE", namespace="ml", old_object=old))
    assert "podFailurePolicy" not in after["spec"]
    assert "podAntiAffinity" not in (after["spec"]["template"]["spec"].get("affinity") or {})
    assert job_update_errors(old, after) == []
    assert all(op["path"].startswith("/spec/template/spec/") for op in d.patch)


def test_jobset_update_while_suspended_patches_only_what_its_webhook_allows() -> None:
    old = example("jobset.yaml")
    old["spec"]["suspend"] = True
    for rj in old["spec"]["replicatedJobs"]:
        rj["template"]["spec"]["template"]["metadata"]["labels"].pop(TEAM)  # no team yet
    new = copy.deepcopy(old)
    new["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["metadata"]["labels"][TEAM] = "vision"
    ctx = Context(operation="UPDATE", namespace="ml", old_object=old)
    after, d = applied(new, ctx)
    assert jobset_update_errors(old, after) == []
    assert d.patch and all(op["path"].endswith("/tolerations") for op in d.patch)
    running = copy.deepcopy(new)
    running["spec"]["suspend"] = False
    old_running = copy.deepcopy(old)
    old_running["spec"]["suspend"] = False
    assert evaluate(running, Context(operation="UPDATE", namespace="ml", old_object=old_running), POLICIES).patch == []


def test_statefulset_update_patches_only_its_template() -> None:
    old = example("statefulset.yaml")
    new = copy.deepcopy(old)
    new["spec"]["template"]["metadata"]["labels"]["version"] = "2"
    after, d = applied(new, Context(operation="UPDATE", namespace="ml", old_object=old))
    assert d.patch and all(op["path"].startswith("/spec/template/") for op in d.patch)
    assert statefulset_update_errors(old, after) == []


@pytest.mark.parametrize("name", ["volcanojob.yaml", "trainjob.yaml"])
def test_kinds_with_immutable_templates_get_no_patch_on_update(name: str) -> None:
    old = example(name)
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["touched"] = "yes"
    if name == "volcanojob.yaml":
        new["spec"]["tasks"][1]["template"]["spec"]["containers"][0]["image"] = "horovod:0.29"
    assert evaluate(new, Context(operation="UPDATE", namespace="ml", old_object=old), POLICIES).patch == []


def test_pod_update_gets_no_patch() -> None:
    """ValidatePodSpecUpdate: a Pod's spec is immutable (spreadguard adds nothing on a Pod UPDATE)."""
    old = example("pod.yaml")
    new = copy.deepcopy(old)
    new["metadata"]["labels"]["x"] = "y"
    d = evaluate(new, Context(operation="UPDATE", namespace="ml", old_object=old), POLICIES)
    assert d.patch == [] and pod_update_errors(old, new) == []


@pytest.mark.parametrize(
    "added",
    [
        [{"key": "spreadguard.io/team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}],
        [{"key": "spreadguard.io/team", "operator": "Equal", "value": "nlp", "effect": "NoSchedule"}],
        [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        [],
    ],
    ids=["own-team", "foreign-team", "other", "none"],
)
def test_admit_answers_a_pod_update_without_a_patch(added: list[dict[str, Any]]) -> None:
    """The base's pods hook calls /admit on Pod UPDATEs that change tolerations: whatever it answers, the pod
    as the API server would store it passes ValidatePodSpecUpdate (no patch at all; the update itself only adds
    tolerations)."""
    from webhook.server.review import review

    old = example("pod.yaml")
    new = copy.deepcopy(old)
    new["spec"]["tolerations"] = [*(old["spec"].get("tolerations") or []), *added]
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "ml",
            "operation": "UPDATE",
            "userInfo": {"username": "mallory"},
            "object": new,
            "oldObject": old,
        },
    }
    response = review(body, POLICIES, "admit")["response"]
    assert "patch" not in response
    assert pod_update_errors(old, new) == []


# ------------------------------------------------------------- spread constraints and affinity


def test_serving_spread_constraint_honours_taints_and_counts_only_the_current_revision() -> None:
    after, _ = applied(example("deployment.yaml"), Context(namespace="ml"))
    [c] = after["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert c["nodeTaintsPolicy"] == "Honor" and c["matchLabelKeys"] == ["pod-template-hash"]
    assert pod_spec_errors(after["spec"]["template"]["spec"]) == []


def test_no_match_label_key_that_the_selector_already_uses() -> None:
    """validateMatchLabelKeysInTopologySpread: a key may not be in both matchLabelKeys and labelSelector."""
    obj = example("deployment.yaml")  # a selector spreadguard cannot use as is, and the key in the template
    obj["spec"]["selector"]["matchExpressions"] = [{"key": "pod-template-hash", "operator": "Exists"}]
    obj["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] = "abc"
    after, _ = applied(obj, Context(namespace="ml"))
    [c] = after["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert "pod-template-hash" not in c["labelSelector"]["matchLabels"] and c["matchLabelKeys"] == ["pod-template-hash"]
    assert pod_spec_errors(after["spec"]["template"]["spec"]) == []


def test_a_users_constraint_on_the_same_key_and_mode_is_not_duplicated() -> None:
    """validateTopologySpreadConstraints: one constraint per (topologyKey, whenUnsatisfiable)."""
    obj = example("deployment.yaml")
    mine = {
        "maxSkew": 2,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"tier": "gpu"}},
    }
    obj["spec"]["template"]["spec"]["topologySpreadConstraints"] = [mine]
    after, d = applied(obj, Context(namespace="ml"))
    assert after["spec"]["template"]["spec"]["topologySpreadConstraints"] == [mine]
    assert pod_spec_errors(after["spec"]["template"]["spec"]) == []
    # it selects other pods and holds the pair the policy's zone constraint needs: the group would not be spread;
    # the policy's constraint is ScheduleAnyway (a preference), so weak-spread warns instead of denying
    assert d.violations == [] and [v.rule for v in d.advisories] == ["weak-spread"]


@pytest.mark.parametrize(
    "name",
    ["leaderworkerset.yaml", "pytorchjob.yaml", "jobset.yaml", "xgboostjob.yaml", "mpijob.yaml", "raycluster.yaml"],
)
def test_injected_affinity_terms_pass_pod_validation(name: str) -> None:
    after, _ = applied(example(name), Context(namespace="ml"))
    from webhook.engine import workloads

    for group in workloads.groups_of(after):
        assert pod_spec_errors(workloads.pod_template(after, group).get("spec") or {}) == [], group.name
