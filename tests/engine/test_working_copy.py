"""The engine's working copy: what mutators edit is a copy; what they never write is shared.

``decide._working_copy`` copies ``spec`` and ``metadata`` (minus ``managedFields``) in one marshal call;
these tests pin what that must keep: no edit reaches the caller's object, the metadata keys keep their
order, and data marshal cannot copy (a YAML timestamp read by the audit) is still copied.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from webhook.engine.decide import _working_copy

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
