"""Issue-6 behaviours through the real server over TLS: gang affinity, GPU health, Job failure policy,
singleton and health-taint rules, as the API server would see them."""

from __future__ import annotations

import base64
import json

import yaml
from conftest import REPO, Server

KINDS = {"JobSet": ("jobset.x-k8s.io", "v1alpha2"), "PyTorchJob": ("kubeflow.org", "v1"), "Job": ("batch", "v1")}


def review(obj: dict, uid: str) -> dict:
    group, version = KINDS[obj["kind"]]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "operation": "CREATE",
            "namespace": "ml",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj,
        },
    }


def example(name: str) -> dict:
    return yaml.safe_load((REPO / "examples" / name).read_text())


def test_jobset_gets_failure_policy_gang_and_health_affinity(server: Server) -> None:
    resp = server.post("/mutate", review(example("jobset.yaml"), "p-1")).json()["response"]
    ops = {op["path"]: op["value"] for op in json.loads(base64.b64decode(resp["patch"]))}
    assert ops["/spec/replicatedJobs/0/template/spec/podFailurePolicy"] == {
        "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    }
    affinity = ops["/spec/replicatedJobs/0/template/spec/template/spec/affinity"]
    assert affinity["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "weight": 50,
            "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"jobset.sigs.k8s.io/jobset-name": "vit-giant"}},
                "topologyKey": "topology.kubernetes.io/zone",
            },
        }
    ]
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {
                    "key": "gke.google.com/recommended-to-run-large-training-workload",
                    "operator": "NotIn",
                    "values": ["false"],
                }
            ]
        }
    ]
    assert any("job-failure-policy" in w and "do not count against backoffLimit" in w for w in resp["warnings"])


def test_exclusive_topology_is_left_to_jobset(server: Server) -> None:
    obj = example("jobset.yaml")
    obj["metadata"]["annotations"] = {"alpha.jobset.sigs.k8s.io/exclusive-topology": "topology.kubernetes.io/zone"}
    resp = server.post("/mutate", review(obj, "p-2")).json()["response"]
    affinity = {op["path"]: op["value"] for op in json.loads(base64.b64decode(resp["patch"]))}[
        "/spec/replicatedJobs/0/template/spec/template/spec/affinity"
    ]
    # zone placement is JobSet's; a JobSet is a gang, so it is not spread over hosts either
    assert "podAffinity" not in affinity and "podAntiAffinity" not in affinity
    assert any("placement left to alpha.jobset.sigs.k8s.io/exclusive-topology" in w for w in resp["warnings"])


def test_sole_master_warns_and_health_taint_toleration_is_denied(server: Server) -> None:
    warned = server.post("/validate", review(example("pytorchjob.yaml"), "p-3")).json()["response"]
    assert warned["allowed"] is True
    assert any("[singleton-role] spec.pytorchReplicaSpecs.Master.template" in w for w in warned["warnings"])
    job = example("job.yaml")
    job["spec"]["template"]["spec"]["tolerations"] = [{"key": "nvidia.com/gpu-xid-error", "operator": "Exists"}]
    denied = server.post("/validate", review(job, "p-4")).json()["response"]
    assert denied["allowed"] is False and denied["status"]["code"] == 403
    assert "[health-taint-toleration] spec.template.spec.tolerations[0]" in denied["status"]["message"]
