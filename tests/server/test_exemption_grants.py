"""Exemptions with provenance through the real server (gunicorn, TLS) started with ``--grant-key``: the
approved Job's template gets a signed grant, its controller's pods prove the approval with it, and the
same annotations on another Job's pod prove nothing (issue 11, bypass 5)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from conftest import POLICIES_DIR, TLSFiles, admission_review, serve_once

WILDCARD_JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {
        "name": "burn-in",
        "namespace": "ml",
        "annotations": {"spreadguard.io/exempt": "wildcard-toleration", "spreadguard.io/exempt-reason": "INC-2231"},
    },
    "spec": {
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "t", "image": "busybox:1.36", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
            }
        }
    },
}


def _pod(job: str, annotations: dict[str, str]) -> dict[str, Any]:
    template = WILDCARD_JOB["spec"]["template"]  # type: ignore[index]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{job}-",
            "namespace": "ml",
            "labels": {"batch.kubernetes.io/job-name": job},
            "annotations": annotations,
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": "u-1", "controller": True}
            ],
        },
        "spec": template["spec"],
    }


def _review(obj: dict, uid: str, user: str, groups: list[str]) -> dict:
    body = admission_review(obj, uid, user=user)
    body["request"]["userInfo"]["groups"] = groups
    return body


def test_grants_through_the_server(tls_files: TLSFiles, tmp_path: Path, dedicated_server: Any) -> None:
    key = tmp_path / "grant.key"
    key.write_text("0123456789abcdef0123456789abcdef0123456789abcdef\n")
    srv = dedicated_server(tls_files, POLICIES_DIR, "--grant-key", str(key))
    approved = _review(WILDCARD_JOB, "g-1", "carol", ["spreadguard:exempters"])
    resp = srv.post("/mutate", approved).json()["response"]
    ops = json.loads(base64.b64decode(resp["patch"]))
    added = next(op for op in ops if op["path"] == "/spec/template/metadata")
    annotations = added["value"]["annotations"]
    assert annotations["spreadguard.io/exempt"] == "wildcard-toleration"
    assert annotations["spreadguard.io/exempt-grant"].startswith("v1:")
    controller = "system:serviceaccount:kube-system:job-controller"
    groups = ["system:serviceaccounts", "system:authenticated"]
    own = srv.post("/validate", _review(_pod("burn-in", annotations), "g-2", controller, groups)).json()["response"]
    assert own["allowed"] is True, own.get("status")
    assert "approved for its owner Job/burn-in (grant verified)" in own["auditAnnotations"]["exemptions"]
    copied = srv.post("/validate", _review(_pod("copycat", annotations), "g-3", controller, groups)).json()
    assert copied["response"]["allowed"] is False
    assert "[wildcard-toleration]" in copied["response"]["status"]["message"]


def test_a_short_grant_key_is_refused_at_start(tls_files: TLSFiles, tmp_path: Path) -> None:
    key = tmp_path / "grant.key"
    key.write_text("too-short\n")
    done = serve_once(tls_files, "--cluster-cache", "off", "--grant-key", str(key))
    assert done.returncode == 2
    assert f"--grant-key {key}: the key has 9 bytes; at least 32 are needed" in done.stderr
