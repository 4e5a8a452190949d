"""Policy modes (enforce / warn / dryrun), namespace modes, and how several policies combine:
through the engine, and through the real server for the AdmissionReview each mode answers."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator

import pytest
import yaml
from conftest import REPO, Server, TLSFiles, start_server, stop

from webhook.engine.decide import evaluate
from webhook.engine.policy import Policy, load_policies
from webhook.engine.target import Context

PINNED = yaml.safe_load((REPO / "examples" / "denied" / "single-node-pinning.yaml").read_text())
SPREADABLE = yaml.safe_load((REPO / "examples" / "pytorchjob.yaml").read_text())
# elastic workers spread over hosts (a plain PyTorchJob is a gang, kept compact instead)
SPREADABLE["spec"]["elasticPolicy"] = {"minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d"}
TRAINING = next(p for p in load_policies(REPO / "policies") if p.name == "training")
assert TRAINING.name == "training"


def with_spec(policy: Policy, name: str | None = None, **changes: object) -> Policy:
    spec = policy.spec.model_copy(update=changes)
    meta = policy.metadata.model_copy(update={"name": name or policy.name})
    return policy.model_copy(update={"spec": spec, "metadata": meta})


def ctx(**kw: object) -> Context:
    return Context(operation="CREATE", namespace="ml", **kw)


@pytest.mark.parametrize(
    ("mode", "allowed", "mutates", "warns"),
    [("enforce", False, True, False), ("warn", True, True, True), ("dryrun", True, False, True)],
)
def test_mode_engine(mode: str, allowed: bool, mutates: bool, warns: bool) -> None:
    d = evaluate(PINNED, ctx(), [with_spec(TRAINING, mode=mode)])
    assert d.allowed is allowed
    assert bool(d.patch) is mutates
    assert [v.rule for v in d.advisories if v.rule != "singleton-role"] == (["single-node-pinning"] if warns else [])
    if mode == "dryrun":  # what it would add is reported instead
        assert any("would add team-tolerations: group Worker (4 replicas)" in w for w in d.dryrun)
        assert any(op["path"].endswith("Worker/template/spec/tolerations") for op in d.dryrun_patch)


@pytest.mark.parametrize(
    ("policy_mode", "label", "override", "effective_allowed"),
    [
        ("enforce", "dryrun", False, False),  # the label cannot loosen enforce...
        ("enforce", "dryrun", True, True),  # ...unless the policy allows it
        ("dryrun", "enforce", False, False),  # a namespace may opt into enforcement early
        ("warn", "bogus", False, True),  # an unknown label value is ignored
    ],
)
def test_namespace_label_mode(policy_mode: str, label: str, override: bool, effective_allowed: bool) -> None:
    policy = with_spec(TRAINING, mode=policy_mode, allowNamespaceOverride=override)
    d = evaluate(PINNED, ctx(namespace_labels={"spreadguard.io/mode": label}), [policy])
    assert d.allowed is effective_allowed


def test_policy_namespace_modes_win_over_spec_mode() -> None:
    from webhook.engine.policy import NamespaceMode

    policy = with_spec(TRAINING, namespaceModes=[NamespaceMode(namespaces=["m*"], mode="warn")])
    assert evaluate(PINNED, ctx(), [policy]).allowed is True
    assert evaluate(PINNED, Context(namespace="prod"), [policy]).allowed is False


def test_two_policies_combine_in_name_order() -> None:
    """a-preferred runs first and adds preferred anti-affinity; b-required sees the group already
    spread and adds nothing; a finding denies if any enforcing policy denies it."""
    from webhook.engine.policy import AntiAffinity, Mutations

    preferred = with_spec(
        TRAINING, "a-preferred", mode="warn", mutate=Mutations(antiAffinity=AntiAffinity(mode="preferred", weight=50))
    )
    required = with_spec(TRAINING, "b-required", mode="enforce")
    d = evaluate(SPREADABLE, ctx(), [required, preferred])
    worker = d.mutated["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(worker) == ["preferredDuringSchedulingIgnoredDuringExecution"]
    assert worker["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 50
    d = evaluate(PINNED, ctx(), [required, preferred])
    assert d.policies == ["a-preferred", "b-required"]
    assert d.modes == {"a-preferred": "warn", "b-required": "enforce"}
    assert [(v.rule, v.policy) for v in d.violations] == [("single-node-pinning", "b-required")]
    assert [v.rule for v in d.advisories] == ["singleton-role"]  # the sole Master only warns


# ----------------------------------------------------------------------- through the server


def review(obj: dict, uid: str) -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "kubeflow.org", "version": "v1", "kind": "PyTorchJob"},
            "operation": "CREATE",
            "namespace": "ml",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj,
        },
    }


@pytest.fixture(scope="module")
def mode_servers(tls_files: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    servers: dict[str, Server] = {}
    try:
        for mode in ("warn", "dryrun"):
            d = tmp_path_factory.mktemp(f"policies-{mode}")
            for f in (REPO / "policies").glob("*.yaml"):
                shutil.copy(f, d / f.name)
            for name in ("training.yaml", "isolation.yaml"):  # both match the pinned PyTorchJob
                text = (d / name).read_text().replace("mode: enforce", f"mode: {mode}", 1)
                (d / name).write_text(text)
            servers[mode] = start_server(tls_files, d, d / "server.log")
        yield servers
    finally:
        for s in servers.values():
            stop(s.process)


def test_enforce_over_http(server: Server) -> None:
    mutate = server.post("/mutate", review(PINNED, "u-1")).json()["response"]
    validate = server.post("/validate", review(PINNED, "u-2")).json()["response"]
    assert mutate["allowed"] is True and mutate["patchType"] == "JSONPatch"
    assert validate["allowed"] is False and validate["status"]["code"] == 403
    assert "[single-node-pinning]" in validate["status"]["message"]
    assert validate["auditAnnotations"]["violations"] == "single-node-pinning"


def test_warn_over_http(mode_servers: dict[str, Server]) -> None:
    server = mode_servers["warn"]
    mutate = server.post("/mutate", review(PINNED, "w-1")).json()["response"]
    validate = server.post("/validate", review(PINNED, "w-2")).json()["response"]
    assert mutate["allowed"] is True and json.loads(base64.b64decode(mutate["patch"]))
    assert validate["allowed"] is True and "status" not in validate
    assert any(w.startswith("spreadguard: [single-node-pinning]") for w in validate["warnings"])
    assert "single-node-pinning" in validate["auditAnnotations"]["warnings"].split(",")


def test_dryrun_over_http(mode_servers: dict[str, Server]) -> None:
    server = mode_servers["dryrun"]
    mutate = server.post("/mutate", review(PINNED, "d-1")).json()["response"]
    validate = server.post("/validate", review(PINNED, "d-2")).json()["response"]
    assert mutate["allowed"] is True and "patch" not in mutate
    assert any("dryrun training: would add team-tolerations" in w for w in mutate["warnings"])
    would = json.loads(mutate["auditAnnotations"]["dryrun-patch"])
    assert any(op["path"] == "/spec/pytorchReplicaSpecs/Worker/template/spec/tolerations" for op in would)
    assert validate["allowed"] is True
    assert any("[single-node-pinning]" in w for w in validate["warnings"])


def test_exemption_over_http(server: Server) -> None:
    obj = json.loads(json.dumps(PINNED))
    obj["metadata"]["annotations"] = {
        "spreadguard.io/exempt": "single-node-pinning",
        "spreadguard.io/exempt-reason": "node burn-in",
    }
    refused = review(obj, "e-1")
    granted = review(obj, "e-2")
    granted["request"]["userInfo"] = {"username": "carol", "groups": ["spreadguard:exempters"]}
    r1 = server.post("/validate", refused).json()["response"]
    r2 = server.post("/validate", granted).json()["response"]
    assert r1["allowed"] is False and "[exemption-unauthorized]" in r1["status"]["message"]
    assert "may grant: groups ['spreadguard:exempters']" in r1["status"]["message"]
    assert r2["allowed"] is True
    assert "training: single-node-pinning granted to carol (group spreadguard:exempters) (reason: node burn-in)" in r2[
        "auditAnnotations"
    ]["exemptions"].split("; ")
