"""Issue 11's bypasses through the real server (gunicorn, TLS, the default policies): each request below
was admitted before; now /validate refuses it with the rule that says why."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest
from conftest import Server, admission_review

FOREIGN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "nlp", "effect": "NoSchedule"}
OWN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}


def _pod(tolerations: list[dict], owners: list[dict] | None = None, limits: dict | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "ml", "labels": {"spreadguard.io/team": "vision"}}
    if owners:
        meta["ownerReferences"] = owners
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "tolerations": tolerations,
            "containers": [{"name": "c", "image": "busybox:1.36", "resources": {"limits": limits or {"cpu": "1"}}}],
        },
    }


DAEMONSET = [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": True}]


@pytest.mark.parametrize(
    ("pod", "user", "rule"),
    [
        (_pod([FOREIGN]), "mallory", "foreign-team-toleration"),  # a CPU pod
        (_pod([{"operator": "Exists"}], limits={"nvidia.com/mig-3g.40gb": 1}), "mallory", "wildcard-toleration"),
        (_pod([FOREIGN], DAEMONSET), "mallory", "foreign-team-toleration"),  # a forged DaemonSet owner
        # a GPU quantity the API server stores but float() makes infinite: the engine raised, /validate admitted
        (_pod([FOREIGN], limits={"nvidia.com/gpu": "1e309"}), "mallory", "foreign-team-toleration"),
    ],
    ids=["cpu-pod", "mig-slice", "forged-daemonset-owner", "gpu-quantity-past-a-float"],
)
def test_bypasses_are_refused(server: Server, pod: dict, user: str, rule: str) -> None:
    resp = server.post("/validate", admission_review(pod, "i-1", user=user)).json()["response"]
    assert resp["allowed"] is False and f"[{rule}] spec.tolerations[0]" in resp["status"]["message"]


def test_daemonset_pod_from_the_daemonset_controller_is_left_alone(server: Server) -> None:
    review = admission_review(
        _pod([{"operator": "Exists"}], DAEMONSET), "i-2", user="system:serviceaccount:kube-system:daemon-set-controller"
    )
    resp = server.post("/validate", review).json()["response"]
    assert resp["allowed"] is True


def _daemonset(tolerations: list[dict]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ml"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent", "spreadguard.io/team": "vision"}},
                "spec": {"tolerations": tolerations, "containers": [{"name": "a", "image": "busybox:1.36"}]},
            },
        },
    }


def test_a_daemonset_tolerating_every_taint_is_refused(server: Server) -> None:
    """The red team's bypass: the DaemonSet's pods come from the trusted DaemonSet controller (test above), so the
    DaemonSet itself is judged, by the isolation rules."""
    review = admission_review(_daemonset([{"operator": "Exists"}]), "i-ds", user="mallory")
    resp = server.post("/validate", review).json()["response"]
    assert resp["allowed"] is False
    assert "[wildcard-toleration] spec.template.spec.tolerations[0]" in resp["status"]["message"]


def test_a_daemonset_of_its_own_team_gets_its_toleration_and_nothing_else(server: Server) -> None:
    ds = _daemonset([])
    resp = server.post("/mutate", admission_review(ds, "i-ds-own", user="alice")).json()["response"]
    assert resp["allowed"] is True
    patched = jsonpatch.apply_patch(ds, json.loads(base64.b64decode(resp["patch"])))
    template = ds["spec"]["template"]
    assert patched["spec"]["template"] == {**template, "spec": {**template["spec"], "tolerations": [OWN]}}


def test_a_toleration_added_to_an_existing_pod_is_judged(server: Server) -> None:
    review = admission_review(_pod([OWN, FOREIGN]), "i-3", operation="UPDATE", user="mallory")
    review["request"]["oldObject"] = _pod([OWN])
    resp = server.post("/validate", review).json()["response"]
    assert resp["allowed"] is False
    assert "[foreign-team-toleration] spec.tolerations[1]" in resp["status"]["message"]
    unchanged = admission_review(_pod([OWN]), "i-4", operation="UPDATE", user="mallory")
    unchanged["request"]["oldObject"] = _pod([OWN])
    assert server.post("/validate", unchanged).json()["response"]["allowed"] is True


def test_a_foreign_toleration_among_8000_groups_is_refused_not_timed_out(server: Server) -> None:
    """Groups were looked up pairwise (8,000 groups: 13 s in the engine), so the budget ran out and the
    RayCluster was admitted unchecked with the foreign toleration of its last group."""
    workers = [
        {"groupName": f"g{i}", "replicas": 1, "template": {"spec": {"containers": [{"name": "w", "image": "ray"}]}}}
        for i in range(8000)
    ]
    workers[-1]["template"]["spec"]["tolerations"] = [FOREIGN]
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "many", "namespace": "ml", "labels": {"spreadguard.io/team": "vision"}},
        "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"name": "head", "image": "ray"}]}}},
            "workerGroupSpecs": workers,
        },
    }
    resp = server.post("/validate", admission_review(cluster, "i-many", user="mallory"), timeout=30).json()["response"]
    assert resp["allowed"] is False, resp.get("warnings")
    assert (
        "[foreign-team-toleration] spec.workerGroupSpecs[7999].template.spec.tolerations[0]"
        in resp["status"]["message"]
    )
