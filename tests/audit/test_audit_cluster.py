"""``spreadguard audit --cluster`` against a test double of the Kubernetes API.

There is no kube-apiserver on this machine (nor kind/k3s), so these tests run the shared fake API server
(tests/fakeapi.py, a test double): a real HTTPS server on 127.0.0.1 that answers like one: ``/api`` and
``/apis`` discovery, per-group resource lists, ``list`` endpoints with ``limit`` / ``continue`` paging,
bearer-token authentication, a 403 for one resource, and a CRD group that ``/apis`` lists but whose
discovery answers 404 (a CRD that is gone). A generated kubeconfig points the real ``kubernetes`` client
at it, so the real configuration loading, TLS, auth headers, request building and error paths run; only
the server side is simulated.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fakeapi
import jsonschema
import pytest
import yaml
from conftest import REPO, TLSFiles, free_port
from fakeapi import FakeKubeAPI

from webhook.cli import main
from webhook.cli.audit import _Progress
from webhook.engine import workloads
from webhook.kube import listing as cluster

EXAMPLES = REPO / "examples"
POLICIES = REPO / "policies"
SCHEMA = json.loads((REPO / "tests" / "data" / "audit" / "policyreport-v1alpha2.schema.json").read_text())
TOKEN = "audit-token"

# ------------------------------------------------------------------------ the cluster's contents


def _example(name: str, uid: str, namespace: str = "ml") -> dict:
    obj = yaml.safe_load((EXAMPLES / name).read_text())
    obj["metadata"].update(
        namespace=namespace, uid=uid, resourceVersion="1", managedFields=[{"manager": "kubectl", "operation": "Apply"}]
    )
    return obj


def _owned_pod(name: str, owner_kind: str, owner_uid: str, labels: dict, namespace: str = "ml") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "labels": labels,
            "ownerReferences": [
                {"apiVersion": "x", "kind": owner_kind, "name": "o", "uid": owner_uid, "controller": True}
            ],
        },
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": 1}}}]},
    }


def cluster_objects() -> dict[tuple[str, str, str], list[dict]]:
    """(group/version, plural, namespace) -> objects, as a small but complete cluster holds them."""
    serving = _example("deployment.yaml", "dep-1")
    labels = serving["spec"]["template"]["metadata"]["labels"]
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "llama-8b-serving-5d4f",
            "namespace": "ml",
            "uid": "rs-1",
            "ownerReferences": [{"kind": "Deployment", "name": "llama-8b-serving", "uid": "dep-1", "controller": True}],
        },
        "spec": copy.deepcopy(serving["spec"]),
    }
    pinned = _example("denied/single-node-pinning.yaml", "pj-1")
    pods = [_owned_pod(f"llama-{i}", "ReplicaSet", "rs-1", labels) for i in range(5)]
    pods += [
        _owned_pod(
            f"bert-worker-{i}",
            "PyTorchJob",
            "pj-1",
            {"training.kubeflow.org/job-name": "bert-pinned", "training.kubeflow.org/replica-type": "worker"},
        )
        for i in range(4)
    ]
    pods.append(_owned_pod("nvidia-dcgm-x", "DaemonSet", "ds-1", {"app": "dcgm"}))
    lone = _example("pod.yaml", "pod-1")
    pods.append(lone)
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "llama-pdb", "namespace": "ml", "uid": "pdb-1"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": labels}},
    }
    other = _example("statefulset.yaml", "sts-1", namespace="team-b")
    return {
        ("v1", "namespaces", ""): [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": "ml", "labels": {"spreadguard.io/team": "vision"}},
            },
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}},
        ],
        ("apps/v1", "deployments", "ml"): [serving],
        ("apps/v1", "replicasets", "ml"): [rs],
        ("apps/v1", "statefulsets", "team-b"): [other],
        ("kubeflow.org/v1", "pytorchjobs", "ml"): [pinned, _example("pytorchjob.yaml", "pj-2")],
        ("v1", "pods", "ml"): pods,
        ("policy/v1", "poddisruptionbudgets", "ml"): [pdb],
    }


# ---------------------------------------------------------------------------- the API double

GROUPS = {  # what /apis advertises
    "apps": ["v1"],
    "batch": ["v1"],
    "policy": ["v1"],
    "kubeflow.org": ["v1"],
    "jobset.x-k8s.io": ["v1alpha2"],  # advertised, but its discovery answers 404 (CRD deleted)
}
RESOURCES = {"kubeflow.org/v1": ["pytorchjobs", "tfjobs"]}  # MPIJob, XGBoostJob: not installed


@dataclass
class Double:
    url: str
    api: FakeKubeAPI
    kubeconfig: Path

    def pages(self, path_suffix: str) -> list[dict[str, str]]:
        return self.api.pages(path_suffix)


def write_kubeconfig(path: Path, url: str, ca: Path, token: str = TOKEN) -> Path:
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "double", "cluster": {"server": url, "certificate-authority": str(ca)}}],
        "users": [{"name": "auditor", "user": {"token": token}}, {"name": "stranger", "user": {"token": "wrong"}}],
        "contexts": [
            {"name": "test", "context": {"cluster": "double", "user": "auditor", "namespace": "ml"}},
            {"name": "team-b", "context": {"cluster": "double", "user": "auditor", "namespace": "team-b"}},
            {"name": "stranger", "context": {"cluster": "double", "user": "stranger"}},
        ],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture()
def double(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Double]:
    """The shared fake API server holding ``cluster_objects()``, and a kubeconfig pointing at it."""
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    api = FakeKubeAPI(token=TOKEN)
    api.groups, api.resources = dict(GROUPS), dict(RESOURCES)
    api.forbidden = {("list", "tfjobs")}  # this user may not list TFJobs
    for (_gv, plural, _ns), items in cluster_objects().items():
        for obj in items:
            api.put(plural, obj)
    api.serve()
    try:
        yield Double(api.url, api, write_kubeconfig(tmp_path / "kubeconfig", api.url, fakeapi.tls().ca))
    finally:
        api.stop_serving()


def audit_cluster(capsys: pytest.CaptureFixture, d: Double, *args: str) -> tuple[int, str, str]:
    code = main(["audit", "--cluster", "--kubeconfig", str(d.kubeconfig), "--policies", str(POLICIES), *args])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------- tests


def test_catalog_lists_every_kind_spreadguard_knows() -> None:
    assert cluster.unlisted_kinds() == []
    assert {(k.group, k.kind) for k in cluster.CATALOG} >= set(workloads.KINDS)


def test_scan_of_one_namespace(double: Double, capsys: pytest.CaptureFixture) -> None:
    code, out, err = audit_cluster(capsys, double, "-o", "json", "--chunk-size", "2")
    assert out, err
    report = json.loads(out)
    results = {(r["resource"]["kind"], r["resource"]["name"]): r for r in report["results"]}
    # the workloads and the lone pod are audited; what their controllers made is not audited twice
    assert set(results) == {
        ("Deployment", "llama-8b-serving"),
        ("PyTorchJob", "bert-pinned"),
        ("PyTorchJob", "vit-pretrain"),
        ("Pod", "cuda-smoke-test"),
        ("PodDisruptionBudget", "llama-pdb"),
    }
    assert all(r["source"] == "cluster" for r in report["results"])
    assert results[("PyTorchJob", "bert-pinned")]["allowed"] is False
    assert results[("PyTorchJob", "bert-pinned")]["violations"][0]["rule"] == "single-node-pinning"
    # the namespace's team label reached the engine: the serving Deployment tolerates team vision's nodes
    assert '"value": "vision"' in json.dumps(results[("Deployment", "llama-8b-serving")]["patch"])
    assert "managedFields" not in json.dumps(results[("Deployment", "llama-8b-serving")]["patch"])
    pdb = results[("PodDisruptionBudget", "llama-pdb")]
    assert [a["rule"] for a in pdb["advisories"]] == ["pdb-blocks-eviction"]  # minAvailable 3 of 3 replicas
    skipped = report["summary"]["skipped"]
    assert skipped["owned by an audited workload"] == 1 + 5 + 4  # the ReplicaSet, its pods, the job's pods
    assert skipped["per-node pod (DaemonSet or static)"] == 1
    # the 403 is named (verb, resource, namespace), the rest is still audited, and the exit code says so
    assert "spreadguard: error: cluster: forbidden: cannot list tfjobs.kubeflow.org in namespace ml" in err
    assert report["errors"] == [
        {"source": "cluster", "message": "forbidden: cannot list tfjobs.kubeflow.org in namespace ml"}
    ]
    assert code == 2
    notes = report["summary"]["notes"]
    for kind in (
        "MPIJob (mpijobs.kubeflow.org)",
        "JobSet (jobsets.jobset.x-k8s.io)",
        "RayCluster (rayclusters.ray.io)",
    ):
        assert f"{kind} is not served by this cluster: skipped" in notes
    assert "\r" not in err  # stderr is not a terminal: no progress line


def test_pagination_and_read_only(double: Double, capsys: pytest.CaptureFixture) -> None:
    audit_cluster(capsys, double, "-o", "json", "--chunk-size", "2")
    pod_pages = double.pages("/api/v1/namespaces/ml/pods")
    assert len(pod_pages) == 6  # 11 pods, 2 per page
    assert all(q["limit"] == "2" for q in pod_pages)
    assert "continue" not in pod_pages[0] and all("continue" in q for q in pod_pages[1:])
    assert {r.method for r in double.api.requests} == {"GET"}
    # discovery of the group whose CRD is gone answered 404 and was not listed
    assert not double.pages("/jobsets") and double.pages("/apis/jobset.x-k8s.io/v1alpha2")


def test_all_namespaces(double: Double, capsys: pytest.CaptureFixture) -> None:
    double.api.forbidden = set()
    code, out, _ = audit_cluster(capsys, double, "-A", "-o", "json")
    report = json.loads(out)
    names = {(r["resource"]["namespace"], r["resource"]["name"]) for r in report["results"]}
    assert ("team-b", "triton-vision") in names and ("ml", "bert-pinned") in names
    assert double.pages("/api/v1/pods") and double.pages("/apis/kubeflow.org/v1/pytorchjobs")
    assert double.pages("/api/v1/namespaces")  # listed for their labels
    assert code == 1  # no error this time; the pinned job is a violation


def test_context_namespace_and_policyreport(double: Double, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = audit_cluster(capsys, double, "--context", "team-b", "-o", "policyreport")
    docs = list(yaml.safe_load_all(out))
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for doc in docs:
        assert not list(validator.iter_errors(doc))
    assert [(d["kind"], d["metadata"].get("namespace")) for d in docs] == [
        ("PolicyReport", "team-b"),
        ("ClusterPolicyReport", None),
    ]
    assert {r["resources"][0]["name"] for r in docs[0]["results"]} == {"triton-vision"}
    assert docs[0]["results"][0]["resources"][0]["uid"] == "sts-1"
    cluster_results = docs[1]["results"]
    assert {r["result"] for r in cluster_results} == {"error", "skip"}  # the 403 and the CRDs not served
    assert any(
        "forbidden: cannot list tfjobs.kubeflow.org in namespace team-b" in r["message"] for r in cluster_results
    )
    assert code == 2


def test_table_and_junit_from_a_cluster(double: Double, capsys: pytest.CaptureFixture) -> None:
    double.api.forbidden = set()
    code, out, _ = audit_cluster(capsys, double, "-n", "ml")
    assert "deny   PyTorchJob ml/bert-pinned" in out and "(cluster)" not in out
    assert "10 owned by an audited workload" in out and "note: MPIJob (mpijobs.kubeflow.org)" in out
    assert code == 1
    code, out, _ = audit_cluster(capsys, double, "-n", "ml", "-o", "junit", "--fail-on", "never")
    from xml.etree import ElementTree as ET

    suite = ET.fromstring(out).find("testsuite")
    assert int(suite.get("tests")) == 5 and int(suite.get("failures")) == 1 and code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--context", "nope"], "context 'nope' not found in"),
        (["--context", "stranger"], "unauthorized: the API server at https://127.0.0.1:"),
    ],
)
def test_config_errors_are_one_line(
    double: Double, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    code, out, err = audit_cluster(capsys, double, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_api_server_lost_mid_scan(double: Double, capsys: pytest.CaptureFixture) -> None:
    """Workloads are listed, then the pods list finds no server: what was audited is still reported."""
    double.api.forbidden = set()
    double.api.hang_up = {"pods"}
    code, out, err = audit_cluster(capsys, double, "-o", "json")
    report = json.loads(out)  # still a complete JSON document
    assert code == 2
    assert {r["resource"]["name"] for r in report["results"]} >= {"bert-pinned", "llama-8b-serving"}
    [error] = report["errors"]
    assert error["message"].startswith("cannot reach the API server at https://127.0.0.1:")
    assert "list pods" in error["message"] and error["message"] in err


def test_untrusted_server_certificate(double: Double, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from webhook.certs import files as certs

    other = certs.ensure_certs(tmp_path / "other-ca")  # a CA that did not sign the double's certificate
    cfg = write_kubeconfig(tmp_path / "kubeconfig-other", double.url, other.ca_path)
    code = main(["audit", "--cluster", "--kubeconfig", str(cfg), "--policies", str(POLICIES)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "cannot reach the API server" in err and "CERTIFICATE_VERIFY_FAILED" in err, err


def test_no_cluster(
    tmp_path: Path, tls_files: TLSFiles, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    port = free_port()  # nothing listens there: connection refused
    cfg = write_kubeconfig(tmp_path / "kubeconfig", f"https://127.0.0.1:{port}", tls_files.ca)
    code = main(["audit", "--cluster", "--kubeconfig", str(cfg), "--policies", str(POLICIES)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"spreadguard: error: cannot reach the API server at https://127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1
    code = main(["audit", "--cluster", "--kubeconfig", str(tmp_path / "missing"), "--policies", str(POLICIES)])
    err = capsys.readouterr().err
    assert code == 2 and "no kubeconfig at" in err
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # in a pod, but without a service account
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    code = main(["audit", "--cluster", "--policies", str(POLICIES)])
    err = capsys.readouterr().err
    assert code == 2 and "in-cluster configuration" in err


def test_progress_only_on_a_terminal() -> None:
    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    kind = cluster.CATALOG[-1]
    quiet = io.StringIO()
    _Progress(quiet).page(kind, 500, 10)
    assert quiet.getvalue() == ""
    tty = TTY()
    progress = _Progress(tty)
    progress.page(kind, 500, 10)
    progress.clear()
    assert "listing pods: 500" in tty.getvalue() and tty.getvalue().endswith("\r\033[K")


def test_scan_streams_pages(double: Double) -> None:
    """The scan yields objects as pages arrive: the first object comes before the last page is fetched."""
    session = cluster.connect(str(double.kubeconfig), None)
    scan = cluster.Scan(session, "ml", chunk_size=1)
    scan.discover()
    seen = 0
    for obj in scan.objects():
        if obj["kind"] == "Pod":
            seen += 1
            if seen == 1:
                assert len(double.pages("/api/v1/namespaces/ml/pods")) == 1
    assert seen == 11 and len(double.pages("/api/v1/namespaces/ml/pods")) == 11
