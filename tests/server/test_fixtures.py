"""The engine on AdmissionReviews captured from a real kube-apiserver v1.36 (tests/data/admission).

What they show: pods created by controllers arrive at the mutating hook with only
``generateName`` (005, 017, 046); ``userInfo`` of controllers is their service account; quantities
inside CR templates stay JSON numbers while Pods carry strings; UPDATEs carry ``oldObject``.
"""

from __future__ import annotations

import base64
import json

import jsonpatch
import pytest
from conftest import FIXTURES_DIR, REPO  # noqa: E402

from webhook.engine.policy import load_policies
from webhook.server.review import review

FIXTURES = FIXTURES_DIR
POLICIES = load_policies(REPO / "policies")
HOST = "kubernetes.io/hostname"
KF_JOB = "training.kubeflow.org/job-name"
TEAM_TOLERATION = {"key": "spreadguard.io/team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}
REQ = "requiredDuringSchedulingIgnoredDuringExecution"
PREF = "preferredDuringSchedulingIgnoredDuringExecution"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def mutate(name: str) -> tuple[dict, dict, dict]:
    """(request, response, object after the patch) for a -mutate fixture through /mutate."""
    body = load(name)
    resp = review(body, POLICIES, "mutate")["response"]
    obj = body["request"]["object"]
    patch = json.loads(base64.b64decode(resp["patch"])) if "patch" in resp else []
    return body["request"], resp, jsonpatch.apply_patch(obj, patch)


def at(obj: dict, path: str) -> dict:
    cur = obj
    for part in path.split("/"):
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    return cur


# fixture, pod template path, the selector its pods get (None: no anti-affinity expected).
# Replica and elastic groups are spread over hosts (design.md, placement doctrine).
TRAINING = [
    ("100-PyTorchJob-bert-CREATE-mutate.json", "spec/pytorchReplicaSpecs/Master/template", None),
    (
        "102-PyTorchJob-elastic-gpt-CREATE-mutate.json",
        "spec/pytorchReplicaSpecs/Worker/template",
        {"training.kubeflow.org/job-name": "elastic-gpt", "training.kubeflow.org/replica-type": "worker"},
    ),
    (
        "104-TFJob-resnet-CREATE-mutate.json",
        "spec/tfReplicaSpecs/PS/template",
        {"training.kubeflow.org/job-name": "resnet", "training.kubeflow.org/replica-type": "ps"},
    ),
    ("104-TFJob-resnet-CREATE-mutate.json", "spec/tfReplicaSpecs/Chief/template", None),
    ("106-MPIJob-allreduce-CREATE-mutate.json", "spec/mpiReplicaSpecs/Launcher/template", None),
    (
        "116-RayCluster-rl-CREATE-mutate.json",
        "spec/workerGroupSpecs/0/template",
        {"ray.io/cluster": "rl", "ray.io/group": "gpu-workers"},
    ),
    ("116-RayCluster-rl-CREATE-mutate.json", "spec/headGroupSpec/template", None),
    (
        "118-RayJob-tune-CREATE-mutate.json",
        "spec/rayClusterSpec/workerGroupSpecs/0/template",
        {"spreadguard.io/group": "rayjob-tune-gpu-workers"},
    ),
    ("122-Job-mpi-train-CREATE-mutate.json", "spec/tasks/0/template", None),
    ("132-Pod-rl-gpu-workers-abcde-CREATE-mutate.json", "", {"ray.io/cluster": "rl", "ray.io/group": "gpu-workers"}),
]

# Gangs (synchronous training: any node failure restarts all of it) are kept compact, never spread
# over hosts: fixture, pod template path, the selector of the whole gang.
GANGS = [
    ("100-PyTorchJob-bert-CREATE-mutate.json", "spec/pytorchReplicaSpecs/Worker/template", {KF_JOB: "bert"}),
    ("104-TFJob-resnet-CREATE-mutate.json", "spec/tfReplicaSpecs/Worker/template", {KF_JOB: "resnet"}),
    ("106-MPIJob-allreduce-CREATE-mutate.json", "spec/mpiReplicaSpecs/Worker/template", {KF_JOB: "allreduce"}),
    ("108-XGBoostJob-xgb-CREATE-mutate.json", "spec/xgbReplicaSpecs/Worker/template", {KF_JOB: "xgb"}),
    (
        "110-JobSet-pretrain-CREATE-mutate.json",
        "spec/replicatedJobs/0/template/spec/template",
        {"jobset.sigs.k8s.io/jobset-name": "pretrain"},
    ),
    ("122-Job-mpi-train-CREATE-mutate.json", "spec/tasks/1/template", {"volcano.sh/job-name": "mpi-train"}),
    # Pods from operators, matched to their gang by labels (the backstop)
    ("128-Pod-bert-worker-0-CREATE-mutate.json", "", {KF_JOB: "bert"}),
    ("130-Pod-pretrain-workers-0-1-CREATE-mutate.json", "", {"jobset.sigs.k8s.io/jobset-name": "pretrain"}),
]


@pytest.mark.parametrize(("name", "path", "selector"), TRAINING, ids=[f"{n[:3]}:{p or 'pod'}" for n, p, _ in TRAINING])
def test_training_fixture_mutation(name: str, path: str, selector: dict | None) -> None:
    req, resp, after = mutate(name)
    assert resp["uid"] == req["uid"] and resp["allowed"] is True
    template = at(after, path) if path else after
    spec = template["spec"]
    assert TEAM_TOLERATION in spec["tolerations"]  # every template carries spreadguard.io/team: vision
    if selector is None:
        assert "podAntiAffinity" not in spec.get("affinity", {})
        return
    anti = spec["affinity"]["podAntiAffinity"]
    term = {"labelSelector": {"matchLabels": selector}, "topologyKey": HOST}
    if path:
        assert anti == {REQ: [term]}
    else:  # a Pod whose workload was not mutated: its group size is unknown, so preferred, never Pending
        assert anti == {PREF: [{"weight": 100, "podAffinityTerm": term}]}
    assert "topologySpreadConstraints" not in spec  # training is not scattered across zones


@pytest.mark.parametrize(("name", "path", "gang"), GANGS, ids=[f"{n[:3]}:{p or 'pod'}" for n, p, _ in GANGS])
def test_gang_fixture_is_kept_compact(name: str, path: str, gang: dict) -> None:
    req, resp, after = mutate(name)
    assert resp["allowed"] is True
    spec = (at(after, path) if path else after)["spec"]
    assert TEAM_TOLERATION in spec["tolerations"]
    assert "podAntiAffinity" not in spec["affinity"] and "topologySpreadConstraints" not in spec
    zone = {"labelSelector": {"matchLabels": gang}, "topologyKey": "topology.kubernetes.io/zone"}
    # no cluster view in this test server: one zone is preferred, and the warning says why
    assert {"weight": 50, "podAffinityTerm": zone} in spec["affinity"]["podAffinity"][PREF]
    assert any("no cluster view to check a zone can hold it" in w for w in resp["warnings"])


def test_controller_pod_with_generate_name_only_is_mutated() -> None:
    """017: the job-controller's pod has no name yet; it is still matched to Job train's group."""
    req, resp, after = mutate("017-Pod-CREATE-mutate.json")
    assert "name" not in req and after["metadata"]["generateName"] == "train-0-"
    assert req["userInfo"]["username"] == "system:serviceaccount:kube-system:job-controller"
    terms = after["spec"]["affinity"]["podAntiAffinity"][PREF]
    term = {"labelSelector": {"matchLabels": {"batch.kubernetes.io/job-name": "train"}}, "topologyKey": HOST}
    assert terms == [{"weight": 100, "podAffinityTerm": term}]
    assert any("instead of required (group size unknown at the pod)" in w for w in resp["warnings"])


def test_trainjob_is_left_to_the_pod_backstop_and_says_so() -> None:
    _, resp, _ = mutate("120-TrainJob-llm-ft-CREATE-mutate.json")
    assert "patch" not in resp
    assert any("jobset.sigs.k8s.io/jobset-name=llm-ft" in w for w in resp["warnings"])


@pytest.mark.parametrize(
    "name",
    [
        "001-Deployment-CREATE-mutate.json",
        "005-Pod-CREATE-mutate.json",
        "011-StatefulSet-CREATE-mutate.json",
        "043-ReplicaSet-CREATE-mutate.json",
    ],
)
def test_cpu_web_workloads_are_untouched(name: str) -> None:
    _, resp, _ = mutate(name)
    assert resp["allowed"] is True and "patch" not in resp and "warnings" not in resp


@pytest.mark.parametrize(
    "name",
    [
        "124-PyTorchJob-bert-UPDATE-mutate.json",
        "126-RayCluster-rl-UPDATE-dryrun-mutate.json",
        "033-Deployment-UPDATE-mutate.json",
    ],
)
def test_update_that_leaves_templates_alone_adds_nothing(name: str) -> None:
    """A label change on an existing workload must not rewrite (possibly immutable) templates."""
    req, resp, _ = mutate(name)
    assert req["operation"] == "UPDATE" and req["oldObject"]
    assert "patch" not in resp


def test_dry_run_request_gets_the_same_mutation() -> None:
    """031 is `kubectl apply --dry-run=server`: it must show what a real apply would get."""
    body = load("031-Deployment-CREATE-dryrun-mutate.json")
    assert body["request"]["dryRun"] is True
    real = json.loads(json.dumps(body))
    real["request"]["dryRun"] = False
    assert (
        review(body, POLICIES, "mutate")["response"]["patch"] == review(real, POLICIES, "mutate")["response"]["patch"]
    )


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*-validate.json")))
def test_validate_fixtures_are_allowed(name: str) -> None:
    """None of the captured objects breaks a rule (they were admitted by the real cluster)."""
    body = load(name)
    resp = review(body, POLICIES, "validate")["response"]
    assert resp["uid"] == body["request"]["uid"]
    assert resp["allowed"] is True, resp.get("status")


def test_mutated_fixture_denied_when_pinned() -> None:
    """The captured PyTorchJob with its workers pinned to one host is denied at /validate."""
    body = load("101-PyTorchJob-bert-CREATE-validate.json")
    worker = body["request"]["object"]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    worker["nodeSelector"] = {HOST: "gpu-node-1"}
    resp = review(body, POLICIES, "validate")["response"]
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    msg = resp["status"]["message"]
    assert msg.startswith("spreadguard denied PyTorchJob ml/bert: 1 violation(s)\n- [single-node-pinning] ")
    assert "spec.pytorchReplicaSpecs.Worker.template.spec.nodeSelector[kubernetes.io/hostname]" in msg
    assert "one node failure stops every replica. Fix:" in msg
    assert resp["auditAnnotations"]["violations"] == "single-node-pinning"
