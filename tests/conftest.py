"""Shared fixtures: development certificates, a real spreadguard server over TLS, the captured fixtures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
POLICIES_DIR = REPO / "policies"
# AdmissionReviews captured from a real kube-apiserver 1.36, kept in the repository (see its README.md)
FIXTURES_DIR = REPO / "tests" / "data" / "admission"
READY_TIMEOUT = 30.0


def admission_fixture_files() -> list[Path]:
    """The captured AdmissionReview requests (``*-mutate.json`` / ``*-validate.json``), sorted."""
    return sorted(p for p in FIXTURES_DIR.glob("*.json") if p.name.endswith(("-mutate.json", "-validate.json")))


def endpoint_of(path: Path) -> str:
    """``/mutate`` or ``/validate``, from the fixture's file name."""
    return "/mutate" if path.name.endswith("-mutate.json") else "/validate"


# Every test outside tests/engine/ starts a process, a server or a fake API server: marked ``server``,
# so that ``pytest -m "not server"`` runs the pure engine tests in seconds.
PURE_DIRS = ("engine",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(tests_dir).parts
        if parts[0] not in PURE_DIRS:
            item.add_marker(pytest.mark.server)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize any test taking ``admission_fixture`` over every captured request."""
    if "admission_fixture" in metafunc.fixturenames:
        files = admission_fixture_files()
        params = files or [pytest.param(None, marks=pytest.mark.skip(reason=f"no fixtures in {FIXTURES_DIR}"))]
        metafunc.parametrize("admission_fixture", params, ids=[p.name for p in files] or ["none"])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spreadguard(*args: str) -> list[str]:
    """The command line running the ``spreadguard`` CLI with this interpreter."""
    return [sys.executable, "-m", "webhook.cli", *args]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True)
class TLSFiles:
    """Development certificates made by ``spreadguard certs generate``."""

    dir: Path
    ca: Path
    cert: Path
    key: Path


@dataclass
class Server:
    """A running ``spreadguard serve``; ``session`` trusts its CA."""

    url: str
    ca: Path
    port: int
    log: Path
    process: subprocess.Popen
    session: requests.Session = field(default_factory=requests.Session)

    def post(self, path: str, body: bytes | dict | list | str, **kwargs: Any) -> requests.Response:
        """POST ``body`` (bytes as is, anything else as JSON) to ``path``."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
        return self.session.post(
            self.url + path, data=data, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url + path, timeout=kwargs.pop("timeout", 30), **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A CA and a serving certificate for localhost/127.0.0.1, made with the real CLI."""
    out = tmp_path_factory.mktemp("certs")
    done = subprocess.run(
        spreadguard("certs", "generate", "--out", str(out)),
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"certs generate failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    files = TLSFiles(dir=out, ca=out / "ca.crt", cert=out / "tls.crt", key=out / "tls.key")
    for path in (files.ca, files.cert, files.key):
        assert path.is_file(), f"certs generate did not write {path}"
    return files


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, wait, then SIGKILL if it is still there."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


SCRIPT = Path(sys.executable).with_name("spreadguard")  # the console script, as a user runs it


@dataclass
class CliRun:
    """One run of the console script: its arguments, exit code, stdout and stderr."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"spreadguard {' '.join(self.args)} -> {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def run_cli(*args: str, stdin: str | bytes | None = None, cwd: Path = REPO) -> CliRun:
    """``spreadguard ARGS`` through the console script, as typed in a shell; never a traceback."""
    assert SCRIPT.is_file(), f"the console script is not installed next to {sys.executable}"
    done = subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=subprocess_env(),
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        timeout=60,
    )
    run = CliRun(args, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"))
    assert "Traceback" not in run.out + run.err, str(run)
    return run


def serve_once(tls: TLSFiles, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``spreadguard serve`` with the default policies, ``tls`` and a free port plus ``extra`` flags, run to
    its end as a user would (for flags it must refuse at start: exit code and stderr to check)."""
    return subprocess.run(
        spreadguard(
            "serve",
            "--policies",
            str(POLICIES_DIR),
            "--tls-cert",
            str(tls.cert),
            "--tls-key",
            str(tls.key),
            "--bind",
            f"127.0.0.1:{free_port()}",
            *extra,
        ),
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_server(tls: TLSFiles, policies: Path, log: Path, *extra: str) -> Server:
    """Start ``spreadguard serve`` on a free port and wait until ``/readyz`` answers 200 (or fail)."""
    last = ""
    for _attempt in range(3):  # another process may grab the free port before gunicorn binds it
        port = free_port()
        with open(log, "wb") as out:
            process = subprocess.Popen(
                spreadguard(
                    "serve",
                    "--policies",
                    str(policies),
                    "--tls-cert",
                    str(tls.cert),
                    "--tls-key",
                    str(tls.key),
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--cluster-cache",
                    "off",
                    *extra,
                ),  # tests that want a cluster view say so
                cwd=REPO,
                env=subprocess_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(url=f"https://127.0.0.1:{port}", ca=tls.ca, port=port, log=log, process=process)
        # trust_env off: REQUESTS_CA_BUNDLE (set on many machines) would otherwise override session.verify,
        # and a proxy from the environment must not sit between the tests and 127.0.0.1
        server.session.trust_env = False
        server.session.verify = str(tls.ca)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                if server.get("/readyz", timeout=2).status_code == 200:
                    return server
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        stop(process)
        server.session.close()
        text = server.log_text()
        if "in use" not in text:
            break
    pytest.fail(
        f"spreadguard serve did not become ready within {READY_TIMEOUT:.0f} s "
        f"(exit code {process.returncode}; last error: {last or 'none'}); its log:\n{text}"
    )


@pytest.fixture(scope="session")
def server(tls_files: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server (gunicorn, TLS, 2 workers x 4 threads) serving ``<repo>/policies`` on 127.0.0.1."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    srv = start_server(tls_files, POLICIES_DIR, log)
    try:
        yield srv
    finally:
        srv.session.close()
        stop(srv.process)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """``tests/data/admission``: AdmissionReview requests captured from a real kube-apiserver."""
    assert FIXTURES_DIR.is_dir(), f"no admission fixtures at {FIXTURES_DIR}"
    return FIXTURES_DIR


# ------------------------------------------------------------------ dedicated servers, reviews, metrics


@pytest.fixture
def dedicated_server(tmp_path: Path) -> Iterator[Any]:
    """Start servers of one's own (``start(tls, policies, *extra_args, name=...)``), stopped after the test.

    For tests that change what a server serves (its policy files, its certificate) or count what it did
    (metrics): the session ``server`` is shared and must stay as it is.
    """
    started: list[Server] = []

    def start(tls: TLSFiles, policies: Path, *extra: str, name: str = "serve", workers: int = 2) -> Server:
        srv = start_server(tls, policies, tmp_path / f"{name}.log", *extra, "--workers", str(workers))
        started.append(srv)
        # /readyz answers as soon as one worker serves; tests that count per worker need them all up
        wait_for(
            lambda: sum(1 for line in json_log_lines(srv.log_text()) if line.get("msg") == "worker ready") >= workers,
            READY_TIMEOUT,
            f"{workers} worker(s) to be ready",
            server=srv,
        )
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.session.close()
            stop(srv.process)


def admission_review(
    obj: dict, uid: str, operation: str = "CREATE", namespace: str | None = None, user: str = "alice"
) -> dict:
    """An AdmissionReview (``admission.k8s.io/v1``) request for ``obj``, as the API server would send it."""
    group, _, version = str(obj.get("apiVersion", "v1")).rpartition("/")
    meta = obj.get("metadata") or {}
    ns = namespace if namespace is not None else meta.get("namespace", "default")
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": obj.get("kind", "")},
            "namespace": ns,
            "name": meta.get("name", ""),
            "operation": operation,
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "dryRun": False,
        },
    }


def scrape(srv: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``GET /metrics`` parsed: {(sample name, sorted label pairs): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    resp = srv.get("/metrics")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain"), resp.headers
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict, name: str, **labels: str) -> float:
    """The value of one sample (0 when the series does not exist)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def metric_sum(samples: dict, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= set(lbls))


def json_log_lines(text: str) -> list[dict]:
    """The JSON objects among a server log's lines (other lines are skipped)."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1, server: Server | None = None) -> Any:
    """Poll ``predicate()`` until it returns something truthy (returned) or fail after ``timeout`` s.

    With ``server``, the failure message ends with the server's log (its last lines other than decisions).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            tail = ""
            if server is not None:
                lines = [line for line in server.log_text().splitlines() if '"spreadguard.admission"' not in line]
                tail = "\nserver log (without decision lines):\n" + "\n".join(lines[-40:])
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r}){tail}")
        time.sleep(interval)
