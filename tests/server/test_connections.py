"""Bounded connections through the real server on 127.0.0.1: slow clients (a TLS record sent in part,
headers never finished, a body trickled) hold no request thread and are cut at their deadlines; every
error answer, gunicorn's own included, is one line of JSON; a killed worker loses at most one request."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import POLICIES_DIR, Server, TLSFiles, admission_review, json_log_lines, metric, scrape, wait_for

from webhook.server import review as admission
from webhook.server import worker

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "ml"},
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
}
SLOW = 300  # of each kind of slow client


def context_for(tls: TLSFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls.ca))


def fresh_request(srv: Server, context: ssl.SSLContext, uid: str, timeout: float = 5.0) -> float:
    """POST one review on a new connection; returns the seconds it took (fails beyond ``timeout``)."""
    started = time.monotonic()
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=context, timeout=timeout)
    try:
        conn.request("POST", "/validate", body=json.dumps(admission_review(POD, uid)).encode())
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["response"]["uid"] == uid
    finally:
        conn.close()
    return time.monotonic() - started


def tls_client(srv: Server, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def closed_by_server(sock: socket.socket, wait: float) -> bool:
    """Whether the server closed ``sock`` within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.fixture
def small_server(tls_files: TLSFiles, dedicated_server: Any, tmp_path: Path) -> Server:
    return dedicated_server(tls_files, POLICIES_DIR, "--metrics-dir", str(tmp_path / "metrics"), name="conns")


def test_slow_clients_do_not_stop_admission(small_server: Server, tls_files: TLSFiles) -> None:
    srv, context = small_server, context_for(tls_files)
    held: list[socket.socket] = []
    try:
        for _ in range(SLOW):  # 3 bytes of a TLS record header, then nothing
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            sock.sendall(b"\x16\x03\x01")
            held.append(sock)
        for _ in range(SLOW):  # a finished handshake, then headers that never end
            tls = tls_client(srv, context)
            tls.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n")
            held.append(tls)
        for _ in range(16):  # whole headers, then a body that trickles (1 byte of 100)
            tls = tls_client(srv, context)
            tls.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
            held.append(tls)
        # every fresh request is answered promptly while they are all open
        took = [fresh_request(srv, context, f"fresh-{i}") for i in range(10)]
        assert max(took) < 3.0, took
    finally:
        for sock in held:
            sock.close()


def test_slow_clients_are_cut_at_their_deadlines(small_server: Server, tls_files: TLSFiles) -> None:
    srv, context = small_server, context_for(tls_files)
    partial_tls = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    partial_tls.sendall(b"\x16\x03\x01")
    silent = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    headers = tls_client(srv, context)
    headers.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        wait = worker.HANDSHAKE_SECONDS + 2
        assert closed_by_server(partial_tls, wait) and closed_by_server(silent, wait)
        assert closed_by_server(headers, worker.REQUEST_SECONDS + 2)
        samples = scrape(srv)
        assert metric(samples, "spreadguard_connections_refused_total", reason="handshake_timeout") >= 2
        assert metric(samples, "spreadguard_connections_refused_total", reason="read_timeout") >= 1
    finally:
        for sock in (partial_tls, silent, headers):
            sock.close()


def raw_exchange(srv: Server, context: ssl.SSLContext, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``data`` as is over TLS; the status, headers and body of the answer."""
    with tls_client(srv, context) as tls:
        tls.sendall(data)
        resp = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        resp.begin()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


BAD_REQUESTS = [
    ("garbage-request-line", b"NOT AN HTTP REQUEST\r\n\r\n", 400),
    ("request-line-too-long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("one-header-too-long", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    ("headers-too-long", b"GET /healthz HTTP/1.1\r\n" + b"X-A: aaaaaaaa\r\n" * 6000 + b"\r\n", 431),
    (
        "bad-chunk-size",
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
    ),
    (
        "two-content-lengths",
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
    ),
    ("bad-header-name", b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
    ("body-beyond-discard-limit", b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 107374182400\r\n\r\n", 400),
    ("chunked-and-length", b"POST /mutate HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}", 400),
]


@pytest.mark.parametrize("data, status", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_gunicorn_errors_are_one_line_json(server: Server, tls_files: TLSFiles, data: bytes, status: int) -> None:
    got, headers, body = raw_exchange(server, context_for(tls_files), data)
    assert got == status, body[:300]
    assert headers["content-type"].startswith("application/json")
    payload = json.loads(body)
    assert set(payload) == {"error"} and payload["error"].startswith(str(status))
    assert "\n" not in payload["error"] and "<html" not in body.decode().lower()


def test_too_many_connections_evict_the_oldest_idle(tls_files: TLSFiles, dedicated_server: Any, tmp_path: Path) -> None:
    """At the per-worker cap a new connection evicts an idle one: fresh requests are still answered."""
    srv = dedicated_server(
        tls_files, POLICIES_DIR, "--max-connections", "50", "--metrics-dir", str(tmp_path / "m"), name="cap"
    )
    context = context_for(tls_files)
    held = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(150)]
    try:
        took = [fresh_request(srv, context, f"capped-{i}") for i in range(5)]
        assert max(took) < 3.0, took
        assert metric(scrape(srv), "spreadguard_connections_refused_total", reason="too_many_connections") >= 1
    finally:
        for sock in held:
            sock.close()


def test_killed_worker_loses_at_most_one_request(small_server: Server, tls_files: TLSFiles) -> None:
    srv, context = small_server, context_for(tls_files)
    stop = threading.Event()
    outcomes: list[bool] = []

    def client() -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=context, timeout=10)
        for i in range(3000):  # bounded
            if stop.is_set():
                break
            try:
                conn.request("POST", "/validate", body=json.dumps(admission_review(POD, f"k-{i}")).encode())
                resp = conn.getresponse()
                outcomes.append(resp.status == 200 and json.loads(resp.read())["response"]["uid"] == f"k-{i}")
            except (OSError, http.client.HTTPException):
                outcomes.append(False)
                conn.close()
                conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=context, timeout=10)
        conn.close()

    def workers() -> list[int]:
        return [
            int(line["msg"].rsplit(" ", 1)[1])
            for line in json_log_lines(srv.log_text())
            if line.get("msg", "").startswith("Booting worker with pid:")
        ]

    before = workers()
    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(outcomes) >= 50, 30, "requests before the kill")
        # kill the worker that is serving the client's connection
        pid_of = {
            line["uid"]: line["pid"]
            for line in json_log_lines(srv.log_text())
            if line.get("logger") == "spreadguard.admission" and str(line.get("uid", "")).startswith("k-")
        }
        victim = pid_of[max(pid_of, key=lambda u: int(u[2:]))]
        os.kill(victim, signal.SIGKILL)
        count = len(outcomes)
        wait_for(lambda: len(workers()) > len(before), 30, "gunicorn to start a new worker", server=srv)
        wait_for(lambda: len(outcomes) >= count + 50, 30, "requests after the kill")
    finally:
        stop.set()
        thread.join(30)
    lost = outcomes.count(False)
    assert lost <= 1, f"{lost} of {len(outcomes)} requests lost"
    assert fresh_request(srv, context, "after-kill") < 3.0


def read_response(tls: ssl.SSLSocket) -> tuple[int, dict]:
    resp = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
    resp.begin()
    return resp.status, json.loads(resp.read())


def test_pipelined_requests_are_answered_in_order(server: Server, tls_files: TLSFiles) -> None:
    bodies = [json.dumps(admission_review(POD, f"pipe-{i}")).encode() for i in range(3)]
    data = b"".join(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b) for b in bodies)
    with tls_client(server, context_for(tls_files)) as tls:
        tls.sendall(data)
        answers = [read_response(tls) for _ in bodies]
    assert [(status, a["response"]["uid"]) for status, a in answers] == [(200, f"pipe-{i}") for i in range(3)]


def test_expect_100_continue(server: Server, tls_files: TLSFiles) -> None:
    body = json.dumps(admission_review(POD, "expect-1")).encode()
    with tls_client(server, context_for(tls_files)) as tls:
        tls.sendall(
            b"POST /validate HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        tls.settimeout(5)
        assert tls.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        tls.sendall(body)
        status, answer = read_response(tls)
    assert status == 200 and answer["response"]["uid"] == "expect-1"


def worker_rss(srv: Server) -> dict[int, int]:
    """VmRSS (KiB) of each live worker of ``srv``."""
    rss = {}
    for line in json_log_lines(srv.log_text()):
        if line.get("msg", "").startswith("Booting worker with pid:"):
            pid = int(line["msg"].rsplit(" ", 1)[1])
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            rss[pid] = int(next(x for x in status.splitlines() if x.startswith("VmRSS:")).split()[1])
    return rss


def test_large_unfinished_bodies_do_not_grow_memory_without_bound(small_server: Server, tls_files: TLSFiles) -> None:
    """12 clients each announce 20 MiB and send 6 MiB of it: only LARGE_SLOTS per worker are read past
    64 KiB, the others are not read (TCP pushes back), so the workers' memory grows by a few slots at most."""
    srv, context = small_server, context_for(tls_files)
    before = worker_rss(srv)
    held: list[ssl.SSLSocket] = []
    chunk = b"x" * (1024 * 1024)

    def send(tls: ssl.SSLSocket) -> None:
        try:
            tls.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (20 * 1024 * 1024))
            for _ in range(6):
                tls.sendall(chunk)
        except OSError:  # blocked by the server's back-pressure (timeout) or cut at the deadline
            pass

    threads = []
    try:
        for _ in range(12):
            tls = tls_client(srv, context)
            tls.settimeout(3)
            held.append(tls)
            threads.append(threading.Thread(target=send, args=(tls,), daemon=True))
        for t in threads:
            t.start()
        time.sleep(2.0)
        grown = {pid: worker_rss(srv).get(pid, 0) - kib for pid, kib in before.items()}
        assert fresh_request(srv, context, "while-large") < 3.0
        # without the slots each worker would hold about 6 x 6 MiB = 36 MiB of bodies
        assert all(g < 24 * 1024 for g in grown.values()), grown
    finally:
        for tls in held:
            tls.close()
        for t in threads:
            t.join(10)


# ------------------------------------------------------------------ admission requests answered in the main loop
# (worker.py: a small admission POST is decided and answered by the worker's event loop, not a thread)


def sent_body(obj: dict, uid: str) -> bytes:
    """The review of ``obj`` as the API server writes it (compact, escaped, a newline at the end)."""
    return admission.api_server_bytes(admission_review(obj, uid))


def post(path: str, body: bytes, *headers: str, version: str = "HTTP/1.1") -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    head = (
        f"POST {path} {version}\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


GPU_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "w-0", "namespace": "ml", "labels": {"app": "trainer"}},
    "spec": {"containers": [{"name": "c", "image": "pytorch", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
}


@pytest.mark.parametrize("path", ["/admit?timeout=5s", "/mutate?timeout=10s", "/validate?timeout=5s"])
def test_admission_paths_with_the_api_servers_timeout_query_are_answered(
    server: Server, tls_files: TLSFiles, path: str
) -> None:
    """The API server calls ``<path>?timeout=<webhook timeout>``: the query is not part of the endpoint."""
    with tls_client(server, context_for(tls_files)) as tls:
        tls.sendall(post(path, sent_body(GPU_POD, "query-1")))
        status, answer = read_response(tls)
    assert status == 200
    assert answer["kind"] == "AdmissionReview" and answer["response"]["uid"] == "query-1"
    assert answer["response"]["allowed"] is True


@pytest.mark.parametrize(
    "headers, version",
    [(("Connection: close",), "HTTP/1.1"), ((), "HTTP/1.0"), (("Connection: keep-alive, close",), "HTTP/1.1")],
    ids=["http11-close", "http10", "close-among-tokens"],
)
def test_a_request_that_asks_for_close_gets_its_answer_then_the_connection_closes(
    server: Server, tls_files: TLSFiles, headers: tuple[str, ...], version: str
) -> None:
    with tls_client(server, context_for(tls_files)) as tls:
        tls.sendall(post("/admit", sent_body(GPU_POD, "close-1"), *headers, version=version))
        resp = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        resp.begin()
        answer = json.loads(resp.read())
        assert resp.status == 200 and answer["response"]["uid"] == "close-1"
        assert (resp.getheader("Connection") or "").lower() == "close"
        assert closed_by_server(tls, 5.0)


def test_http10_keep_alive_stays_open(server: Server, tls_files: TLSFiles) -> None:
    with tls_client(server, context_for(tls_files)) as tls:
        for i in range(3):
            body = sent_body(GPU_POD, f"ka-{i}")
            tls.sendall(post("/admit", body, "Connection: keep-alive", version="HTTP/1.0"))
            status, answer = read_response(tls)
            assert (status, answer["response"]["uid"]) == (200, f"ka-{i}")


def test_more_pipelined_requests_than_one_turn_are_all_answered_in_order(server: Server, tls_files: TLSFiles) -> None:
    count = worker.INLINE_BURST * 3 + 1
    data = b"".join(post("/admit", sent_body(POD, f"burst-{i}")) for i in range(count))
    assert len(data) < worker.SMALL_REQUEST_BYTES  # all answered in the main loop, several turns
    with tls_client(server, context_for(tls_files)) as tls:
        tls.sendall(data)
        answers = [read_response(tls) for _ in range(count)]
    assert [(s, a["response"]["uid"]) for s, a in answers] == [(200, f"burst-{i}") for i in range(count)]


def decided_order(srv: Server, uids: set[str]) -> list[str]:
    """The uids of ``uids`` in the order the server logged their decisions."""
    lines = json_log_lines(srv.log_text())
    return [line["uid"] for line in lines if line.get("logger") == "spreadguard.admission" and line.get("uid") in uids]


def test_a_pipelining_client_does_not_hold_up_another(tls_files: TLSFiles, dedicated_server: Any) -> None:
    """One worker: a client that sends many requests at once gets them answered INLINE_BURST at a time, with the
    other connections' requests in between; a second client's request is not answered after all of them."""
    srv = dedicated_server(tls_files, POLICIES_DIR, name="fair", workers=1)
    context = context_for(tls_files)
    many = 100
    tries = []
    for attempt in range(3):  # the second client's bytes must arrive while the first's are decided: on a busy
        # machine this process may be descheduled between the two sends; an unfair worker loses every try
        reviews = [admission_review(GPU_POD, f"a{attempt}-{i}") for i in range(many)]
        data = b"".join(post("/admit", admission.api_server_bytes(r)) for r in reviews)
        assert len(data) < worker.SMALL_REQUEST_BYTES
        with tls_client(srv, context) as first, tls_client(srv, context) as second:
            first.sendall(data)
            second.sendall(post("/admit", sent_body(GPU_POD, f"b-{attempt}")))
            status, answer = read_response(second)
            assert (status, answer["response"]["uid"]) == (200, f"b-{attempt}")
            uids = [read_response(first)[1]["response"]["uid"] for _ in range(many)]
            assert uids == [f"a{attempt}-{i}" for i in range(many)]
        order = wait_for(
            lambda a=attempt: (o := decided_order(srv, {f"b-{a}", f"a{a}-{many - 1}"})) and len(o) == 2 and o,
            10,
            "both decisions logged",
            server=srv,
        )
        tries.append(order)
        if order[0] == f"b-{attempt}":
            return
    pytest.fail(f"the second client was answered after all of the first's {many} requests, every time: {tries}")


def test_a_client_that_does_not_read_its_answers_is_cut_and_holds_nothing_up(
    tls_files: TLSFiles, dedicated_server: Any, tmp_path: Path
) -> None:
    """Answers are written without blocking: one that cannot be written waits for the socket, and the
    connection is closed WRITE_SECONDS after the answer was ready."""
    srv = dedicated_server(tls_files, POLICIES_DIR, "--metrics-dir", str(tmp_path / "m"), name="reader", workers=1)
    context = context_for(tls_files)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes back up
    raw.settimeout(10)
    raw.connect(("127.0.0.1", srv.port))
    tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
    body = sent_body(GPU_POD, "stuck")
    request = post("/mutate", body)
    sent = 0
    try:
        tls.settimeout(0.5)
        while sent < 400:  # requests until the server stops taking them (its answers are not read)
            try:
                tls.sendall(request)
            except TimeoutError:
                break
            sent += 1
        started = time.monotonic()
        took = [fresh_request(srv, context, f"meanwhile-{i}") for i in range(3)]
        assert max(took) < 2.0, took
        wait_for(
            lambda: metric(scrape(srv), "spreadguard_connections_refused_total", reason="write_timeout") >= 1,
            worker.WRITE_SECONDS + 5,
            "the stuck connection to be cut",
            server=srv,
        )
        assert time.monotonic() - started >= worker.WRITE_SECONDS - 1.5
    finally:
        tls.close()
