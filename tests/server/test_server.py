"""End to end over real TLS to the real gunicorn server, plus the HTTP layer's own guarantees."""

from __future__ import annotations

import base64
import copy
import http.client
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Server, TLSFiles, endpoint_of, free_port, spreadguard, subprocess_env
from flask.testing import FlaskClient

from webhook.engine import decide as engine
from webhook.engine.policy import load_policies
from webhook.server import review as admission

MAX = admission.MAX_BODY_BYTES

POD_REVIEW: dict[str, Any] = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "0b9c3a5e-7d7f-4a7e-9d61-4b1f0a2c9e11",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ml",
        "operation": "CREATE",
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trainer-0", "namespace": "ml", "labels": {"app": "trainer"}},
            "spec": {
                "containers": [
                    {"name": "main", "image": "pytorch/pytorch:2.4.0", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                ]
            },
        },
        "oldObject": None,
        "dryRun": False,
    },
}


def review_with(**changes: Any) -> bytes:
    """``POD_REVIEW`` with top-level keys replaced (``None`` removes the key)."""
    body = copy.deepcopy(POD_REVIEW)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


def request_with(**changes: Any) -> bytes:
    """``POD_REVIEW`` with keys of ``request`` replaced (``None`` removes the key)."""
    req = copy.deepcopy(POD_REVIEW["request"])
    for key, value in changes.items():
        if value is None:
            req.pop(key, None)
        else:
            req[key] = value
    return review_with(request=req)


def padded_review(size: int) -> bytes:
    """A well-formed AdmissionReview of exactly ``size`` bytes (padding in an annotation)."""
    body = copy.deepcopy(POD_REVIEW)
    body["request"]["object"]["metadata"]["annotations"] = {"pad": ""}
    base = len(json.dumps(body).encode())
    body["request"]["object"]["metadata"]["annotations"]["pad"] = "x" * (size - base)
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


def assert_json_error(resp: Any, text: str, status: int) -> dict:
    """``resp`` (requests or Flask test response) is ``status`` with a one-line ``{"error": ...}`` body."""
    assert resp.status_code == status, text[:500]
    assert "Traceback" not in text
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    payload = json.loads(text)
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    assert isinstance(payload["error"], str) and payload["error"].strip()
    assert "\n" not in payload["error"] and "\r" not in payload["error"]
    return payload


def assert_review_response(payload: Any, uid: str) -> dict:
    """A well-formed AdmissionReview v1 response for ``uid``; returns ``response``."""
    assert payload["apiVersion"] == "admission.k8s.io/v1"
    assert payload["kind"] == "AdmissionReview"
    response = payload["response"]
    assert response["uid"] == uid
    assert isinstance(response["allowed"], bool)
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"], validate=True))
        assert isinstance(ops, list) and all(isinstance(op, dict) and "op" in op and "path" in op for op in ops)
    if "warnings" in response:
        assert all(isinstance(w, str) for w in response["warnings"])
    if not response["allowed"]:
        assert isinstance(response["status"]["code"], int) and response["status"]["message"]
    return response


# ---------------------------------------------------------------------------------------------- probes


def test_healthz(server: Server) -> None:
    resp = server.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_readyz_lists_policies(server: Server) -> None:
    resp = server.get("/readyz")
    assert resp.status_code == 200
    ready = resp.json()
    assert ready["status"] == "ready" and ready["policies"] == [p.name for p in load_policies(REPO / "policies")]
    assert ready["cluster"] == {"mode": "spec-only"} and isinstance(ready["worker"], int)


# ------------------------------------------------------------------------------- captured requests


def test_captured_request_gets_review_response(server: Server, admission_fixture: Path) -> None:
    raw = admission_fixture.read_bytes()
    uid = json.loads(raw)["request"]["uid"]
    resp = server.post(endpoint_of(admission_fixture), raw)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    response = assert_review_response(resp.json(), uid)
    if endpoint_of(admission_fixture) == "/validate":
        assert "patch" not in response


def test_fixtures_dir_has_both_endpoints(fixtures_dir: Path) -> None:
    names = [p.name for p in fixtures_dir.glob("*.json")]
    assert any(n.endswith("-mutate.json") for n in names) and any(n.endswith("-validate.json") for n in names)


# ------------------------------------------------------------------------------------ malformed input

MALFORMED: list[tuple[str, bytes]] = [
    ("not-json", b"{this is not json"),
    ("json-array", b'[{"apiVersion": "admission.k8s.io/v1"}]'),
    ("wrong-apiversion", review_with(apiVersion="admission.k8s.io/v1beta1")),
    ("wrong-kind", review_with(kind="AdmissionResponse")),
    ("no-request", review_with(request=None)),
    ("request-not-object", review_with(request=["uid"])),
    ("no-uid", request_with(uid=None)),
    ("uid-not-string", request_with(uid=12345)),
    ("object-not-object", request_with(object=["not", "an", "object"])),
    ("over-the-limit", padded_review(MAX + 1)),
    ("empty-body", b""),
    ("whitespace-body", b"  \n"),
    ("binary-garbage", bytes(range(256))),
]


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
@pytest.mark.parametrize("body", [b for _, b in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_input_is_400_with_one_line_json(server: Server, endpoint: str, body: bytes) -> None:
    resp = server.post(endpoint, body)
    assert_json_error(resp, resp.text, 400)


def test_exactly_3_mib_is_accepted(server: Server) -> None:
    resp = server.post("/validate", padded_review(MAX))
    assert resp.status_code == 200, resp.text[:500]
    assert_review_response(resp.json(), POD_REVIEW["request"]["uid"])


def chunked(raw: bytes, size: int = 256 * 1024) -> Iterator[bytes]:
    """A generator body: requests sends it with Transfer-Encoding: chunked and no Content-Length."""
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def test_chunked_body_over_3_mib_is_400(server: Server) -> None:
    resp = server.session.post(server.url + "/mutate", data=chunked(padded_review(MAX + 1)), timeout=30)
    payload = assert_json_error(resp, resp.text, 400)
    assert "exceeds the limit" in payload["error"]


def test_chunked_body_of_exactly_3_mib_is_accepted(server: Server) -> None:
    resp = server.session.post(server.url + "/validate", data=chunked(padded_review(MAX)), timeout=30)
    assert resp.status_code == 200, resp.text[:500]
    assert_review_response(resp.json(), POD_REVIEW["request"]["uid"])


def test_content_type_is_not_required(server: Server) -> None:
    resp = server.session.post(
        server.url + "/mutate", data=json.dumps(POD_REVIEW).encode(), headers={"Content-Type": "text/plain"}, timeout=30
    )
    assert resp.status_code == 200
    assert_review_response(resp.json(), POD_REVIEW["request"]["uid"])


def test_get_on_admission_endpoint_is_405_json(server: Server) -> None:
    resp = server.get("/mutate")
    payload = assert_json_error(resp, resp.text, 405)
    assert "POST" in resp.headers.get("Allow", "")
    assert "405" in payload["error"]


def test_unknown_path_is_404_json(server: Server) -> None:
    resp = server.get("/no/such/path")
    payload = assert_json_error(resp, resp.text, 404)
    assert "404" in payload["error"]


# ------------------------------------------------------------------------------------ connections, TLS


def client_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))


def test_keep_alive_reuses_one_tls_connection(server: Server) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=client_context(server.ca), timeout=30)
    body = json.dumps(POD_REVIEW).encode()
    try:
        conn.connect()
        first_sock = conn.sock
        for i in range(50):
            conn.request(
                "POST", "/mutate" if i % 2 else "/validate", body=body, headers={"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            payload = json.loads(resp.read())
            assert resp.status == 200
            assert resp.getheader("Connection", "").lower() != "close"
            assert payload["response"]["uid"] == POD_REVIEW["request"]["uid"]
            assert conn.sock is first_sock, f"reconnected before request {i + 1}"
        assert first_sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        conn.close()


def test_keep_alive_survives_a_400(server: Server) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=client_context(server.ca), timeout=30)
    try:
        conn.connect()
        first_sock = conn.sock
        for body in (b"not json", json.dumps(POD_REVIEW).encode(), padded_review(MAX + 1), b"[]"):
            conn.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status in (200, 400)
        assert conn.sock is first_sock
    finally:
        conn.close()


def _handshake(port: int, context: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.version() or ""


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_1_1_is_refused(server: Server) -> None:
    context = client_context(server.ca)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer what old clients offer
    context.minimum_version = ssl.TLSVersion.TLSv1
    # control: the same client agrees on TLS 1.2 when it may
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(server.port, context) == "TLSv1.2"
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        version = _handshake(server.port, context)
    except ssl.SSLError as exc:
        if "NO_PROTOCOLS_AVAILABLE" in str(exc) or exc.reason == "NO_PROTOCOLS_AVAILABLE":
            pytest.skip(f"the local OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer TLS 1.1: {exc}")
        return  # refused by the server: good
    except (ConnectionError, OSError):
        return  # the server dropped the handshake: refused as well
    pytest.fail(f"the server accepted a {version} handshake")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_ssl_context_hook_sets_tls_1_2_minimum_and_is_cached(tls_files: TLSFiles, tmp_path: Path) -> None:
    from webhook.server import serve

    class Conf:
        certfile = str(tls_files.cert)
        keyfile = str(tls_files.key)

    made: list[ssl.SSLContext] = []

    def factory() -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1  # the hook must raise it whatever the default
        context.load_cert_chain(Conf.certfile, Conf.keyfile)
        made.append(context)
        return context

    cache = serve._ContextCache()
    first = cache.get(Conf, factory)
    assert first.minimum_version == ssl.TLSVersion.TLSv1_2
    assert cache.get(Conf, factory) is first and len(made) == 1
    # a renewed certificate (a new file in place, as a Secret update does) gets a new context
    renewed = tmp_path / "tls.crt"
    renewed.write_bytes(tls_files.cert.read_bytes())
    Conf.certfile = str(renewed)
    assert cache.get(Conf, factory) is not first and len(made) == 2


# ------------------------------------------------------------------------------------- failing starts


BROKEN_POLICY = """\
apiVersion: spreadguard.io/v1alpha1
kind: HAPolicy
metadata:
  name: broken
spec:
  mode: enforce
  mutate:
    antiAfinity:
      enabled: true
"""


def run_serve(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        spreadguard("serve", *args), cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout
    )


def test_broken_policy_directory_stops_the_start(tls_files: TLSFiles, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "broken.yaml").write_text(BROKEN_POLICY)
    done = run_serve(
        "--policies",
        str(policies),
        "--tls-cert",
        str(tls_files.cert),
        "--tls-key",
        str(tls_files.key),
        "--bind",
        f"127.0.0.1:{free_port()}",
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert f"{policies / 'broken.yaml'}:8:" in done.stderr, done.stderr
    assert "antiAfinity" in done.stderr
    assert "Traceback" not in output
    assert "Listening at" not in output


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"--tls-cert": "/nonexistent/tls.crt"}, "--tls-cert /nonexistent/tls.crt: no such file"),
        ({"--tls-key": "/nonexistent/tls.key"}, "--tls-key /nonexistent/tls.key: no such file"),
        ({"--policies": "/nonexistent/policies"}, "--policies /nonexistent/policies: no such directory"),
        ({"--bind": "localhost"}, "expected HOST:PORT"),
        ({"--bind": "127.0.0.1:70000"}, "port must be a number from 1 to 65535"),
        ({"--tls-key": "CA-KEY"}, "the key does not belong to the certificate"),
        ({"--tls-key": "CA-CERT"}, "no PEM private key in this file"),
    ],
    ids=[
        "missing-cert",
        "missing-key",
        "missing-policies",
        "bind-without-port",
        "bind-bad-port",
        "other-key",
        "cert-as-key",
    ],
)
def test_bad_arguments_exit_2_with_one_line(tls_files: TLSFiles, change: dict[str, str], expected: str) -> None:
    args = {
        "--policies": str(REPO / "policies"),
        "--tls-cert": str(tls_files.cert),
        "--tls-key": str(tls_files.key),
        "--bind": f"127.0.0.1:{free_port()}",
    }
    if "CA-KEY" in change.values() and not (tls_files.dir / "ca.key").is_file():
        pytest.skip("certs generate wrote no ca.key to use as a key of another certificate")
    stand_ins = {"CA-KEY": str(tls_files.dir / "ca.key"), "CA-CERT": str(tls_files.ca)}
    args.update({k: stand_ins.get(v, v) for k, v in change.items()})
    done = run_serve(*[part for item in args.items() for part in item])
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------------- the app's fail-open path


@pytest.fixture
def client() -> FlaskClient:
    from webhook.server.app import create_app

    return create_app(str(REPO / "policies")).test_client()


def test_internal_error_with_uid_allows_with_warning(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_args: Any, **_kwargs: Any) -> dict:
        raise RuntimeError("engine exploded\nsecond line")

    monkeypatch.setattr(engine, "evaluate", boom)
    resp = client.post("/validate", data=json.dumps(POD_REVIEW))
    assert resp.status_code == 200
    response = assert_review_response(resp.get_json(), POD_REVIEW["request"]["uid"])
    assert response["allowed"] is True
    (warning,) = response["warnings"]
    assert warning.startswith("spreadguard internal error, request allowed: RuntimeError: engine exploded")
    assert "\n" not in warning


def test_internal_error_without_uid_is_400(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(_raw: bytes) -> dict:
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(admission, "parse_review", boom)
    resp = client.post("/mutate", data=b"[1, 2]")
    assert_json_error(resp, resp.get_data(as_text=True), 400)


def test_not_ready_state_is_503(client: FlaskClient) -> None:
    from webhook.server.app import State, set_state

    set_state(client.application, State())
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["status"] == "not ready"
