"""Strict input, the body limit and the per-request time budget.

- NaN/Infinity and duplicate keys are malformed (400, one-line JSON); nesting too deep is a 400 logged at
  INFO without a traceback.
- The largest review the API server can produce for an object it accepted (3 MiB of ``<`` escaped to
  ``\\u003c``, with an oldObject) is answered, over TLS, not refused for size.
- A request over its budget is answered in time, allowed with a warning, counted and logged; an engine
  exception on /validate fails open, counted in ``spreadguard_admission_failed_open_total``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any

import pytest
from conftest import POLICIES_DIR, Server, admission_review

from webhook.engine import decide as engine
from webhook.server import metrics
from webhook.server import review as admission
from webhook.server.app import create_app

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "trainer-0", "namespace": "ml", "labels": {"app": "trainer"}},
    "spec": {"containers": [{"name": "main", "image": "pytorch", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
}
REVIEW = json.dumps(admission_review(POD, "strict-1"))

STRICT = [
    ("nan", REVIEW.replace('"nvidia.com/gpu": "1"', '"nvidia.com/gpu": NaN'), "NaN"),
    ("infinity", REVIEW.replace('"nvidia.com/gpu": "1"', '"nvidia.com/gpu": Infinity'), "Infinity"),
    ("minus-infinity", REVIEW.replace('"nvidia.com/gpu": "1"', '"nvidia.com/gpu": -Infinity'), "-Infinity"),
    ("replicas-nan", REVIEW.replace('"spec": {', '"spec": {"replicas": NaN, ', 1), "NaN"),
    ("duplicate-key", REVIEW.replace('"name": "trainer-0"', '"name": "trainer-0", "name": "other"'), "duplicate"),
    ("duplicate-uid", REVIEW.replace('"uid": "strict-1"', '"uid": "strict-1", "uid": "strict-2"'), "duplicate"),
    ("deep-nesting", REVIEW.replace('"labels": {', '"labels": ' + "[" * 100000 + "]" * 100000 + ', "x": {'), "deep"),
]


# the same, written as the API server writes (compact, a newline at the end): the fast path's refusals
_COMPACT = admission.api_server_bytes(admission_review(POD, "strict-1")).decode()
STRICT_COMPACT = [
    (f"{name}-compact", _COMPACT.replace(old, new, 1), words)
    for name, old, new, words in [
        ("nan", '"nvidia.com/gpu":"1"', '"nvidia.com/gpu":NaN', "NaN"),
        ("infinity", '"nvidia.com/gpu":"1"', '"nvidia.com/gpu":Infinity', "Infinity"),
        ("replicas-nan", '"spec":{', '"spec":{"replicas":NaN,', "NaN"),
        ("duplicate-key", '"name":"trainer-0"', '"name":"trainer-0","name":"other"', "duplicate"),
        ("duplicate-uid", '"uid":"strict-1"', '"uid":"strict-1","uid":"strict-2"', "duplicate"),
    ]
]


@pytest.mark.parametrize(
    "body, words", [s[1:] for s in STRICT + STRICT_COMPACT], ids=[s[0] for s in STRICT + STRICT_COMPACT]
)
@pytest.mark.parametrize("endpoint", ["/mutate", "/validate", "/admit"])
def test_strict_json_is_a_400(server: Server, endpoint: str, body: str, words: str) -> None:
    assert body not in (REVIEW, _COMPACT)  # the edit applied
    resp = server.post(endpoint, body.encode())
    assert resp.status_code == 400, resp.text[:300]
    payload = resp.json()
    assert set(payload) == {"error"} and "\n" not in payload["error"]
    assert words in payload["error"], payload


def test_deep_nesting_is_logged_at_info_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    client = create_app(POLICIES_DIR).test_client()
    caplog.set_level(logging.INFO, logger="spreadguard")
    body = STRICT[-1][1]
    resp = client.post("/validate", data=body)
    assert resp.status_code == 400
    records = [r for r in caplog.records if r.name.startswith("spreadguard")]
    assert records and all(r.levelno == logging.INFO and r.exc_info is None for r in records), records
    assert "nested too deeply" in records[-1].__dict__["fields"]["error"]


def escaped_review(object_bytes: int, with_old: bool) -> bytes:
    """A review as the API server writes it for a Pod of ``object_bytes`` bytes made of ``<`` (x6 escaped)."""
    obj = copy.deepcopy(POD)
    obj["metadata"]["annotations"] = {"note": ""}
    base = len(json.dumps(obj))
    obj["metadata"]["annotations"]["note"] = "<" * (object_bytes - base)
    assert len(json.dumps(obj)) == object_bytes
    review = admission_review(obj, "escaped-1", operation="UPDATE" if with_old else "CREATE")
    if with_old:
        old = copy.deepcopy(obj)
        old["metadata"]["annotations"]["note"] = "<" * (1536 * 1024 - base)  # etcd's 1.5 MiB for what is stored
        review["request"]["oldObject"] = old
    # Go's encoding/json escapes < > & as \u003c \u003e \u0026 (json.dumps does not: do it the same way)
    return json.dumps(review).replace("<", "\\u003c").encode()


@pytest.mark.parametrize("with_old", [False, True], ids=["create-3MiB", "update-3MiB-with-oldObject"])
def test_largest_escaped_review_is_answered(server: Server, with_old: bool) -> None:
    raw = escaped_review(3 * 1024 * 1024, with_old)
    assert len(raw) > 17 * 1024 * 1024  # far over the former 3 MiB limit
    assert len(raw) <= admission.MAX_BODY_BYTES
    resp = server.post("/validate" if with_old else "/mutate", raw, timeout=60)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["response"]["uid"] == "escaped-1"


def failed_open(endpoint: str, reason: str) -> float:
    value = metrics.get().registry.get_sample_value(
        "spreadguard_admission_failed_open_total", {"endpoint": endpoint, "reason": reason}
    )
    return value or 0.0


def spin(*_args: Any, **_kwargs: Any) -> None:
    """An engine that never finishes (pure Python, so the budget's exception reaches it)."""
    while True:
        pass


def test_over_budget_is_allowed_in_time_counted_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_app(POLICIES_DIR, budget_seconds=0.3).test_client()
    monkeypatch.setattr(engine, "evaluate", spin)
    caplog.set_level(logging.INFO, logger="spreadguard")
    before = failed_open("validate", "budget")
    started = time.monotonic()
    resp = client.post("/validate", data=REVIEW)
    took = time.monotonic() - started
    assert resp.status_code == 200 and 0.3 <= took < 2.0, took
    response = resp.get_json()["response"]
    assert response["allowed"] is True and response["uid"] == "strict-1"
    assert response["warnings"][0].startswith("spreadguard ran out of time, request allowed")
    assert failed_open("validate", "budget") == before + 1
    (record,) = [r for r in caplog.records if r.name == "spreadguard.admission"]
    fields = record.__dict__["fields"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert (fields["failed_open"], fields["uid"], fields["kind"], fields["name"]) == (
        "budget",
        "strict-1",
        "Pod",
        "trainer-0",
    )
    # the thread is free again and the exception did not leak: the next request is decided normally
    monkeypatch.undo()
    resp = client.post("/validate", data=REVIEW)
    assert resp.status_code == 200 and "warnings" not in resp.get_json()["response"]
    time.sleep(0.5)  # past the old deadline: nothing fires late in this thread
    assert client.get("/healthz").status_code == 200


def test_engine_exception_on_validate_fails_open_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    client = create_app(POLICIES_DIR).test_client()

    def boom(*_args: Any, **_kwargs: Any) -> None:
        raise KeyError("spec")

    monkeypatch.setattr(engine, "evaluate", boom)
    before = failed_open("validate", "error")
    resp = client.post("/validate", data=REVIEW)
    assert resp.status_code == 200 and resp.get_json()["response"]["allowed"] is True
    assert failed_open("validate", "error") == before + 1


def ray_cluster(groups: int) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "many", "namespace": "ml"},
        "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"name": "head", "image": "ray"}]}}},
            "workerGroupSpecs": [
                {"groupName": f"g{i}", "replicas": 1, "template": {"spec": {"containers": []}}} for i in range(groups)
            ],
        },
    }


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
def test_many_groups_get_a_definite_answer_before_the_webhook_timeout(server: Server, endpoint: str) -> None:
    """8,000 worker groups: decided, or allowed by the budget, but answered well before the 5 s timeout."""
    body = json.dumps(admission_review(ray_cluster(8000), "many-groups")).encode()
    started = time.monotonic()
    resp = server.post(endpoint, body, timeout=30)
    took = time.monotonic() - started
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["response"]["uid"] == "many-groups"
    assert took < 4.0, f"{took:.2f} s"


def test_large_bodies_wait_their_turn_then_fail_open_as_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from webhook.server import app as app_module

    client = create_app(POLICIES_DIR, budget_seconds=0.3).test_client()
    big = copy.deepcopy(admission_review(POD, "big-1"))
    big["request"]["object"]["metadata"]["annotations"] = {"pad": "x" * (app_module.LARGE_BODY_BYTES + 1)}
    before = failed_open("validate", "busy")
    assert app_module._large_bodies.acquire(timeout=5)  # another large request is being decided
    try:
        resp = client.post("/validate", data=json.dumps(big))
    finally:
        app_module._large_bodies.release()
    response = resp.get_json()["response"]
    assert resp.status_code == 200 and response["allowed"] is True and response["uid"] == "big-1"
    assert response["warnings"][0].startswith("spreadguard was busy, request allowed unchecked")
    assert failed_open("validate", "busy") == before + 1
    # its turn free again: decided normally
    resp = client.post("/validate", data=json.dumps(big))
    assert resp.status_code == 200 and "warnings" not in resp.get_json()["response"]


@pytest.mark.parametrize(
    "flag, value, words",
    [("--budget", "-1", "--budget"), ("--budget", "nan", "--budget"), ("--max-connections", "4", "--max-connections")],
)
def test_bad_limits_are_refused_at_start(tls_files: Any, flag: str, value: str, words: str) -> None:
    from conftest import serve_once

    done = serve_once(tls_files, flag, value, timeout=30)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("endpoint", ["/admit", "/mutate", "/validate"])
def test_a_lone_surrogate_is_decided_not_failed_open(server: Server, endpoint: str) -> None:
    """A JSON escape for half a UTF-16 pair (no API server sends one; any client can): decided like any other
    name, its answer and its decision log line written with the escape."""
    body = _COMPACT.replace('"name":"trainer-0"', '"name":"trainer-\\ud800"')
    assert body != _COMPACT
    resp = server.post(endpoint, body.encode())
    assert resp.status_code == 200, resp.text[:300]
    answer = resp.json()["response"]
    assert answer["uid"] == "strict-1"
    assert not any("internal error" in w for w in answer.get("warnings", [])), answer
