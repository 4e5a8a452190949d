"""The ``spreadguard`` command as a user runs it: a subprocess in the repository, exit codes, stdout, stderr."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from conftest import run_cli as cli

from webhook.cli import build_parser


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def worker_gang_affinity(obj: dict) -> list[dict]:
    """The PyTorchJob's workers are a gang: kept in one zone (preferred without a cluster view), not spread."""
    spec = obj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    assert "podAntiAffinity" not in spec["affinity"]
    return spec["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]


# ------------------------------------------------------------------------------------------ help


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[str, bool]:
    """Every command line of the parser tree -> whether it is a group (has sub-actions)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    out = {" ".join(prefix): bool(subs)}
    for action in subs:
        for name, sub in action.choices.items():
            out.update(_commands(sub, (*prefix, name)))
    return out


BRIEFED = ["", "certs", "certs generate", "serve", "evaluate", "test", "policies", "policies check", "policies schema"]
COMMANDS = _commands(build_parser())


def test_the_documented_commands_exist() -> None:
    assert set(BRIEFED) <= set(COMMANDS), set(BRIEFED) - set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=lambda c: c or "spreadguard")
def test_help_has_examples(command: str) -> None:
    run = cli(*command.split(), "--help")
    assert run.code == 0, str(run)
    assert run.out.startswith(f"usage: spreadguard {command}".rstrip()), str(run)
    assert "example" in run.out.lower(), f"no example section:\n{run.out}"
    examples = run.out.lower().split("example", 1)[1]
    assert f"spreadguard {command}".rstrip() in examples, f"the examples do not show {command!r}:\n{run.out}"


@pytest.mark.parametrize(
    "group", sorted(c for c, is_group in COMMANDS.items() if is_group), ids=lambda c: c or "spreadguard"
)
def test_group_without_action_prints_help_and_exits_2(group: str) -> None:
    run = cli(*group.split())
    assert run.code == 2, str(run)
    assert f"usage: spreadguard {group}".rstrip() in run.out + run.err, str(run)


# -------------------------------------------------------------------------------------- evaluate


def test_evaluate_prints_the_mutated_object() -> None:
    run = cli("evaluate", "-f", "examples/pytorchjob.yaml")
    assert run.code == 0, str(run)
    [obj] = docs(run.out)
    assert obj["kind"] == "PyTorchJob"
    assert worker_gang_affinity(obj) == [
        {
            "weight": 50,
            "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"training.kubeflow.org/job-name": "vit-pretrain"}},
                "topologyKey": "topology.kubernetes.io/zone",
            },
        }
    ]
    assert "PyTorchJob ml/vit-pretrain: allowed" in run.err
    assert "gang-affinity" in run.err


def test_evaluate_denied_exits_1_and_names_the_rule() -> None:
    run = cli("evaluate", "-f", "examples/denied/single-node-pinning.yaml")
    assert run.code == 1, str(run)
    assert "DENIED" in run.err
    assert "[single-node-pinning]" in run.err
    assert "nodeSelector[kubernetes.io/hostname]" in run.err


def test_evaluate_reads_stdin_multi_document_and_lists() -> None:
    job = (REPO / "examples" / "pytorchjob.yaml").read_text()
    deployment = yaml.safe_load((REPO / "examples" / "deployment.yaml").read_text())
    statefulset = yaml.safe_load((REPO / "examples" / "statefulset.yaml").read_text())
    a_list = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [deployment, statefulset]})
    run = cli("evaluate", "-f", "-", stdin=f"{job}\n---\n{a_list}")
    assert run.code == 0, str(run)
    [listed] = docs(run.out)  # several objects: one List, as kubectl prints them
    assert listed["kind"] == "List"
    out = listed["items"]
    assert [o["kind"] for o in out] == ["PyTorchJob", "Deployment", "StatefulSet"]
    assert worker_gang_affinity(out[0])
    for obj in out[1:]:
        assert obj["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"] == (
            "topology.kubernetes.io/zone"
        )


def test_evaluate_patch_output_is_a_json_patch() -> None:
    run = cli("evaluate", "-f", "examples/pytorchjob.yaml", "-o", "patch")
    assert run.code == 0, str(run)
    [entry] = json.loads(run.out)  # each patch labelled with its object
    assert {k: entry[k] for k in ("apiVersion", "kind", "namespace", "name")} == {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "namespace": "ml",
        "name": "vit-pretrain",
    }
    patch = entry["patch"]
    assert patch and {op["op"] for op in patch} == {"add"}
    assert any(op["path"].startswith("/spec/pytorchReplicaSpecs/Worker/template/spec/") for op in patch)


def test_evaluate_passes_unknown_kinds_through_unchanged() -> None:
    widget = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "ml"},
        "spec": {"replicas": 3},
    }
    run = cli("evaluate", "-f", "-", stdin=yaml.safe_dump(widget))
    assert run.code == 0, str(run)
    assert docs(run.out) == [widget]


def test_evaluate_missing_file_is_a_one_line_error() -> None:
    run = cli("evaluate", "-f", "missing.yaml")
    assert run.code == 2, str(run)
    assert run.out == ""
    assert len(run.err.strip().splitlines()) == 1, str(run)
    assert run.err.startswith("spreadguard: error:") and "missing.yaml" in run.err


def test_evaluate_invalid_yaml_is_an_error_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Job\nspec: [unclosed\n")
    run = cli("evaluate", "-f", str(bad))
    assert run.code == 2, str(run)
    assert run.err.startswith("spreadguard: error:")


def test_evaluate_template_with_empty_fields(tmp_path: Path) -> None:
    """``tolerations:`` / ``affinity:`` left empty are null in YAML; users write that."""
    job = tmp_path / "job.yaml"
    job.write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: t, namespace: ml}\nspec:\n  parallelism: 2\n"
        "  template:\n    metadata: {labels: {spreadguard.io/team: vision}}\n    spec:\n      restartPolicy: Never\n"
        "      tolerations:\n      affinity:\n"
        "      containers: [{name: t, image: 'busybox:1.36', resources: {limits: {nvidia.com/gpu: 1}}}]\n"
    )
    run = cli("evaluate", "-f", str(job))
    assert run.code == 0, str(run)
    [obj] = docs(run.out)
    spec = obj["spec"]["template"]["spec"]
    assert spec["tolerations"] == [
        {"key": "spreadguard.io/team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}
    ]
    assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


# ------------------------------------------------------------------------------------------ test


def test_test_runs_the_default_cases() -> None:
    run = cli("test")
    assert run.code == 0, str(run)
    lines = run.out.strip().splitlines()
    n = sum(line.startswith("PASS") for line in lines)
    assert n >= 20
    assert lines[-1] == f"{n} passed, 0 failed"
    assert not any(line.startswith("FAIL") for line in lines)


def write_wrong_case(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "wrong.yaml"
    path.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "pytorchjob is denied (it is not)",
                    "resource": str(REPO / "examples" / "pytorchjob.yaml"),
                    "expect": {"allowed": False},
                },
                {
                    "name": "pytorchjob is allowed",
                    "resource": str(REPO / "examples" / "pytorchjob.yaml"),
                    "expect": {"allowed": True},
                },
            ]
        )
    )
    return path


def test_test_reports_a_wrong_expectation(tmp_path: Path) -> None:
    write_wrong_case(tmp_path / "cases")
    run = cli("test", str(tmp_path / "cases"))
    assert run.code == 1, str(run)
    lines = run.out.strip().splitlines()
    fail = [i for i, line in enumerate(lines) if line.startswith("FAIL")]
    assert len(fail) == 1 and "pytorchjob is denied (it is not)" in lines[fail[0]], run.out
    assert "allowed: expected False, got True" in lines[fail[0] + 1], run.out
    assert any(line.startswith("PASS") and "pytorchjob is allowed" in line for line in lines)
    assert lines[-1] == "1 passed, 1 failed"


def test_test_json_output(tmp_path: Path) -> None:
    run = cli("test", "-o", "json")
    assert run.code == 0, str(run)
    report = json.loads(run.out)
    assert report["summary"]["failed"] == 0
    assert report["summary"]["passed"] == len(report["results"]) >= 20

    write_wrong_case(tmp_path / "cases")
    run = cli("test", str(tmp_path / "cases"), "-o", "json")
    assert run.code == 1, str(run)
    report = json.loads(run.out)
    assert report["summary"] == {"passed": 1, "failed": 1}
    [failed] = [r for r in report["results"] if not r["passed"]]
    assert failed["problems"] == ["allowed: expected False, got True"]


@pytest.mark.parametrize(
    ("resource", "extra"),
    [
        pytest.param(
            "examples/pytorchjob.yaml",
            {"request": {"operation": "UPDATE", "oldObject": "no-such.yaml"}},
            id="missing oldObject",
        ),
        pytest.param("examples/pytorchjob.yaml", {"expect": ["allowed"]}, id="expect is not a mapping"),
        pytest.param("list.yaml", {}, id="resource file is a YAML list"),
    ],
)
def test_test_broken_case_is_reported_not_a_crash(tmp_path: Path, resource: str, extra: dict) -> None:
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    root = tmp_path if resource == "list.yaml" else REPO
    case = {"name": "broken case", "resource": str(root / resource), "expect": {"allowed": True}, **extra}
    (tmp_path / "cases").mkdir()
    (tmp_path / "cases" / "c.yaml").write_text(yaml.safe_dump([case]))
    run = cli("test", str(tmp_path / "cases"))  # cli() fails on a Traceback
    assert run.code in (1, 2), str(run)
    assert "broken case" in run.out + run.err or "c.yaml" in run.out + run.err, str(run)


def test_test_missing_case_directory(tmp_path: Path) -> None:
    run = cli("test", str(tmp_path / "nope"))
    assert run.code == 2, str(run)
    assert "nope" in run.err


# -------------------------------------------------------------------------------------- policies


def test_policies_check_default_directory() -> None:
    run = cli("policies", "check", "policies/")
    assert run.code == 0, str(run)
    assert "ok  serving" in run.out and "ok  training" in run.out


def test_policies_check_broken_directory(tmp_path: Path) -> None:
    text = (REPO / "policies" / "training.yaml").read_text()
    assert "      mode: required\n" in text
    (tmp_path / "training.yaml").write_text(text.replace("      mode: required\n", "      mode: strict\n"))
    line = text.splitlines().index("      mode: required") + 1
    run = cli("policies", "check", str(tmp_path))
    assert run.code == 1, str(run)
    assert f"{tmp_path / 'training.yaml'}:{line}: spec.mutate.antiAffinity.mode: 'strict' is not one of" in run.err


def test_evaluate_with_broken_policies_exits_2(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("apiVersion: spreadguard.io/v1alpha1\nkind: HAPolicy\n")
    run = cli("evaluate", "-f", "examples/pytorchjob.yaml", "--policies", str(tmp_path))
    assert run.code == 2, str(run)
    assert f"{tmp_path / 'p.yaml'}:1: metadata: required field is missing" in run.err


def test_version() -> None:
    run = cli("--version")
    assert run.code == 0 and run.out.startswith("spreadguard "), str(run)
