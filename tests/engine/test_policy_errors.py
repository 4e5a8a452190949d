"""A broken policy is reported as ``FILE:LINE: FIELD: MESSAGE``, pointing at the offending key, for every
problem of every file; and ``policies/schema.json`` (what editors validate against) is the model's schema."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import REPO, spreadguard, subprocess_env

from webhook.engine.policy import PolicyError, load_policies, parse_policy_text, schema

# Line numbers below refer to this text.
BASE = """\
# yaml-language-server: $schema=./schema.json
apiVersion: spreadguard.io/v1alpha1
kind: HAPolicy
metadata:
  name: team-a
  description: spread team a
spec:
  mode: enforce
  match:
    any:
      - kinds: [PyTorchJob]
  mutate:
    antiAffinity:
      mode: required
      weight: 100
    teamTolerations:
      effect: NoSchedule
  rules:
    single-node-pinning: {action: deny}
    self-colocation:
      action: warn
"""


def broken(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


# (id, policy text, expected problems as regular expressions matched in full; FILE is the file's path)
CASES = [
    (
        "wrong enum value",
        broken("mode: required", "mode: strict"),
        [r"FILE:14: spec\.mutate\.antiAffinity\.mode: 'strict' is not one of required, preferred"],
    ),
    (
        "unknown field (typo)",
        broken("antiAffinity:", "antiAfinity:"),
        [r"FILE:13: spec\.mutate\.antiAfinity: unknown field"],
    ),
    (
        "wrong type",
        broken("weight: 100", "weight: high"),
        [r"FILE:15: spec\.mutate\.antiAffinity\.weight: .*integer.*\(got 'high'\)"],
    ),
    (
        "out of range",
        broken("weight: 100", "weight: 500"),
        [r"FILE:15: spec\.mutate\.antiAffinity\.weight: .*less than or equal to 100.*\(got 500\)"],
    ),
    (
        "unknown rule id",
        broken("    self-colocation:\n", "    self-colocaton:\n"),
        [r"FILE:20: spec\.rules\.self-colocaton: 'self-colocaton' is not one of .*\bself-colocation\b.*"],
    ),
    (
        "unknown rule action",
        broken("action: warn", "action: block"),
        [r"FILE:21: spec\.rules\.self-colocation\.action: 'block' is not one of deny, warn, off"],
    ),
    (
        "missing metadata.name",
        broken("  name: team-a\n", ""),
        [r"FILE:4: metadata\.name: required field is missing"],
    ),
    (
        "wrong apiVersion",
        broken("spreadguard.io/v1alpha1", "spreadguard.io/v1"),
        [r"FILE:2: apiVersion: 'spreadguard.io/v1' is not one of spreadguard\.io/v1alpha1"],
    ),
    (
        "two errors in one file",
        broken("mode: enforce", "mode: audit").replace("effect: NoSchedule", "effect: Never"),
        [
            r"FILE:8: spec\.mode: 'audit' is not one of enforce, warn, dryrun",
            r"FILE:17: spec\.mutate\.teamTolerations\.effect: 'Never' is not one of NoSchedule, PreferNoSchedule, "
            r"NoExecute",
        ],
    ),
    (
        "not YAML: a tab",
        broken("  mode: enforce", "\tmode: enforce"),
        [r"FILE:8: not valid YAML: found character '\\t' that cannot start any token"],
    ),
    (
        "not YAML: indentation",
        broken("  match:\n", "    match:\n"),
        [r"FILE:9: not valid YAML: .+"],
    ),
    (
        "a document that is a list",
        "# yaml-language-server: $schema=./schema.json\n- apiVersion: spreadguard.io/v1alpha1\n  kind: HAPolicy\n",
        [r"FILE:2: a policy must be a mapping, got list"],
    ),
    (
        "second document of a file",
        BASE + "---\n" + broken("name: team-a", "name: team-b").replace("mode: required", "mode: strict"),
        [r"FILE:36: spec\.mutate\.antiAffinity\.mode: 'strict' is not one of required, preferred"],
    ),
]
# The schema.json checks use these too: errors that are about the document's shape, not YAML or rule ids.
SCHEMA_LEVEL = {
    "wrong enum value": ["spec", "mutate", "antiAffinity", "mode"],
    "unknown field (typo)": ["spec", "mutate"],
    "wrong type": ["spec", "mutate", "antiAffinity", "weight"],
    "out of range": ["spec", "mutate", "antiAffinity", "weight"],
    "unknown rule action": ["spec", "rules", "self-colocation", "action"],
    "missing metadata.name": ["metadata"],
    "wrong apiVersion": ["apiVersion"],
    "two errors in one file": ["spec", "mode"],
    "a document that is a list": [],
}


def load_dir_problems(directory: Path) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policies(directory)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def assert_problems(problems: list[str], expected: list[str], file: Path) -> None:
    patterns = [p.replace("FILE", re.escape(str(file))) for p in expected]
    assert len(problems) == len(patterns), "\n".join(problems)
    for problem, pattern in zip(problems, patterns, strict=True):
        assert re.fullmatch(pattern, problem), f"\n got: {problem}\nwant: {pattern}"


def test_the_base_policy_is_valid(tmp_path: Path) -> None:
    (tmp_path / "team-a.yaml").write_text(BASE)
    [policy] = load_policies(tmp_path)
    assert policy.name == "team-a"
    assert policy.spec.mutate.antiAffinity.weight == 100


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for i, t, e in CASES])
def test_broken_policy_names_file_line_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "team-a.yaml"
    path.write_text(text)
    assert_problems(load_dir_problems(tmp_path), expected, path)


def test_every_problem_of_every_file_is_reported(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(broken("mode: enforce", "mode: strict").replace("antiAffinity:", "antiAfinity:"))
    b.write_text(
        broken("name: team-a", "name: team-b")
        .replace("weight: 100", "weight: 500")
        .replace("kind: HAPolicy", "kind: Policy")
    )
    (tmp_path / "c.yaml").write_text(broken("name: team-a", "name: team-c"))  # a valid one is not enough
    problems = load_dir_problems(tmp_path)
    assert len(problems) == 4, "\n".join(problems)
    assert [p.split(":")[0] for p in problems].count(str(a)) == 2
    assert [p.split(":")[0] for p in problems].count(str(b)) == 2
    assert f"{a}:8: spec.mode: 'strict' is not one of enforce, warn, dryrun" in problems
    assert f"{a}:13: spec.mutate.antiAfinity: unknown field" in problems
    assert any(p.startswith(f"{b}:3: kind: 'Policy' is not one of HAPolicy") for p in problems)
    assert any(p.startswith(f"{b}:15: spec.mutate.antiAffinity.weight: ") for p in problems)


def test_duplicate_policy_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "b.yaml").write_text(BASE.replace("spread team a", "another team a"))
    [problem] = load_dir_problems(tmp_path)
    assert "'team-a'" in problem and "2 times" in problem


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no policies here\n")
    [problem] = load_dir_problems(tmp_path)
    assert problem == f"{tmp_path}: no policy files (*.yaml) found"


def test_missing_directory(tmp_path: Path) -> None:
    [problem] = load_dir_problems(tmp_path / "nope")
    assert problem == f"{tmp_path / 'nope'}: not a directory"


def test_parse_policy_text_uses_the_source_name() -> None:
    policies, problems = parse_policy_text(broken("mode: required", "mode: strict"), "inline.yaml")
    assert policies == []
    assert problems == ["inline.yaml:14: spec.mutate.antiAffinity.mode: 'strict' is not one of required, preferred"]


# ------------------------------------------------------------------------------------ schema.json

SCHEMA_FILE = REPO / "policies" / "schema.json"
DEFAULT_POLICY_FILES = sorted((REPO / "policies").glob("*.yaml"))


@pytest.mark.server
def test_schema_json_is_not_stale() -> None:
    on_disk = json.loads(SCHEMA_FILE.read_text())
    assert on_disk == schema(), "policies/schema.json is stale: run spreadguard policies schema --write ..."
    done = subprocess.run(
        spreadguard("policies", "schema"), cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == on_disk


def test_default_policies_point_editors_at_the_schema() -> None:
    assert len(DEFAULT_POLICY_FILES) >= 2
    for path in DEFAULT_POLICY_FILES:
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=./schema.json", f"{path.name} starts with {first!r}"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    doc = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


@pytest.mark.parametrize("path", DEFAULT_POLICY_FILES, ids=lambda p: p.name)
def test_schema_accepts_the_default_policies(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
        assert errors == []


def test_schema_accepts_the_base_policy(validator: jsonschema.Draft202012Validator) -> None:
    assert list(validator.iter_errors(yaml.safe_load(BASE))) == []


@pytest.mark.parametrize(
    ("text", "where"), [pytest.param(t, SCHEMA_LEVEL[i], id=i) for i, t, _ in CASES if i in SCHEMA_LEVEL]
)
def test_schema_rejects_the_broken_policies(validator: jsonschema.Draft202012Validator, text: str, where: list) -> None:
    doc = yaml.safe_load(text)
    errors = list(validator.iter_errors(doc))
    assert errors, "schema.json accepts a policy the loader rejects"
    found = [(list(e.absolute_path), e.message) for e in _flatten(errors)]
    assert where in [path for path, _ in found], found


def _flatten(errors: list) -> list:
    """Errors and, for anyOf/oneOf (optional sections are ``anyOf: [object, null]``), their sub-errors."""
    out = []
    for e in errors:
        out.append(e)
        out.extend(_flatten(list(e.context or [])))
    return out
