"""The workload model: each object read once into groups, with the placement class of each group.

Classes follow design.md's placement doctrine: synchronous training groups are gangs, an elastic
PyTorchJob's workers are elastic, coordinators are singletons, independent pods are replicas.
The captured AdmissionReviews (tests/data/admission) are what the real operators and API server send.
"""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import FIXTURES_DIR, REPO

from webhook.engine import model

EXAMPLES = REPO / "examples"

CLASSES = [
    # (source, {group name: (replicas, class)})
    ("examples/deployment.yaml", {"pods": (3, "replicas")}),
    ("examples/job.yaml", {"pods": (4, "replicas")}),
    ("examples/cronjob.yaml", {"pods": (2, "replicas")}),
    ("examples/pytorchjob.yaml", {"Master": (1, "gang"), "Worker": (4, "gang")}),
    ("examples/tfjob.yaml", {"Chief": (1, "gang"), "PS": (2, "replicas"), "Worker": (4, "gang")}),
    ("examples/mpijob.yaml", {"Launcher": (1, "singleton"), "Worker": (4, "gang")}),
    ("examples/xgboostjob.yaml", {"Master": (1, "gang"), "Worker": (3, "gang")}),
    ("examples/jobset.yaml", {"workers": (8, "gang")}),
    ("examples/volcanojob.yaml", {"master": (1, "gang"), "worker": (4, "gang")}),
    ("examples/raycluster.yaml", {"headgroup": (1, "singleton"), "gpu-workers": (4, "replicas")}),
    ("examples/pod.yaml", {"pod": (1, "singleton")}),
    ("102-PyTorchJob-elastic-gpt-CREATE-mutate.json", {"Worker": (4, "elastic")}),
    ("128-Pod-bert-worker-0-CREATE-mutate.json", {"worker": (None, "gang")}),
    ("130-Pod-pretrain-workers-0-1-CREATE-mutate.json", {"workers": (None, "gang")}),
    ("132-Pod-rl-gpu-workers-abcde-CREATE-mutate.json", {"gpu-workers": (None, "replicas")}),
]


def _load(source: str) -> dict:
    if source.startswith("examples/"):
        return yaml.safe_load((REPO / source).read_text())
    return json.loads((FIXTURES_DIR / source).read_text())["request"]["object"]


@pytest.mark.parametrize(("source", "expected"), CLASSES, ids=[c[0] for c in CLASSES])
def test_groups_and_placement_classes(source: str, expected: dict) -> None:
    workload = model.read(_load(source))
    assert workload is not None
    got = {m.group.name: (m.group.replicas, m.group.placement) for m in workload.groups}
    assert got == expected


def test_elastic_pytorchjob_master_is_the_singleton() -> None:
    job = yaml.safe_load((EXAMPLES / "pytorchjob.yaml").read_text())
    job["spec"]["elasticPolicy"] = {"minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d"}
    classes = {m.group.name: m.group.placement for m in model.read(job).groups}  # type: ignore[union-attr]
    assert classes == {"Master": "singleton", "Worker": "elastic"}
    job["spec"]["elasticPolicy"] = {"minReplicas": 4, "maxReplicas": 4}  # no room to shrink: still a gang
    classes = {m.group.name: m.group.placement for m in model.read(job).groups}  # type: ignore[union-attr]
    assert classes == {"Master": "gang", "Worker": "gang"}


def test_volcano_partial_min_available_is_replicas() -> None:
    job = yaml.safe_load((EXAMPLES / "volcanojob.yaml").read_text())
    job["spec"]["minAvailable"] = 1
    assert {m.group.placement for m in model.read(job).groups} == {"replicas"}  # type: ignore[union-attr]


def test_model_is_read_from_the_object_and_never_modifies_it() -> None:
    job = yaml.safe_load((EXAMPLES / "pytorchjob.yaml").read_text())
    before = json.dumps(job, sort_keys=True)
    workload = model.read(job, "ml")
    assert workload is not None
    assert (workload.kind.kind, workload.namespace, workload.name) == ("PyTorchJob", "ml", "vit-pretrain")
    facts = workload.facts(["nvidia.com/gpu"])
    assert facts is workload.facts(["nvidia.com/gpu"]), "facts are computed once per gpuResources list"
    assert facts.policy.gpu and facts.policy.largest_group == 4
    assert workload.facts(["example.com/tpu"]).policy.gpu is False
    assert json.dumps(job, sort_keys=True) == before


@pytest.mark.parametrize("obj", [None, [], "x", {"kind": "Widget", "apiVersion": "example.com/v1"}, {"kind": "Pod"}])
def test_unknown_or_malformed_objects_have_no_model(obj: object) -> None:
    assert model.read(obj) is None
