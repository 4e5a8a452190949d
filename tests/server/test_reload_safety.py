"""Reload safety: a policy file that yields no policy, or a reload that would remove a policy in force, is
refused like a broken file (last good set kept, /readyz and metrics say so), unless the file is deleted.
Through the real server: emptying the training policy under load admits no foreign team toleration."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import POLICIES_DIR, REPO, TLSFiles, admission_review, metric, scrape, wait_for

from webhook.engine.policy import PolicyError
from webhook.server import reload
from webhook.server.app import create_app, get_state

FOREIGN = yaml.safe_load((REPO / "examples" / "denied" / "foreign-team-toleration.yaml").read_text())
TRAINING = (POLICIES_DIR / "training.yaml").read_text()
SERVING = (POLICIES_DIR / "serving.yaml").read_text()
RENAMED = TRAINING.replace("name: training\n", "name: training-v2\n", 1)
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: not-a-policy\n"


def watcher_for(policies: Path) -> tuple[Any, reload.PolicyWatcher]:
    app = create_app(policies)
    put = lambda s: app.extensions.__setitem__("spreadguard", s)  # noqa: E731
    return app, reload.PolicyWatcher(lambda: get_state(app), put)


# what the edit does to training.yaml (None: delete it), whether the reload is accepted, the words of the error
EDITS = [
    ("empty", "", False, "defines no HAPolicy"),
    ("comments-only", "# all policies switched off for now\n", False, "defines no HAPolicy"),
    ("whitespace", "\n\n   \n", False, "defines no HAPolicy"),
    ("empty-documents", "---\n---\n", False, "defines no HAPolicy"),
    ("renamed-inside", RENAMED, False, "would remove policy 'training'"),
    ("deleted", None, True, ""),
    ("unchanged-name-new-content", TRAINING.replace("weight: 50", "weight: 60"), True, ""),
]


@pytest.mark.parametrize("edit, accepted, error", [e[1:] for e in EDITS], ids=[e[0] for e in EDITS])
def test_reload_that_drops_a_policy_is_refused_unless_the_file_is_deleted(
    tmp_path: Path, edit: str | None, accepted: bool, error: str
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    app, watcher = watcher_for(policies)
    before = get_state(app)
    assert set(before.names) == {"isolation", "serving", "training"}
    if edit is None:
        (policies / "training.yaml").unlink()
    else:
        (policies / "training.yaml").write_text(edit)
    status = watcher.check()
    assert status is not None and status.ok is accepted, status
    after = get_state(app)
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200  # the last good set keeps serving either way
    detail = ready.get_json()
    assert detail["lastReload"]["ok"] is accepted
    if accepted:
        assert after.policies is not before.policies
        expected = {"isolation", "serving"} if edit is None else {"isolation", "serving", "training"}
        assert set(after.names) == expected
    else:
        assert after.policies is before.policies  # nothing changed in what is served
        assert any(str(policies / "training.yaml") in e and error in e for e in status.errors), status.errors
        assert detail["lastReload"]["errors"] == list(status.errors)


def test_a_new_file_without_a_policy_is_refused(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    app, watcher = watcher_for(policies)
    (policies / "extra.yaml").write_text(CONFIGMAP)
    status = watcher.check()
    assert status is not None and not status.ok
    assert any("extra.yaml:1:" in e for e in status.errors), status.errors  # a non-policy document is broken


def test_start_with_an_empty_policy_file_fails(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    (policies / "training.yaml").write_text("# nothing here\n")
    with pytest.raises(PolicyError) as err:
        create_app(policies)
    assert any("training.yaml:1: defines no HAPolicy" in p for p in err.value.problems)


def test_emptying_the_policy_under_load_admits_no_foreign_toleration(
    tls_files: TLSFiles, dedicated_server: Any, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, policies)
    srv = dedicated_server(tls_files, policies, "--reload-interval", "0.2", "--metrics-dir", str(tmp_path / "m"))
    context = ssl.create_default_context(cafile=str(tls_files.ca))
    stop = threading.Event()
    answers: list[bool] = []
    failures: list[str] = []

    def load() -> None:
        for i in range(5000):  # bounded whatever happens
            if stop.is_set():
                return
            conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=context, timeout=30)
            try:  # a connection each time: both workers answer
                body = json.dumps(admission_review(FOREIGN, f"foreign-{i}")).encode()
                conn.request("POST", "/validate", body=body)
                resp = conn.getresponse()
                answers.append(json.loads(resp.read())["response"]["allowed"])
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(answers) >= 20, 60, "answers before the edit")
        (policies / "training.yaml").write_text("# emptied by mistake\n")
        wait_for(
            lambda: metric(scrape(srv), "spreadguard_policy_reloads_total", result="failure") >= 2,
            60,
            "both workers to refuse the emptied file",
            server=srv,
        )
        count = len(answers)
        wait_for(lambda: len(answers) >= count + 20, 60, "answers after the edit")
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures[:5]
    assert answers and not any(answers), f"{sum(answers)} of {len(answers)} foreign tolerations admitted"
    samples = scrape(srv)
    assert metric(samples, "spreadguard_policy_reload_refused") == 1
    assert metric(samples, "spreadguard_policy_last_reload_success") == 0
    ready = srv.get("/readyz").json()
    assert ready["status"] == "ready" and set(ready["policies"]) == {"isolation", "serving", "training"}
    assert ready["lastReload"]["ok"] is False
    assert any("defines no HAPolicy" in e for e in ready["lastReload"]["errors"])
