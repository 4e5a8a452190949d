"""The engine's working copy: what mutators edit is a copy; what they never write is shared.

``decide._working_copy`` copies ``metadata`` (minus ``managedFields``) in one marshal call and, given the
workload, the path to each group's pod template, the template's metadata and the parts of its spec the
mutators write (``TEMPLATE_SPEC_WRITES``); without it, ``spec`` whole. These tests pin what that must keep:
no edit reaches the caller's object, the metadata keys keep their order, data marshal cannot copy (a YAML
timestamp read by the audit) is still copied, and templates shared by a YAML alias are mutated apart.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from webhook.engine import model, podspec
from webhook.engine.decide import TEMPLATE_SPEC_WRITES, _working_copy, evaluate
from webhook.engine.policy import load_policies
from webhook.engine.target import Context

POLICIES = load_policies(Path(__file__).resolve().parent.parent.parent / "policies")

STAMP = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def pod(created: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "w-0",
            "managedFields": [{"manager": "kubectl"}],
            "labels": {"app": "bert"},
            "creationTimestamp": created,
        },
        "spec": {"containers": [{"name": "main"}], "tolerations": []},
        "status": {"phase": "Pending"},
    }


@pytest.mark.parametrize("created", ["2026-11-30T12:00:00Z", STAMP, None], ids=["string", "datetime", "none"])
def test_edits_of_the_copy_never_reach_the_object(created: Any) -> None:
    obj = pod(created)
    copy = _working_copy(obj)
    assert copy == obj and list(copy["metadata"]) == list(obj["metadata"])  # same keys, same order
    copy["spec"]["tolerations"].append({"key": "team"})
    copy["spec"]["containers"][0]["name"] = "changed"
    copy["metadata"]["labels"]["added"] = "yes"
    assert obj == pod(created)
    assert copy["metadata"]["managedFields"] is obj["metadata"]["managedFields"]  # never written: shared
    assert copy["status"] is obj["status"]


@pytest.mark.parametrize(
    "obj",
    [{"kind": "Pod", "spec": {"a": [1]}}, {"kind": "Pod", "metadata": {"name": "x"}}, {"kind": "Pod", "spec": 3}],
    ids=["no-metadata", "no-spec", "spec-not-an-object"],
)
def test_partial_objects_are_copied_as_they_are(obj: dict[str, Any]) -> None:
    copy = _working_copy(obj)
    assert copy == obj
    for key in ("spec", "metadata"):
        if isinstance(obj.get(key), dict):
            assert copy[key] is not obj[key]


# ------------------------------------------------------------------ the copy evaluate makes: per group's template

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "admission" / "100-PyTorchJob-bert-CREATE-mutate.json"


def pytorchjob() -> tuple[dict[str, Any], Context]:
    request = json.loads(FIXTURE.read_text())["request"]
    return request["object"], Context(namespace=request["namespace"], username=request["userInfo"]["username"])


def test_with_the_workload_only_what_mutators_write_is_copied() -> None:
    obj, ctx = pytorchjob()
    before = copy.deepcopy(obj)
    workload = model.read(obj, ctx.namespace)
    assert workload is not None
    work = _working_copy(obj, workload)
    for role in ("Master", "Worker"):
        template = work["spec"]["pytorchReplicaSpecs"][role]["template"]
        original = obj["spec"]["pytorchReplicaSpecs"][role]["template"]
        # every part a mutator writes (mutators/*.py): edited here, never in the object
        for key in TEMPLATE_SPEC_WRITES:
            podspec.child(template["spec"], key, list if key != "affinity" else dict)
        template["spec"]["tolerations"].append({"key": "x", "operator": "Exists"})
        podspec.path_to(template, "spec", "affinity", "podAntiAffinity")["x"] = []
        podspec.path_to(template, "metadata", "labels")["added"] = role
        podspec.path_to(template, "metadata", "annotations")["added"] = role
        work["spec"]["pytorchReplicaSpecs"][role]["replicas"] = 99
        # what no mutator writes is the object's own
        assert template["spec"]["containers"] is original["spec"]["containers"]
    work["metadata"]["labels"]["added"] = "job"
    assert obj == before


def test_templates_shared_by_a_yaml_alias_are_mutated_each_for_its_own_group() -> None:
    """A manifest may use one YAML anchor for several groups' templates (the audit reads such files): each
    group gets its own copy, mutated for that group alone, as if the templates had been written out."""
    obj, ctx = pytorchjob()
    written_out = copy.deepcopy(obj)
    aliased = copy.deepcopy(obj)
    specs = aliased["spec"]["pytorchReplicaSpecs"]
    specs["Master"]["template"] = specs["Worker"]["template"]  # one object, two groups
    written_out["spec"]["pytorchReplicaSpecs"]["Master"]["template"] = copy.deepcopy(specs["Worker"]["template"])
    before = copy.deepcopy(aliased)
    got = evaluate(aliased, ctx, POLICIES)
    want = evaluate(written_out, ctx, POLICIES)
    assert got.mutated == want.mutated and got.patch == want.patch
    mutated = got.mutated["spec"]["pytorchReplicaSpecs"]
    assert mutated["Master"]["template"] is not mutated["Worker"]["template"]
    assert aliased == before
