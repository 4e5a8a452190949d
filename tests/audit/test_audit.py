"""``spreadguard audit`` over manifests: reading, enforce semantics, blast radius, PDBs, every format, exit codes."""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonpatch
import jsonschema
import pytest
import yaml
from conftest import REPO, spreadguard, subprocess_env

from webhook.audit import auditor as audit
from webhook.audit import blast, manifests, pdb, results
from webhook.cli import main
from webhook.engine.decide import evaluate
from webhook.engine.policy import load_policies
from webhook.engine.target import Context

DATA = REPO / "tests" / "data" / "audit"
MANIFESTS = DATA / "manifests"
EXAMPLES = REPO / "examples"
POLICIES = REPO / "policies"
SCHEMA = json.loads((DATA / "policyreport-v1alpha2.schema.json").read_text())


@pytest.fixture(scope="module")
def policies() -> list:
    return load_policies(POLICIES)


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["audit", "--policies", str(POLICIES), *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, dict, str]:
    code, out, err = run(capsys, *args, "-o", "json")
    return code, json.loads(out), err


def by_name(report: dict) -> dict[str, dict]:
    return {r["resource"]["name"]: r for r in report["results"]}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------------- reading


def test_reader_numbers_documents_and_keeps_going_after_a_bad_one() -> None:
    docs = list(manifests.read_documents([str(MANIFESTS / "mixed.yaml")]))
    name = str(MANIFESTS / "mixed.yaml")
    assert [(d.source, d.obj is not None) for d in docs] == [
        (f"{name}#doc 1", True),  # FILE#doc N: a document number (FILE:N is a line everywhere)
        (f"{name}#doc 2", False),  # the broken Pod: reported, the rest still read
        (f"{name}#doc 3", True),  # the comment-only document is not counted
        (f"{name}#doc 4 items[0]", True),
        (f"{name}#doc 4 items[1]", False),
    ]
    assert "not valid YAML at line 24, column" in docs[1].error
    assert docs[4].error == "a str, not a Kubernetes object"
    assert docs[2].obj["data"]["created"] == "2024-05-01T10:00:00Z"  # timestamps stay strings (JSON-safe)


def test_reader_json_streams_and_typed_lists(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "p1", "namespace": "ml"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    typed = {"apiVersion": "v1", "kind": "PodList", "items": [pod]}  # as the API server returns: items lack kind
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    f = tmp_path / "stream.json"
    f.write_text(json.dumps(typed, indent=1) + "\n" + json.dumps(cm) + "\n{broken")
    docs = list(manifests.read_documents([str(f)]))
    assert [d.source.rsplit("/", 1)[-1] for d in docs] == [
        "stream.json#doc 1 items[0]",
        "stream.json#doc 2",
        "stream.json#doc 3",
    ]
    assert docs[0].obj["kind"] == "Pod" and docs[0].obj["apiVersion"] == "v1"
    assert docs[2].error.startswith("not valid JSON")


def test_reader_yaml_flow_mapping_is_not_mistaken_for_json(tmp_path: Path) -> None:
    f = tmp_path / "flow.yaml"
    f.write_text("{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}\n---\n{apiVersion: v1, kind: Pod}\n")
    assert [d.obj["kind"] for d in manifests.read_documents([str(f)])] == ["ConfigMap", "Pod"]


def test_reader_directories_recursive_only_with_R(tmp_path: Path) -> None:
    flat = {Path(d.source.split("#")[0]).name for d in manifests.read_documents([str(MANIFESTS)])}
    deep = {Path(d.source.split("#")[0]).name for d in manifests.read_documents([str(MANIFESTS)], recursive=True)}
    assert flat == {"mixed.yaml", "pdbs.yaml"}
    assert deep == flat | {"pinned-list.json"}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    [empty] = manifests.read_documents([str(tmp_path)])
    assert "use -R" in empty.error
    [missing] = manifests.read_documents([str(tmp_path / "nope.yaml")])
    assert missing.error == "no such file or directory"


# ---------------------------------------------------------------------- enforce semantics


def test_dryrun_policies_are_audited_as_enforce(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The policies say dryrun, so the webhook admits the pinned job; the audit says what enforce would do."""
    for f in POLICIES.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text().replace("mode: enforce", "mode: dryrun"))
    dry = load_policies(tmp_path)
    assert {p.spec.mode for p in dry} == {"dryrun"}
    obj = load(EXAMPLES / "denied" / "single-node-pinning.yaml")
    assert evaluate(obj, Context(namespace="ml"), dry).allowed  # the deployed behaviour
    code = main(
        [
            "audit",
            "--policies",
            str(tmp_path),
            "-f",
            str(EXAMPLES / "denied" / "single-node-pinning.yaml"),
            "-o",
            "json",
        ]
    )
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert code == 1 and result["allowed"] is False
    assert [v["rule"] for v in result["violations"]] == ["single-node-pinning"]
    assert result["violations"][0]["policy"] == "training"
    assert result["patch"], "what enforce would add is reported, not the dryrun nothing"


@pytest.mark.parametrize(
    "path", sorted(EXAMPLES.glob("*.yaml")) + sorted((EXAMPLES / "denied").glob("*.yaml")), ids=lambda p: p.name
)
def test_results_are_the_engines_decisions(path: Path, policies: list) -> None:
    """No second implementation: verdict, violations, warnings and patch are exactly evaluate()'s."""
    obj = load(path)
    result = audit.Auditor(policies).audit(copy.deepcopy(obj), f"{path}:1")
    decision = evaluate(
        obj, Context(operation="CREATE", namespace=obj["metadata"].get("namespace", ""), force_mode="enforce"), policies
    )
    assert result.allowed == decision.allowed
    assert result.violations == decision.violations
    assert result.advisories == decision.advisories
    assert result.patch == decision.patch
    assert jsonpatch.apply_patch(obj, result.patch) == decision.mutated


def test_namespace_team_label_feeds_the_engine(policies: list) -> None:
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "nlp", "labels": {"spreadguard.io/team": "nlp"}},
    }
    job = load(EXAMPLES / "job.yaml")
    job["metadata"]["namespace"] = "nlp"
    for labels in (job["metadata"].get("labels") or {}, job["spec"]["template"]["metadata"].get("labels") or {}):
        labels.pop("spreadguard.io/team", None)
    auditor = audit.Auditor(policies)
    assert auditor.audit(ns, "x:1") is None
    text = json.dumps(auditor.audit(job, "x:2").patch)
    assert '"value": "nlp"' in text and "spreadguard.io/team" in text


# ---------------------------------------------------------------------------- blast radius


def blast_of(policies: list, path: Path, zones: int = 3) -> dict[str, blast.Blast]:
    result = audit.Auditor(policies, zones=zones).audit(load(path), "x")
    return {b.group: b for b in result.blast}


@pytest.mark.parametrize(
    "example, group, replicas, per_node, node_loss",
    [
        # gangs (design.md, placement doctrine) are kept compact, not spread: any node failure restarts
        # all of a gang anyway, so spreading it would only multiply its restarts
        ("pytorchjob.yaml", "Worker", 4, None, 1.0),
        ("jobset.yaml", "workers", 8, None, 1.0),
        ("xgboostjob.yaml", "Worker", 3, None, 1.0),
        # independent replicas are spread over hosts
        ("raycluster.yaml", "gpu-workers", 4, 1, 0.25),
        ("job.yaml", "pods", 4, 1, 0.25),
        ("deployment.yaml", "pods", 3, None, 1.0),  # serving: preferred anti-affinity is best effort
        ("denied/single-node-pinning.yaml", "Worker", 4, 4, 1.0),
        ("denied/self-colocation.yaml", "pods", 3, 3, 1.0),
    ],
)
def test_blast_radius_of_examples(
    policies: list, example: str, group: str, replicas: int, per_node: int | None, node_loss: float
) -> None:
    b = blast_of(policies, EXAMPLES / example)[group]
    assert (b.replicas, b.per_node) == (replicas, per_node)
    assert b.node_share == pytest.approx(node_loss)


def test_blast_radius_phrasing(policies: list) -> None:
    workers = blast_of(policies, EXAMPLES / "raycluster.yaml")["gpu-workers"]
    assert workers.node_text() == "gpu-workers: 4 replicas, at most 1 per node: one node failure loses 25%"
    assert workers.zone_text() == "zones unbounded: all could share a zone"  # training stays in one zone
    serving = blast_of(policies, EXAMPLES / "deployment.yaml")["pods"]
    assert "unbounded per node: all could share a node" in serving.node_text()
    pinned = blast_of(policies, EXAMPLES / "denied" / "single-node-pinning.yaml")["Worker"]
    assert "pinned to node gpu-node-1" in pinned.node_text() and "loses 100%" in pinned.node_text()
    assert blast_of(policies, EXAMPLES / "pod.yaml")["pod"].text() == "pod: 1 replica: one node failure loses 100%"


def _deployment(replicas: int, spec_extra: dict) -> dict:
    labels = {"app": "svc"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "svc", "namespace": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "x"}], **spec_extra},
            },
        },
    }


def test_blast_radius_topology_spread_bounds() -> None:
    sel = {"matchLabels": {"app": "svc"}}
    zone = {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": sel,
    }
    host = {
        "maxSkew": 2,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": sel,
    }
    [b] = blast.blast_radius(_deployment(8, {"topologySpreadConstraints": [zone, host]}), zones=3)
    assert (b.per_node, b.per_zone) == (2, 3)  # 8 over 3 zones with skew 1: 3/3/2
    assert b.text() == (
        "pods: 8 replicas, at most 2 per node: one node failure loses 25%; "
        "at most 3 per zone: one zone failure loses 37.5%"
    )
    [b] = blast.blast_radius(_deployment(8, {"topologySpreadConstraints": [{**zone, "minDomains": 5}]}), zones=3)
    assert b.per_zone == 1  # fewer zones than minDomains: the global minimum counts as 0
    [b] = blast.blast_radius(
        _deployment(8, {"topologySpreadConstraints": [{**zone, "whenUnsatisfiable": "ScheduleAnyway"}]})
    )
    assert (b.per_node, b.per_zone) == (None, None)
    [b] = blast.blast_radius(_deployment(6, {"nodeSelector": {"topology.kubernetes.io/zone": "eu-1a"}}))
    assert b.per_zone == 6 and b.zone_text() == "all in one zone (pinned to zone eu-1a)"
    anti = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": sel, "topologyKey": "topology.kubernetes.io/zone"}
            ]
        }
    }
    [b] = blast.blast_radius(_deployment(3, {"affinity": anti}))
    assert (b.per_node, b.per_zone) == (1, 1)


# --------------------------------------------------------------------------------- PDBs


def test_pdbs_that_forbid_every_eviction(capsys: pytest.CaptureFixture) -> None:
    code, report, _ = run_json(capsys, "-f", str(MANIFESTS / "pdbs.yaml"))
    results = by_name(report)
    flagged = {n for n, r in results.items() if any(a["rule"] == "pdb-blocks-eviction" for a in r["advisories"])}
    # the PDBs come before the Deployment they select: judged at the end, against every workload
    assert flagged == {"frozen", "all-required", "ninety-percent"}
    assert results["all-required"]["allowed"] is True  # the webhook admits PDBs: audit-only findings warn
    assert "4 replica(s)" in results["all-required"]["advisories"][0]["message"]
    assert "Deployment ml/api" in results["frozen"]["warnings"][0]
    assert report["summary"]["byRule"] == {"pdb-blocks-eviction": 3}
    assert code == 0
    code, _, _ = run(capsys, "-f", str(MANIFESTS / "pdbs.yaml"), "--fail-on", "warnings")
    assert code == 1


def test_pdb_selector_semantics() -> None:
    pods = [pdb.GroupPods({"app": "a"}, 2, results.Ref("apps/v1", "Deployment", "x", "a"), "pods")]
    everything = {"spec": {"minAvailable": 2, "selector": {}}}
    nothing = {"spec": {"minAvailable": 2}}
    assert pdb.selects(everything, {"app": "b"}) and not pdb.selects(nothing, {"app": "a"})
    assert pdb.pdb_findings(everything, pods)[0].path == "spec.minAvailable"
    assert pdb.pdb_findings({"spec": {"minAvailable": "100%"}}, []) != []
    assert pdb.pdb_findings({"spec": {"maxUnavailable": "0%"}}, []) != []
    assert pdb.pdb_findings({"spec": {"maxUnavailable": "10%"}}, pods) == []
    assert pdb.pdb_findings({"spec": {"minAvailable": 1}}, []) == []  # selects no audited workload: unknown


# -------------------------------------------------------------------------- what is skipped


def test_children_of_audited_workloads_and_per_node_pods_are_skipped(policies: list) -> None:
    dep = load(EXAMPLES / "deployment.yaml")
    dep["metadata"]["uid"] = "dep-1"
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "rs",
            "namespace": "ml",
            "uid": "rs-1",
            "ownerReferences": [{"kind": "Deployment", "name": "x", "uid": "dep-1", "controller": True}],
        },
        "spec": copy.deepcopy(dep["spec"]),
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "namespace": "ml",
            "labels": dep["spec"]["template"]["metadata"]["labels"],
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": True}],
        },
        "spec": dep["spec"]["template"]["spec"],
    }
    ds_pod = copy.deepcopy(pod)
    ds_pod["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "name": "d", "uid": "ds-1", "controller": True}]
    orphan = copy.deepcopy(pod)
    orphan["metadata"]["ownerReferences"][0]["uid"] = "rs-unseen"  # its owner was not audited: backstop
    auditor = audit.Auditor(policies)
    results = [auditor.audit(o, "x") for o in (dep, rs, pod, ds_pod, orphan)]
    assert [r is not None for r in results] == [True, False, False, False, True]
    summary = auditor.summary()
    assert summary["skipped"]["owned by an audited workload"] == 2
    assert summary["skipped"]["per-node pod (DaemonSet or static)"] == 1


# ------------------------------------------------------------------------------- formats


def test_table_output(capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "-f", str(EXAMPLES), "-f", str(MANIFESTS / "mixed.yaml"))
    lines = out.splitlines()
    assert lines[0].startswith("RESULT") and "\033[" not in out  # not a terminal: no colour
    rows = [line for line in lines[1:] if re.match(r"^(pass|risk|warn|deny) ", line)]
    assert len(rows) == 16 + 2  # one line per resource
    assert sum(r.startswith("deny") for r in rows) == 0  # examples/denied/ is only read with -R
    assert "18 resources:" in out and "not audited: 1 of kinds spreadguard does not act on (ConfigMap 1)" in out
    assert "mixed.yaml#doc 2: not valid YAML" in err
    assert code == 2  # an input error outranks findings


def test_table_colour_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    for no_color, expect in ((None, True), ("1", False)):
        fake = TTY()
        monkeypatch.setattr(sys, "stdout", fake)
        if no_color:
            monkeypatch.setenv("NO_COLOR", no_color)
        else:
            monkeypatch.delenv("NO_COLOR", raising=False)
        main(["audit", "--policies", str(POLICIES), "-f", str(EXAMPLES / "denied" / "self-colocation.yaml")])
        assert ("\033[31mdeny" in fake.getvalue()) is expect


def test_table_verbose_and_diff(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "-f", str(EXAMPLES / "denied" / "single-node-pinning.yaml"), "-v", "--diff")
    assert code == 1
    assert "deny   [single-node-pinning] spec.pytorchReplicaSpecs.Worker" in out
    assert "blast  Worker: 4 replicas, all on one node" in out
    assert "--- PyTorchJob ml/bert-pinned (as written)" in out and "+++ PyTorchJob ml/bert-pinned (after" in out
    assert "+            podAffinity:" in out  # the gang is kept in one zone
    assert "podAntiAffinity" not in out  # a pinned group gets none: it would strand 3 of the 4 pods


def test_json_output_shape(capsys: pytest.CaptureFixture) -> None:
    code, report, _ = run_json(capsys, "-f", str(EXAMPLES), "--diff")
    assert set(report) == {"results", "summary", "errors"}
    assert code == 0 and report["errors"] == []  # examples/ without -R: nothing denied
    for r in report["results"]:
        assert {"resource", "source", "allowed", "violations", "warnings", "patch", "blastRadius"} <= set(r)
        assert set(r["resource"]) == {"apiVersion", "kind", "namespace", "name"}
        assert re.fullmatch(r".+\.yaml#doc \d+", r["source"])
        for v in r["violations"]:
            assert set(v) == {"rule", "policy", "path", "message"}
        for op in r["patch"]:
            assert op["op"] in ("add", "replace", "remove") and op["path"].startswith("/")
    s = report["summary"]
    assert (s["resources"], s["denied"], s["allowed"]) == (16, 0, 16)
    spread = by_name(report)["extract-features"]  # independent trials: spread (a gang like vit-pretrain is not)
    assert spread["blastRadius"][0]["maxPerNode"] == 1 and spread["blastRadius"][0]["nodeLossPercent"] == 25.0


def test_diff_is_the_patch(capsys: pytest.CaptureFixture) -> None:
    path = EXAMPLES / "rayjob.yaml"
    _, report, _ = run_json(capsys, "-f", str(path), "--diff")
    [r] = report["results"]
    before = load(path)
    after = jsonpatch.apply_patch(before, r["patch"])
    added = [line[1:] for line in r["diff"].splitlines() if line.startswith("+") and not line.startswith("+++")]
    removed = [line for line in r["diff"].splitlines() if line.startswith("-") and not line.startswith("---")]
    assert added and not removed  # spreadguard only adds
    before_text = yaml.safe_dump(before, sort_keys=False)
    assert yaml.safe_load(apply_unified_diff(before_text, r["diff"])) == after


def apply_unified_diff(text: str, diff: str) -> str:
    """Apply a unified diff to ``text`` (enough of ``patch(1)`` for one file)."""
    old = text.splitlines(keepends=True)
    out: list[str] = []
    pos = 0
    for line in diff.splitlines(keepends=True):
        hunk = re.match(r"@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@", line)
        if hunk:
            start = int(hunk.group(1)) - 1
            out.extend(old[pos:start])
            pos = start
        elif line.startswith(("---", "+++")):
            continue
        elif line.startswith("+"):
            out.append(line[1:])
        elif line.startswith("-"):
            pos += 1
        elif line.startswith(" "):
            out.append(old[pos])
            pos += 1
    return "".join(out + old[pos:])


def test_policyreport_validates_against_the_crd_schema(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "-f", str(EXAMPLES), "-R", "-f", str(MANIFESTS), "-o", "policyreport")
    assert code == 2
    docs = list(yaml.safe_load_all(out))
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for doc in docs:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message}" for e in errors[:5]]
        assert doc["summary"] == {
            k: sum(r["result"] == k for r in doc["results"]) for k in ("pass", "fail", "warn", "error", "skip")
        }
    kinds = [(d["kind"], d["metadata"].get("namespace")) for d in docs]
    assert kinds == [("PolicyReport", "ml"), ("PolicyReport", "web"), ("ClusterPolicyReport", None)]
    ml = docs[0]
    fails = {(r["rule"], r["resources"][0]["name"]) for r in ml["results"] if r["result"] == "fail"}
    assert fails == {
        ("single-node-pinning", "bert-pinned"),
        ("self-colocation", "llama-8b-colocated"),
        ("foreign-team-toleration", "borrow-nlp-gpus"),
        ("wildcard-toleration", "pretrain-anywhere"),
    }
    assert all(r["source"] == "spreadguard" for d in docs for r in d["results"])
    assert any("blastRadius" in r.get("properties", {}) for r in ml["results"])
    cluster = docs[2]["results"]
    assert {r["result"] for r in cluster} == {"error"} and len(cluster) == 2  # the two bad documents


def test_policyreport_for_manifests_without_namespace(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    obj = load(EXAMPLES / "denied" / "self-colocation.yaml")
    del obj["metadata"]["namespace"]
    f = tmp_path / "no-ns.yaml"
    f.write_text(yaml.safe_dump(obj))
    _, out, _ = run(capsys, "-f", str(f), "-o", "policyreport")
    [doc] = yaml.safe_load_all(out)
    assert "namespace" not in doc["metadata"]  # kubectl apply -n puts it where the manifest would go
    assert not list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc))
    _, out, _ = run(capsys, "-f", str(f), "-o", "policyreport", "-n", "serving")
    [doc] = yaml.safe_load_all(out)
    assert doc["metadata"]["namespace"] == "serving"
    assert doc["results"][0]["resources"][0]["namespace"] == "serving"


def test_junit_output(capsys: pytest.CaptureFixture) -> None:
    args = ("-f", str(EXAMPLES), "-R", "-f", str(MANIFESTS / "pdbs.yaml"), "-o", "junit")
    code, out, _ = run(capsys, *args)
    root = ET.fromstring(out)
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests")) == 20 + 7
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == int(suite.get("failures")) == 4
    assert {c.find("failure").get("type") for c in failed} == {
        "single-node-pinning",
        "self-colocation",
        "foreign-team-toleration",
        "wildcard-toleration",
    }
    assert code == 1
    code, out, _ = run(capsys, *args, "--fail-on", "warnings")
    suite = ET.fromstring(out).find("testsuite")
    assert int(suite.get("failures")) > 4 and code == 1
    assert any(f.get("type") == "warning:pdb-blocks-eviction" for f in suite.iter("failure"))


def test_junit_reports_input_errors(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "-f", str(MANIFESTS / "mixed.yaml"), "-o", "junit")
    errors = [c for c in ET.fromstring(out).iter("testcase") if c.find("error") is not None]
    assert [c.get("name").rsplit("/", 1)[-1] for c in errors] == ["mixed.yaml#doc 2", "mixed.yaml#doc 4 items[1]"]
    assert code == 2


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    "files, fail_on, expected",
    [
        (["pytorchjob.yaml"], "violations", 0),
        (["pytorchjob.yaml"], "warnings", 1),  # singleton-role warns about the lone master
        (["deployment.yaml"], "warnings", 0),
        (["denied/self-colocation.yaml"], "violations", 1),
        (["denied/self-colocation.yaml"], "warnings", 1),
        (["denied/self-colocation.yaml"], "never", 0),
    ],
)
def test_exit_codes(capsys: pytest.CaptureFixture, files: list[str], fail_on: str, expected: int) -> None:
    args = [a for f in files for a in ("-f", str(EXAMPLES / f))]
    assert run(capsys, *args, "--fail-on", fail_on)[0] == expected


def test_usage_and_input_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run(capsys)
    assert code == 2 and "give manifests with -f" in err
    code, _, err = run(capsys, "-f", str(EXAMPLES), "--cluster")
    assert code == 2
    code, _, err = run(capsys, "-f", str(EXAMPLES), "-A")
    assert code == 2 and "go with --cluster" in err
    code, _, err = run(capsys, "-f", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml: no such file or directory" in err
    (tmp_path / "bad.yaml").write_text("apiVersion: spreadguard.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: x}\n")
    assert main(["audit", "--policies", str(tmp_path), "-f", str(EXAMPLES)]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["audit", "-f", "x", "-o", "xml"])
    assert exc.value.code == 2


def test_help_has_examples(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    out = capsys.readouterr().out
    assert "kubectl kustomize overlays/prod | spreadguard audit -f -" in out
    assert "spreadguard audit --cluster -A -o policyreport" in out
    assert "exit codes: 0 clean" in " ".join(out.split())


# ------------------------------------------------------------------------------- stdin


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    text = "".join(p.read_text() + "\n---\n" for p in sorted((EXAMPLES / "denied").glob("*.yaml")))
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, report, _ = run_json(capsys, "-f", "-")
    assert code == 1
    assert [r["source"] for r in report["results"]] == ["stdin#doc 1", "stdin#doc 2", "stdin#doc 3", "stdin#doc 4"]
    assert report["summary"]["denied"] == 4


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_pipeline(tmp_path: Path) -> None:
    """The documented pipeline, for real: kubectl renders, the CLI reads stdin in another process."""
    for name in ("pytorchjob.yaml", "deployment.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    shutil.copy(EXAMPLES / "denied" / "single-node-pinning.yaml", tmp_path / "pinned.yaml")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [pytorchjob.yaml, deployment.yaml, pinned.yaml]\ncommonLabels: {env: prod}\n"
    )
    rendered = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    done = subprocess.run(
        spreadguard("audit", "--policies", str(POLICIES), "-f", "-", "-o", "json"),
        cwd=REPO,
        input=rendered.stdout,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert {r["resource"]["name"]: r["allowed"] for r in report["results"]} == {
        "vit-pretrain": True,
        "llama-8b-serving": True,
        "bert-pinned": False,
    }
