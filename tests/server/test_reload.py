"""Hot reload of the policy directory: under load through the real server, a valid edit switches the
responses to the new policy, a broken edit is refused (last good set kept, error with file:line on /readyz,
in the log and the metrics), and a ConfigMap-style ``..data`` symlink swap is seen as a change."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    POLICIES_DIR,
    REPO,
    Server,
    TLSFiles,
    admission_review,
    json_log_lines,
    metric,
    scrape,
    serve_once,
    wait_for,
)

from webhook.server import reload
from webhook.server.app import create_app, get_state

PYTORCHJOB = yaml.safe_load((REPO / "examples" / "pytorchjob.yaml").read_text())
# elastic workers are spread over hosts (anti-affinity mode shows the policy); a plain PyTorchJob is a gang
PYTORCHJOB["spec"]["elasticPolicy"] = {"minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d"}
BODY = json.dumps(admission_review(PYTORCHJOB, "reload")).encode()


def body_with_uid(uid: str) -> bytes:
    return json.dumps(admission_review(PYTORCHJOB, uid)).encode()


INTERVAL = "0.2"  # seconds between polls of the policy directory in these servers
MAX_REQUESTS = 50000  # a bound on the load loop whatever happens
WAIT = 60.0


def policy_texts() -> tuple[str, str, int]:
    """training.yaml with preferred anti-affinity, a broken one (mode: strict), and the broken line."""
    doc = yaml.safe_load((POLICIES_DIR / "training.yaml").read_text())
    assert doc["spec"]["mutate"]["antiAffinity"]["mode"] == "required"
    doc["spec"]["mutate"]["antiAffinity"]["mode"] = "preferred"
    preferred = "# yaml-language-server: $schema=./schema.json\n" + yaml.safe_dump(doc, sort_keys=False)
    doc["spec"]["mutate"]["antiAffinity"]["mode"] = "strict"
    broken = "# yaml-language-server: $schema=./schema.json\n" + yaml.safe_dump(doc, sort_keys=False)
    lines = broken.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "antiAffinity:")
    line = next(i for i in range(start, len(lines)) if lines[i].strip() == "mode: strict") + 1
    return preferred, broken, line


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def anti_affinity_mode(response: dict) -> str:
    """``required`` or ``preferred``: how the patch spreads the workers (``mixed``/``none`` otherwise)."""
    patch = json.loads(base64.b64decode(response.get("patch") or "W10="))
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "podAntiAffinity" and isinstance(value, dict):
                    for term in value:
                        found.add(term.split("DuringScheduling")[0])
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk([op.get("value") for op in patch])
    return found.pop() if len(found) == 1 else ("mixed" if found else "none")


class Load:
    """One client sending the PyTorchJob to /mutate in a loop over a keep-alive connection."""

    def __init__(self, srv: Server, context: ssl.SSLContext) -> None:
        self.srv = srv
        self.context = context
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.modes: list[str] = []
        self.uids: list[str] = []  # of each answered request, in the order sent
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", self.srv.port, context=self.context, timeout=30)
        try:
            for i in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
                if i % 10 == 0:  # fresh connections now and then, so both workers serve some
                    conn.close()
                try:
                    uid = f"load-{i}"
                    conn.request(
                        "POST", "/mutate", body=body_with_uid(uid), headers={"Content-Type": "application/json"}
                    )
                    resp = conn.getresponse()
                    payload = resp.read()
                    if resp.status != 200:
                        raise AssertionError(f"HTTP {resp.status}: {payload[:300]!r}")
                    response = json.loads(payload)["response"]
                    if response["uid"] != uid or not response["allowed"]:
                        raise AssertionError(f"unexpected response {response}")
                    mode = anti_affinity_mode(response)
                except Exception as exc:
                    with self.lock:
                        self.failures.append(f"request {i}: {type(exc).__name__}: {exc}")
                    conn.close()
                    continue
                with self.lock:
                    self.modes.append(mode)
                    self.uids.append(uid)
        finally:
            conn.close()

    def count(self) -> int:
        with self.lock:
            return len(self.modes)

    def wait_more(self, n: int, what: str) -> int:
        """Wait until ``n`` more responses came back; returns the count before."""
        before = self.count()
        wait_for(lambda: self.failures or self.count() >= before + n, WAIT, what)
        assert not self.failures, self.failures
        return before

    def since(self, index: int) -> list[str]:
        with self.lock:
            return self.modes[index:]

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the load client did not stop"


def reloads(srv: Server, result: str) -> float:
    return metric(scrape(srv), "spreadguard_policy_reloads_total", result=result)


def workers_reloaded(srv: Server, result: str, at_least: float) -> bool:
    """Each worker reloads on its own and counts it; 2 workers: ``at_least`` is 2 per change."""
    return reloads(srv, result) >= at_least


def test_reload_under_load(tls_files: TLSFiles, dedicated_server: Any, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    training = policies / "training.yaml"
    preferred, broken, broken_line = policy_texts()
    srv = dedicated_server(tls_files, policies, "--reload-interval", INTERVAL, name="reload")
    names = srv.get("/readyz").json()["policies"]
    context = ssl.create_default_context(cafile=str(tls_files.ca))

    with Load(srv, context) as load:
        load.wait_more(20, "responses before the edit")
        assert set(load.since(0)) == {"required"}
        ready = srv.get("/readyz").json()
        assert (ready["status"], ready["policies"], "lastReload" in ready) == ("ready", names, False)  # no reload yet

        # a valid edit: every worker (2) reloads it, and from then on every response has preferred terms
        write_atomically(training, preferred)
        wait_for(lambda: workers_reloaded(srv, "success", 2), WAIT, "both workers to reload the valid edit", server=srv)
        switched = load.wait_more(20, "responses after the reload")
        assert set(load.since(switched)) == {"preferred"}
        ready = srv.get("/readyz").json()
        assert ready["status"] == "ready" and ready["policies"] == names
        assert ready["lastReload"]["ok"] is True and ready["lastReload"]["errors"] == []

        # a broken edit: refused by every worker, the last good set (preferred) keeps serving
        write_atomically(training, broken)
        wait_for(
            lambda: workers_reloaded(srv, "failure", 2), WAIT, "both workers to refuse the broken edit", server=srv
        )
        refused = load.wait_more(20, "responses after the broken edit")
        assert set(load.since(refused)) == {"preferred"}

    assert not load.failures, load.failures
    # no response ever mixed the two sets; the switch happened once
    modes = load.since(0)
    assert set(modes) == {"required", "preferred"}
    # and each worker switched once: required ... required, preferred ... preferred (who answered: the log)
    pid_of = {
        line["uid"]: line["pid"]
        for line in json_log_lines(srv.log_text())
        if line.get("logger") == "spreadguard.admission" and str(line.get("uid")).startswith("load-")
    }
    per_worker: dict[int, list[str]] = {}
    for uid, mode in zip(load.uids, modes, strict=True):
        per_worker.setdefault(pid_of[uid], []).append(mode)
    for pid, seen in per_worker.items():
        switch = seen.index("preferred") if "preferred" in seen else len(seen)
        assert set(seen[:switch]) <= {"required"} and set(seen[switch:]) <= {"preferred"}, (pid, seen)

    resp = srv.get("/readyz")
    assert resp.status_code == 200  # still ready: it serves the last good set
    ready = resp.json()
    assert ready["status"] == "ready" and ready["policies"] == names
    last = ready["lastReload"]
    assert last["ok"] is False and isinstance(last["at"], float)
    where = f"{training}:{broken_line}:"
    assert any(e.startswith(where) and "antiAffinity.mode" in e and "strict" in e for e in last["errors"]), last

    samples = scrape(srv)
    assert metric(samples, "spreadguard_policy_last_reload_success") == 0
    assert metric(samples, "spreadguard_policies_loaded") == len(names)
    assert metric(samples, "spreadguard_policy_reloads_total", result="success") == 2
    assert metric(samples, "spreadguard_policy_reloads_total", result="failure") == 2

    log_lines = json_log_lines(srv.log_text())
    failed = [line for line in log_lines if line.get("msg", "").startswith("policy reload failed")]
    assert len(failed) == 2 and all(line["level"] == "error" for line in failed)
    assert all(any(e.startswith(where) for e in line["errors"]) for line in failed)
    assert sum(1 for line in log_lines if line.get("msg", "").startswith("policies reloaded")) == 2

    # fixing the file again is a successful reload that clears the error
    write_atomically(training, preferred)
    wait_for(lambda: workers_reloaded(srv, "success", 4), WAIT, "both workers to reload the fixed file", server=srv)
    samples = scrape(srv)
    assert metric(samples, "spreadguard_policy_last_reload_success") == 1
    assert srv.get("/readyz").json()["lastReload"]["ok"] is True

    # a worker that gunicorn restarts starts with the current set: the master updates it before forking
    # (pre_fork), so the new worker has nothing to reload (the success count stays at 4)
    def booted() -> list[int]:
        return [
            int(line["msg"].rsplit(" ", 1)[1])
            for line in json_log_lines(srv.log_text())
            if line.get("msg", "").startswith("Booting worker with pid:")
        ]

    workers = booted()
    os.kill(workers[-1], signal.SIGKILL)
    wait_for(lambda: len(booted()) > len(workers), WAIT, "gunicorn to start a new worker")
    new_worker = booted()[-1]
    modes: list[str] = []

    def new_worker_answered() -> bool:
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=context, timeout=30)
        try:  # a connection of its own each time, so that the new worker gets some
            conn.request("POST", "/mutate", body=BODY, headers={"Content-Type": "application/json"})
            modes.append(anti_affinity_mode(json.loads(conn.getresponse().read())["response"]))
        finally:
            conn.close()
        return any(
            line.get("pid") == new_worker and line.get("logger") == "spreadguard.admission"
            for line in json_log_lines(srv.log_text())
        )

    wait_for(new_worker_answered, WAIT, "the new worker to answer a request")
    assert set(modes) == {"preferred"}
    samples = scrape(srv)
    assert metric(samples, "spreadguard_policy_reloads_total", result="success") == 4
    assert metric(samples, "spreadguard_policy_last_reload_success") == 1


def configmap_volume(source: Path, mount: Path, version: str) -> None:
    """A mounted ConfigMap as the kubelet lays it out: ``name -> ..data/name``, ``..data -> ..<timestamp>``."""
    mount.mkdir()
    data = mount / version
    shutil.copytree(source, data, ignore=shutil.ignore_patterns("tests"))
    for path in sorted(data.glob("*")):
        os.symlink(f"..data/{path.name}", mount / path.name)
    os.symlink(version, mount / "..data")


def configmap_update(mount: Path, version: str, files: dict[str, str]) -> None:
    """The kubelet's atomic update: a new timestamped directory, ``..data`` swapped to it, the old removed."""
    old = mount / os.readlink(mount / "..data")
    new = mount / version
    shutil.copytree(old, new)
    for name, text in files.items():
        (new / name).write_text(text)
    os.symlink(version, mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")
    shutil.rmtree(old)


def test_configmap_symlink_swap_is_reloaded(tls_files: TLSFiles, dedicated_server: Any, tmp_path: Path) -> None:
    mount = tmp_path / "policies"
    configmap_volume(POLICIES_DIR, mount, "..2025_01_01_00_00_00.000000001")
    srv = dedicated_server(tls_files, mount, "--reload-interval", INTERVAL, name="configmap")
    preferred, _broken, _line = policy_texts()

    def mode() -> str:
        resp = srv.post("/mutate", BODY)
        assert resp.status_code == 200, resp.text
        return anti_affinity_mode(resp.json()["response"])

    assert mode() == "required"
    configmap_update(mount, "..2025_01_02_00_00_00.000000002", {"training.yaml": preferred})
    wait_for(
        lambda: workers_reloaded(srv, "success", 2), WAIT, "both workers to reload after the ..data swap", server=srv
    )
    assert {mode() for _ in range(10)} == {"preferred"}
    assert srv.get("/readyz").json()["lastReload"]["ok"] is True


# ------------------------------------------------------------------------------------------ in-process


def test_fingerprint_follows_contents_through_symlinks(tmp_path: Path) -> None:
    mount = tmp_path / "policies"
    configmap_volume(POLICIES_DIR, mount, "..v1")
    first = reload.fingerprint(mount)
    assert reload.fingerprint(mount) == first
    (mount / "README.md").write_text("not a policy")  # not a policy file: no change
    assert reload.fingerprint(mount) == first
    preferred, _broken, _line = policy_texts()
    configmap_update(mount, "..v2", {"training.yaml": preferred})
    assert os.readlink(mount / "training.yaml") == "..data/training.yaml"  # the file symlink did not change
    assert reload.fingerprint(mount) != first


def test_reload_once_keeps_the_last_good_set(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    app = create_app(policies)
    client = app.test_client()
    watcher = reload.PolicyWatcher(lambda: get_state(app), lambda s: app.extensions.__setitem__("spreadguard", s))
    original = get_state(app)
    assert watcher.check() is None and get_state(app) is original  # nothing changed

    preferred, broken, broken_line = policy_texts()
    write_atomically(policies / "training.yaml", preferred)
    status = watcher.check()
    assert status is not None and status.ok
    good = get_state(app)
    assert good is not original and good.names == original.names
    assert next(p for p in good.policies if p.name == "training").spec.mutate.antiAffinity.mode == "preferred"

    write_atomically(policies / "training.yaml", broken)
    status = watcher.check()
    assert status is not None and not status.ok
    assert any(e.startswith(f"{policies / 'training.yaml'}:{broken_line}:") for e in status.errors)
    after = get_state(app)
    assert after.policies is good.policies  # the same last good set, untouched
    assert watcher.check() is None  # the same broken files are reported once, not on every poll
    ready = client.get("/readyz")
    assert ready.status_code == 200
    detail = ready.get_json()
    assert detail["lastReload"]["ok"] is False and detail["lastReload"]["errors"] == list(status.errors)

    # a file that disappears entirely is a change too (and an empty directory is refused)
    for path in policies.glob("*.yaml"):
        path.unlink()
    status = watcher.check()
    assert status is not None and not status.ok and get_state(app).policies is good.policies


def test_watcher_thread_polls(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    app = create_app(policies)
    watcher = reload.PolicyWatcher(
        lambda: get_state(app), lambda s: app.extensions.__setitem__("spreadguard", s), interval=0.05
    ).start()
    try:
        preferred, _broken, _line = policy_texts()
        write_atomically(policies / "training.yaml", preferred)
        wait_for(lambda: get_state(app).last_reload is not None, 30, "the watcher thread to reload")
        assert get_state(app).last_reload.ok  # type: ignore[union-attr]
    finally:
        watcher.stop(timeout=10)


@pytest.mark.parametrize("interval", ["-1", "nan", "inf"])
def test_bad_reload_interval_is_refused(tls_files: TLSFiles, interval: str) -> None:
    done = serve_once(tls_files, "--reload-interval", interval, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "--reload-interval" in done.stderr and "Traceback" not in done.stderr
