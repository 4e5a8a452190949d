"""``/metrics`` and the decision log: counts across gunicorn workers match what was sent, one JSON line per
decision, no object bodies, internal errors with their traceback."""

from __future__ import annotations

import base64
import copy
import http.client
import json
import logging
import os
import shutil
import signal
import ssl
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    POLICIES_DIR,
    REPO,
    TLSFiles,
    admission_review,
    json_log_lines,
    metric,
    metric_sum,
    scrape,
    wait_for,
)

from webhook.certs.files import load_not_after
from webhook.engine import decide as engine
from webhook.engine.policy import load_policies
from webhook.server import metrics
from webhook.server import review as admission
from webhook.server.logs import JsonFormatter

PYTORCHJOB = yaml.safe_load((REPO / "examples" / "pytorchjob.yaml").read_text())
PINNED = yaml.safe_load((REPO / "examples" / "denied" / "single-node-pinning.yaml").read_text())
CLIENT_THREADS = 4
MIN_ROUNDS = 3
MAX_ROUNDS = 15  # rounds are repeated until both workers answered some requests (seen in the log)


# what one round sends: (name, endpoint, body builder, expected decision, expected HTTP status)
def _pytorch(uid: str) -> bytes:
    return json.dumps(admission_review(PYTORCHJOB, uid)).encode()


def _pinned(uid: str) -> bytes:
    return json.dumps(admission_review(PINNED, uid)).encode()


def _not_json(_uid: str) -> bytes:
    return b'{"apiVersion": "admission.k8s.io/v1", not json'


def _no_uid(uid: str) -> bytes:
    review = admission_review(PYTORCHJOB, uid)
    del review["request"]["uid"]
    return json.dumps(review).encode()


ROUND = [
    ("mutate-pytorchjob", "mutate", _pytorch, "mutated", 200),
    ("mutate-pytorchjob", "mutate", _pytorch, "mutated", 200),
    ("mutate-pytorchjob", "mutate", _pytorch, "mutated", 200),
    ("validate-pinned", "validate", _pinned, "denied", 200),
    ("validate-pinned", "validate", _pinned, "denied", 200),
    ("validate-pytorchjob", "validate", _pytorch, "allowed", 200),
    ("mutate-malformed", "mutate", _not_json, "error", 400),
    ("validate-no-uid", "validate", _no_uid, "error", 400),
]


def post_on_new_connection(port: int, context: ssl.SSLContext, path: str, body: bytes) -> tuple[int, Any]:
    """POST over a connection of its own (closed after), so that requests spread over the workers."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", "Connection": "close"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def findings_of(obj: dict, uid: str, policies: list) -> Counter:
    """The (rule, policy, action) findings /validate reports for ``obj``, from the engine in-process."""
    req = admission.AdmissionRequest.from_body(admission_review(obj, uid))
    decision = engine.evaluate(obj, req.context(), policies)
    return Counter(
        [(v.rule, v.policy, "deny") for v in decision.violations]
        + [(v.rule, v.policy, "warn") for v in decision.advisories]
    )


def test_counts_match_requests_across_workers(tls_files: TLSFiles, dedicated_server: Any, tmp_path: Path) -> None:
    policies_dir = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies_dir)
    metrics_dir = tmp_path / "metrics"
    srv = dedicated_server(tls_files, policies_dir, "--metrics-dir", str(metrics_dir), name="metrics")
    context = ssl.create_default_context(cafile=str(tls_files.ca))

    policies = load_policies(policies_dir)
    pinned_findings = findings_of(PINNED, "x", policies)
    pytorch_findings = findings_of(PYTORCHJOB, "x", policies)
    assert ("single-node-pinning", "training", "deny") in pinned_findings  # the example is what it says

    sent: Counter = Counter()  # (endpoint, operation, kind, decision)
    failures: list[str] = []
    uids: dict[str, tuple[str, str]] = {}  # uid -> (endpoint, expected decision), for the log check
    patch_ops: dict[str, int] = {}

    def send(jobs: list[tuple[str, str, Any, str, int, str]]) -> None:
        for name, endpoint, build, decision, status, uid in jobs:
            try:
                code, payload = post_on_new_connection(srv.port, context, f"/{endpoint}", build(uid))
            except Exception as exc:  # every failure is reported
                failures.append(f"{uid}: {type(exc).__name__}: {exc}")
                continue
            if code != status:
                failures.append(f"{uid} ({name}): HTTP {code}, expected {status}: {payload}")
                continue
            if status != 200:
                continue
            response = payload["response"]
            got = (
                "denied"
                if not response["allowed"]
                else "mutated"
                if endpoint == "mutate" and response.get("patch")
                else "allowed"
            )
            if response["uid"] != uid or got != decision:
                failures.append(f"{uid} ({name}): answered {got} for uid {response['uid']}, expected {decision}")
            if response.get("patch"):
                patch_ops[uid] = len(json.loads(base64.b64decode(response["patch"])))

    rounds = 0
    while True:
        jobs = []
        for i, (name, endpoint, build, decision, status) in enumerate(ROUND):
            uid = f"{name}-r{rounds}-{i}"
            jobs.append((name, endpoint, build, decision, status, uid))
            malformed = decision == "error"
            kind = "unknown" if malformed else "PyTorchJob"
            operation = "unknown" if malformed else "CREATE"
            sent[(endpoint, operation, kind, decision)] += 1
            uids[uid] = (endpoint, decision)
        threads = [threading.Thread(target=send, args=(jobs[k::CLIENT_THREADS],)) for k in range(CLIENT_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        rounds += 1
        assert not failures, failures
        pids = {line["pid"] for line in json_log_lines(srv.log_text()) if line.get("logger") == "spreadguard.admission"}
        if rounds >= MIN_ROUNDS and len(pids) >= 2:
            break
        if rounds >= MAX_ROUNDS:
            pytest.fail(f"after {rounds} rounds of fresh connections only worker(s) {pids} answered")

    total = sum(sent.values())
    samples = scrape(srv)

    # requests by endpoint, operation, kind and decision: exactly what was sent, summed over both workers
    got = {
        k: v
        for (name, labels), v in samples.items()
        if name == "spreadguard_admission_requests_total"
        for k in [tuple(dict(labels)[x] for x in ("endpoint", "operation", "kind", "decision"))]
    }
    assert got == dict(sent)

    # rule findings: counted on /validate only, each finding once per request
    expected_findings = Counter()
    for _ in range(rounds):
        for _name, endpoint, build, _decision, _status in ROUND:
            if endpoint == "validate" and build is _pinned:
                expected_findings.update(pinned_findings)
            elif endpoint == "validate" and build is _pytorch:
                expected_findings.update(pytorch_findings)
    got_findings = {
        tuple(dict(labels)[x] for x in ("rule", "policy", "action")): v
        for (name, labels), v in samples.items()
        if name == "spreadguard_rule_violations_total"
    }
    assert got_findings == dict(expected_findings)

    # latency histogram: one observation per admission request, in buckets made for milliseconds
    for endpoint in ("mutate", "validate"):
        count = metric(samples, "spreadguard_admission_duration_seconds_count", endpoint=endpoint)
        assert count == sum(v for k, v in sent.items() if k[0] == endpoint)
        assert metric(samples, "spreadguard_admission_duration_seconds_bucket", endpoint=endpoint, le="+Inf") == count
        assert ("spreadguard_admission_duration_seconds_bucket", (("endpoint", endpoint), ("le", "0.0005"))) in samples
    assert metric_sum(samples, "spreadguard_admission_duration_seconds_count") == total

    # gauges
    assert (
        metric(samples, "spreadguard_certificate_expiry_timestamp_seconds")
        == load_not_after(tls_files.cert).timestamp()
    )
    assert metric(samples, "spreadguard_policies_loaded") == len(policies)
    assert metric(samples, "spreadguard_policy_last_reload_success") == 1
    assert metric(samples, "spreadguard_policy_reloads_total", result="success") == 0
    assert metric(samples, "spreadguard_policy_reloads_total", result="failure") == 0

    # the decision log: one JSON line per request, with its facts and without the object
    decision_lines = [line for line in json_log_lines(srv.log_text()) if line.get("logger") == "spreadguard.admission"]
    assert len(decision_lines) == total
    by_uid = {line["uid"]: line for line in decision_lines if line.get("uid")}
    for uid, (endpoint, decision) in uids.items():
        if decision == "error":
            continue
        line = by_uid[uid]
        assert (line["endpoint"], line["decision"], line["kind"], line["operation"]) == (
            endpoint,
            decision,
            "PyTorchJob",
            "CREATE",
        )
        assert line["namespace"] == "ml" and line["user"] == "alice" and line["dry_run"] is False
        assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
        assert line["patch_ops"] == patch_ops.get(uid, 0)
        assert "object" not in line and "patch" not in line
    pinned_line = next(line for uid, line in by_uid.items() if uid.startswith("validate-pinned"))
    assert pinned_line["name"] == PINNED["metadata"]["name"] and pinned_line["rules"] == ["single-node-pinning"]
    errors = [line for line in decision_lines if line["decision"] == "error"]
    assert len(errors) == sum(v for k, v in sent.items() if k[3] == "error")
    assert all(line["error"].startswith("malformed AdmissionReview") for line in errors)
    image = PYTORCHJOB["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["image"]
    assert image not in srv.log_text()  # no object bodies at the default level

    # a worker that dies: its counts stay, its live gauges go (child_exit hook), its replacement reports
    victim = pinned_line["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not list(metrics_dir.glob(f"gauge_live*_{victim}.db")), 30, f"worker {victim}'s gauges to go")
    after = scrape(srv)
    assert {k: v for k, v in after.items() if k[0].endswith("_total")} == {
        k: v for k, v in samples.items() if k[0].endswith("_total")
    }
    assert metric(after, "spreadguard_policies_loaded") == len(policies)
    assert metric(after, "spreadguard_policy_last_reload_success") == 1


# ------------------------------------------------------------------------------------------ in-process


POD_REVIEW = admission_review(
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "trainer-", "namespace": "ml", "labels": {"app": "trainer"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/secret-image:1",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ]
        },
    },
    "pod-uid-1",
)


@pytest.fixture
def client() -> Any:
    from webhook.server.app import create_app

    return create_app(POLICIES_DIR).test_client()


def requests_total(**labels: str) -> float:
    return metrics.get().registry.get_sample_value("spreadguard_admission_requests_total", labels) or 0.0


def decision_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "spreadguard.admission"]


def test_internal_error_is_allowed_counted_and_logged_with_traceback(
    client: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("engine exploded\nsecond line")

    monkeypatch.setattr(engine, "evaluate", boom)
    labels = {"endpoint": "validate", "operation": "CREATE", "kind": "Pod", "decision": "error"}
    before = requests_total(**labels)
    caplog.set_level(logging.INFO, logger="spreadguard")
    resp = client.post("/validate", data=json.dumps(POD_REVIEW))
    assert resp.status_code == 200
    response = resp.get_json()["response"]
    assert response["allowed"] is True and response["uid"] == "pod-uid-1"
    assert response["warnings"][0].startswith("spreadguard internal error, request allowed: RuntimeError")
    assert requests_total(**labels) == before + 1

    (record,) = decision_records(caplog)
    assert record.levelno == logging.ERROR
    line = JsonFormatter().format(record)
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["decision"] == "error" and fields["uid"] == "pod-uid-1" and fields["name"] == "trainer-"
    assert fields["error"].startswith("RuntimeError: engine exploded")
    assert "Traceback" in fields["traceback"] and "engine exploded" in fields["traceback"]


def test_debug_level_adds_the_patch_and_info_does_not(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="spreadguard")
    resp = client.post("/mutate", data=json.dumps(POD_REVIEW))
    patch = json.loads(base64.b64decode(resp.get_json()["response"]["patch"]))
    (info,) = decision_records(caplog)
    fields = json.loads(JsonFormatter().format(info))
    assert fields["decision"] == "mutated" and fields["patch_ops"] == len(patch)
    assert "patch" not in fields and "secret-image" not in json.dumps(fields)

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="spreadguard")
    client.post("/mutate", data=json.dumps(POD_REVIEW))
    (debug,) = decision_records(caplog)
    assert json.loads(JsonFormatter().format(debug))["patch"] == patch


def test_oversized_and_empty_bodies_count_as_errors(client: Any) -> None:
    labels = {"endpoint": "mutate", "operation": "unknown", "kind": "unknown", "decision": "error"}
    before = requests_total(**labels)
    assert client.post("/mutate", data=b"").status_code == 400
    assert client.post("/mutate", data=b"x" * (admission.MAX_BODY_BYTES + 1)).status_code == 400
    assert requests_total(**labels) == before + 2


def test_unknown_kinds_share_one_label_value(client: Any) -> None:
    review = copy.deepcopy(POD_REVIEW)
    review["request"]["kind"]["kind"] = "SomethingNobodyKnows"
    review["request"]["object"]["kind"] = "SomethingNobodyKnows"
    labels = {"endpoint": "validate", "operation": "CREATE", "kind": "other", "decision": "allowed"}
    before = requests_total(**labels)
    assert client.post("/validate", data=json.dumps(review)).status_code == 200
    assert requests_total(**labels) == before + 1


def test_metrics_page_in_process(client: Any) -> None:
    client.post("/mutate", data=json.dumps(POD_REVIEW))
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.content_type.startswith("text/plain")
    text = resp.get_data(as_text=True)
    assert "# TYPE spreadguard_admission_requests_total counter" in text
    assert "# TYPE spreadguard_admission_duration_seconds histogram" in text
