"""The first hour of a new user (issue 13): what the README promises, run as a user runs it.

Every test runs the installed console script (``.venv/bin/spreadguard``, next to this interpreter) in the
repository and checks exit codes, stdout and stderr. The only double is none: the server is the real one
(``server`` fixture of conftest.py), ``kubectl kustomize`` is the real kubectl.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import FIXTURES_DIR, REPO, SCRIPT, Server, subprocess_env
from conftest import run_cli as sg

from webhook.engine.ids import MUTATOR_IDS, RULE_IDS

README = (REPO / "README.md").read_text(encoding="utf-8")


def example(name: str) -> str:
    return (REPO / "examples" / name).read_text(encoding="utf-8")


def no_aliases(text: str) -> None:
    """No YAML anchor or alias anywhere: every repeated selector written out in full."""
    events = list(yaml.parse(text))
    assert not [e for e in events if isinstance(e, yaml.AliasEvent)], "an alias in the YAML output"
    assert not [e for e in events if getattr(e, "anchor", None)], "an anchor in the YAML output"


def sh_blocks(markdown: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", markdown, flags=re.S)


# ---------------------------------------------------------------- 1. a plain clone has what tests need


def test_tests_read_nothing_outside_the_repository() -> None:
    assert FIXTURES_DIR.is_relative_to(REPO) and sorted(FIXTURES_DIR.glob("*.json")), FIXTURES_DIR
    offenders = [
        str(p.relative_to(REPO))
        for d in ("tests", "webhook", "bench")
        for p in (REPO / d).rglob("*.py")
        if re.search(r"""["']\.\./shared|/ ?["']shared["']""", p.read_text(encoding="utf-8"))
    ]
    assert offenders == []


# ---------------------------------------------------------------- 2. the README is not behind the tool


def test_readme_names_every_rule_and_mutator_id() -> None:
    named = set(re.findall(r"^\| `([a-z0-9-]+)` \|", README, flags=re.M))
    missing = sorted((set(RULE_IDS) | set(MUTATOR_IDS)) - named)
    assert not missing, f"README.md has no table row for {missing}: add them to its Rules section"


def test_readme_layout_and_architecture_describe_the_packages() -> None:
    layout = README[README.index("## Layout") :]
    packages = sorted(p.name for p in (REPO / "webhook").iterdir() if (p / "__init__.py").is_file())
    assert packages and all(f"webhook/{p}/" in layout for p in packages), packages
    arch = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for step in ("server/app.py", "server/review.py", "engine/decide.py", "engine/mutators", "engine/rules"):
        assert step in layout and step in arch, step
    for module in (REPO / "webhook").glob("*/*.py"):
        if module.name != "__init__.py" and module.parent.name != "cli":
            assert module.name in layout, f"README Layout does not mention {module.relative_to(REPO)}"


def test_readme_keeps_the_two_setup_commands() -> None:
    setup = README[README.index("## Set-up") : README.index("## Try it")]
    commands = [line.split("#")[0].strip() for block in sh_blocks(setup) for line in block.splitlines()]
    assert [c for c in commands if c] == ["make serve", "make test"]


# ------------------------------------------------------------------------ 3. YAML output hides nothing


def test_evaluate_yaml_has_no_aliases_and_shows_every_selector() -> None:
    run = sg("evaluate", "-f", "examples/deployment.yaml", "-f", "examples/leaderworkerset.yaml")
    assert run.code == 0, str(run)
    no_aliases(run.out)
    out = yaml.safe_load(run.out)
    spec = out["items"][0]["spec"]["template"]["spec"]
    selector = spec["topologySpreadConstraints"][0]["labelSelector"]
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["labelSelector"] == selector == {"matchLabels": {"app": "llama-8b-serving"}}


def test_audit_diff_and_policyreport_have_no_aliases() -> None:
    run = sg("audit", "-f", "examples/deployment.yaml", "--diff")
    assert run.code == 0, str(run)
    added = [line for line in run.out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert added and not any(re.search(r"[&*]id\d+", line) for line in added), run.out
    assert sum("matchLabels:" in line for line in added) >= 2, run.out  # both selectors written out
    report = sg("audit", "-f", "examples/", "-o", "policyreport")
    assert report.code == 0, str(report)
    no_aliases(report.out)
    timestamps = [r["timestamp"] for d in yaml.safe_load_all(report.out) for r in d["results"]]
    assert len(timestamps) > 1 and all(set(t) == {"seconds", "nanos"} for t in timestamps)


# --------------------------------------------------------------------------------- 4. a closed pipe


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    deployment = yaml.safe_load(example("deployment.yaml"))
    docs = []
    for i in range(400):  # far more output than a pipe buffer holds
        deployment["metadata"]["name"] = f"d{i}"
        docs.append(yaml.safe_dump(deployment))
    big = tmp_path / "big.yaml"
    big.write_text("---\n".join(docs))
    for command in (["evaluate", "-f", str(big), "-o", "jsonl"], ["audit", "-f", str(big), "-v"]):
        proc = subprocess.Popen(
            [str(SCRIPT), *command],
            cwd=REPO,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.readline()  # `| head -1`
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
        assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err[-2000:]
        assert code == 141, (command, code)


# ------------------------------------------------------------------------ 5. machine-readable output


def test_json_of_several_documents_is_one_list_naming_each_object() -> None:
    run = sg("evaluate", "-f", "examples/pytorchjob.yaml", "-f", "examples/deployment.yaml", "-o", "json")
    assert run.code == 0, str(run)
    value = json.loads(run.out)  # one JSON value
    assert value["apiVersion"] == "v1" and value["kind"] == "List"
    assert [(i["kind"], i["metadata"]["namespace"], i["metadata"]["name"]) for i in value["items"]] == [
        ("PyTorchJob", "ml", "vit-pretrain"),
        ("Deployment", "ml", "llama-8b-serving"),
    ]
    one = sg("evaluate", "-f", "examples/deployment.yaml", "-o", "json")
    assert json.loads(one.out)["kind"] == "Deployment"  # one object: itself, as kubectl prints it


def test_patches_are_labelled_with_their_objects() -> None:
    stream = example("pytorchjob.yaml") + "\n---\n" + example("volcanojob.yaml")
    run = sg("evaluate", "-f", "-", "-o", "patch", stdin=stream)
    assert run.code == 0, str(run)
    entries = json.loads(run.out)
    assert [(e["apiVersion"], e["kind"], e["namespace"], e["name"]) for e in entries] == [
        ("kubeflow.org/v1", "PyTorchJob", "ml", "vit-pretrain"),
        ("batch.volcano.sh/v1alpha1", "Job", "ml", "horovod-train"),
    ]
    assert all(e["patch"] and {op["op"] for op in e["patch"]} == {"add"} for e in entries)
    lines = sg("evaluate", "-f", "-", "-o", "patch-jsonl", stdin=stream).out.splitlines()
    assert [json.loads(line) for line in lines] == entries


def test_jsonl_streams_one_object_per_line() -> None:
    run = sg("evaluate", "-f", "examples/", "-o", "jsonl")
    assert run.code == 0, str(run)
    objects = [json.loads(line) for line in run.out.splitlines()]
    assert len(objects) == len(list((REPO / "examples").glob("*.yaml")))
    assert all(o["metadata"]["name"] for o in objects)


# -------------------------------------------------------------------------------------- 6. bad input


def test_broken_yaml_names_file_document_and_line_with_a_readable_excerpt(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(example("deployment.yaml") + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n   bad: [\n")
    good_lines = example("deployment.yaml").count("\n")
    for command in ("evaluate", "audit"):
        run = sg(command, "-f", str(bad))
        assert run.code == 2, str(run)
        err = run.err.splitlines()
        [first] = [i for i, line in enumerate(err) if "not valid YAML" in line]
        assert err[first].startswith(f"spreadguard: error: {bad}#doc 2: not valid YAML at line {good_lines + 6}"), (
            run.err
        )
        assert "<unicode string>" not in run.err
        excerpt = err[first + 1 : first + 5]
        assert [line.split("|")[0].strip() for line in excerpt] == [str(good_lines + n) for n in (4, 5, 6)] + [""]
        assert excerpt[-2].endswith("|    bad: ["), run.err  # the line as written, indentation kept
        assert excerpt[-1].rstrip().endswith("^"), run.err  # the caret on its own line
    # the good first document is still evaluated
    assert "Deployment ml/llama-8b-serving: allowed" in sg("evaluate", "-f", str(bad)).err


@pytest.mark.parametrize("command", ["evaluate", "audit"])
def test_binary_input_is_an_error_naming_the_file(tmp_path: Path, command: str) -> None:
    blob = tmp_path / "model.yaml"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    run = sg(command, "-f", str(blob))
    assert run.code == 2, str(run)
    assert f"spreadguard: error: {blob}" in run.err and "not a text file" in run.err, str(run)
    run = sg(command, "-f", "-", stdin=b"kind: Pod\x00\x01\x02")  # UTF-8, but control characters
    assert run.code == 2 and "stdin#doc 1: not a text file (control character" in run.err, str(run)
    run = sg(command, "-f", "-", stdin=b"\xff\xfe\x00binary")
    assert run.code == 2 and "stdin" in run.err and "not a text file" in run.err, str(run)


@pytest.mark.parametrize("command", ["evaluate", "audit"])
def test_empty_input_is_an_error(tmp_path: Path, command: str) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing but a comment\n---\n")
    for args, stdin, name in (
        (["-f", "-"], "", "stdin"),
        (["-f", str(tmp_path / "empty.yaml")], None, str(tmp_path / "empty.yaml")),
        (["-f", str(tmp_path)], None, str(tmp_path)),
    ):
        run = sg(command, *args, stdin=stdin)
        assert run.code == 2, str(run)
        assert f"spreadguard: error: {name}: no objects" in run.err, str(run)


# ------------------------------------------------------------------------------------ 7. fitting advice


@pytest.mark.parametrize(
    ("manifest", "says", "never"),
    [
        ("pytorchjob.yaml", "spec.elasticPolicy with a c10d rendezvous", None),
        ("xgboostjob.yaml", "xgboost.callback.TrainingCheckPoint", "elasticPolicy"),
        ("volcanojob.yaml", "action RestartJob", "elasticPolicy"),
        ("tfjob.yaml", "MultiWorkerMirroredStrategy", "elasticPolicy"),
        ("mpijob.yaml", "the launcher holds no state", "elasticPolicy"),
    ],
)
def test_singleton_role_fix_fits_the_kind(manifest: str, says: str, never: str | None) -> None:
    run = sg("evaluate", "-f", f"examples/{manifest}", "-o", "none")
    assert run.code == 0, str(run)
    [line] = [line for line in run.err.splitlines() if "[singleton-role]" in line]
    assert says in line, line
    assert never is None or never not in line, line


# --------------------------------------------------------------------------------- 8. the Try-it snippet


def test_try_it_snippet_runs_with_only_what_the_project_installs(server: Server, tmp_path: Path) -> None:
    try_it = README[README.index("## Try it") : README.index("## Commands")]
    [block] = sh_blocks(try_it)[:1]
    snippet = re.search(r"^(\S*python\S*) - <<'EOF'\n(.*?)^EOF$", block, flags=re.S | re.M)
    assert snippet, block
    assert snippet.group(1) == ".venv/bin/python", "the snippet must use the interpreter make installed"
    code = snippet.group(2).replace("https://127.0.0.1:8443", server.url).replace("certs/ca.crt", str(server.ca))
    assert "requests" not in code  # a test-only dependency: not what `make serve` promises
    done = subprocess.run([sys.executable, "-I", "-"], input=code, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert "[single-node-pinning]" in response["status"]["message"]
    curl = re.search(r"^curl (.*?)\n(?!  )", block.replace("\\\n", ""), flags=re.S | re.M)
    assert curl, block
    if shutil.which("curl"):
        args = curl.group(1).replace("https://127.0.0.1:8443", server.url).replace("certs/ca.crt", str(server.ca))
        done = subprocess.run(["curl", *args.replace("'", "").split()], cwd=REPO, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["kind"] == "AdmissionReview" and answer["response"]["allowed"] is True
        assert answer["response"]["patchType"] == "JSONPatch"
        patch = json.loads(base64.b64decode(answer["response"]["patch"]))
        assert any(op["path"].startswith("/spec/pytorchReplicaSpecs/Worker/template/spec") for op in patch), patch


def test_docs_run_spreadguard_from_the_venv_or_say_how_to_put_it_on_path() -> None:
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        bare = [
            line
            for block in sh_blocks(text)
            for line in block.splitlines()
            if re.match(r"^(\S+ \| )?spreadguard ", line) or " | spreadguard " in line
        ]
        if bare:
            assert ".venv/bin/spreadguard" in text, f"{path.name} runs bare `spreadguard`: {bare[:2]}"
    assert ". .venv/bin/activate" in README


# ---------------------------------------------------------------------------------- 9. audit output


def test_audit_never_says_pass_beside_losing_a_whole_group() -> None:
    run = sg("audit", "-f", "examples/")
    assert run.code == 0, str(run)
    rows = [line for line in run.out.splitlines() if re.match(r"^(pass|risk|warn|deny) ", line)]
    assert rows
    for row in rows:
        if re.search(r"\d+ replicas.*can lose 100%", row):
            assert not row.startswith("pass"), row
    [deployment] = [r for r in rows if "Deployment ml/llama-8b-serving" in r]
    assert deployment.startswith("risk ")
    summary = re.search(r"(\d+) pass, (\d+) risk, (\d+) warn, (\d+) deny", run.out)
    assert summary and sum(map(int, summary.groups())) == len(rows)
    report = json.loads(sg("audit", "-f", "examples/deployment.yaml", "-o", "json").out)
    assert report["results"][0]["status"] == "risk" and report["summary"]["atRisk"] == 1


def test_trainjob_note_is_a_note_everywhere_and_counted() -> None:
    ev = sg("evaluate", "-f", "examples/trainjob.yaml", "-o", "none")
    assert ev.code == 0, str(ev)
    assert re.search(r"^#   note  TrainJob llm-finetune: its pods come from the training runtime", ev.err, re.M)
    assert "#   warn" not in ev.err
    audit = sg("audit", "-f", "examples/trainjob.yaml", "-v")
    assert re.search(r"^\s+note\s+TrainJob llm-finetune: its pods", audit.out, re.M), audit.out
    assert not re.search(r"^\s+add\s+TrainJob", audit.out, re.M)
    assert "0 warnings, 1 note;" in audit.out, audit.out
    report = json.loads(sg("audit", "-f", "examples/trainjob.yaml", "-o", "json").out)
    assert report["summary"]["info"] == 1 and report["results"][0]["info"][0].startswith("TrainJob llm-finetune")


def test_file_colon_n_is_a_line_and_file_hash_doc_n_a_document(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    text = (REPO / "policies" / "training.yaml").read_text()
    (policies / "training.yaml").write_text(text.replace("      mode: required\n", "      mode: strict\n"))
    line = text.splitlines().index("      mode: required") + 1
    check = sg("policies", "check", str(policies))
    assert f"{policies / 'training.yaml'}:{line}: spec.mutate" in check.err, str(check)
    stream = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n- not an object\n"
    for command in ("evaluate", "audit"):
        run = sg(command, "-f", "-", stdin=stream)
        assert run.code == 2 and "spreadguard: error: stdin#doc 2: a list, not a Kubernetes object" in run.err, str(run)


# -------------------------------------------------------------------------------- 10. set-up friction


def test_makefile_install_shows_progress() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile[makefile.index("$(STAMP): pyproject.toml") :].split("\n\n")[0]
    assert "--quiet" not in recipe and " -q" not in recipe, recipe
    assert "@echo" in recipe, "the first run says what it is doing"


def test_package_metadata_uses_an_spdx_license_without_deprecation_warnings(tmp_path: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    [requirement] = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert re.fullmatch(r"setuptools>=(\d+)", requirement) and int(requirement.split(">=")[1]) >= 77
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "webhook", tmp_path / "webhook", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "dist"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SetuptoolsDeprecationWarning" not in done.stdout + done.stderr
    assert "License-Expression: Apache-2.0" in _metadata(next((tmp_path / "dist").glob("*.whl")))


def _metadata(wheel: Path) -> str:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        [name] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return z.read(name).decode()


def test_a_wrong_flag_prints_that_commands_usage_and_a_hint() -> None:
    run = sg("serve", "--port", "9443")
    assert run.code == 2, str(run)
    assert run.err.startswith("usage: spreadguard serve "), str(run)
    assert "spreadguard serve: error: unrecognized arguments: --port 9443" in run.err
    assert "did you mean --bind HOST:PORT" in run.err
    run = sg("evaluate", "-f", "examples/job.yaml", "--outptu", "json")
    assert run.code == 2 and run.err.startswith("usage: spreadguard evaluate "), str(run)
    assert "did you mean --output?" in run.err
    run = sg("policies", "check", "--strict")
    assert run.code == 2 and run.err.startswith("usage: spreadguard policies check"), str(run)


def test_a_second_serve_says_the_port_is_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = sg("serve", "--bind", f"127.0.0.1:{port}", "--cluster-cache", "off")
    assert run.code == 2, str(run)
    assert f"port {port} on 127.0.0.1 is already in use" in run.err and "--bind" in run.err, str(run)
    assert "Can't connect" not in run.err


def test_readme_install_creates_the_namespace_the_examples_use() -> None:
    install = README[README.index("## Install in a cluster") :]
    block = sh_blocks(install)[0]
    namespaces = {
        yaml.safe_load(example(p.name))["metadata"].get("namespace") for p in (REPO / "examples").glob("*.yaml")
    }
    assert namespaces == {"ml"}
    assert block.index("kubectl create namespace ml") < block.index("-f examples/")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_documented_offline_manifest_check_works() -> None:
    assert "kubectl kustomize manifests/ | .venv/bin/spreadguard audit -f -" in README
    rendered = subprocess.run(["kubectl", "kustomize", "manifests/"], cwd=REPO, capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    run = sg("audit", "-f", "-", stdin=rendered.stdout)
    assert run.code == 0, str(run)
    assert re.search(r"^pass\s+Deployment spreadguard/spreadguard\s", run.out, re.M), run.out


# ---------------------------------------------------------------------------------------------- smaller


def test_volcano_job_is_shown_with_its_group() -> None:
    ev = sg("evaluate", "-f", "examples/volcanojob.yaml", "-o", "none")
    assert "# Job.batch.volcano.sh ml/horovod-train: allowed" in ev.err, str(ev)
    audit = sg("audit", "-f", "examples/volcanojob.yaml", "-f", "examples/job.yaml")
    assert re.search(r"^\w+\s+Job\.batch\.volcano\.sh ml/horovod-train ", audit.out, re.M), audit.out
    assert re.search(r"^\w+\s+Job ml/extract-features ", audit.out, re.M), audit.out  # batch/v1 stays "Job"


def test_a_pod_without_namespace_reads_the_same_in_evaluate_and_audit() -> None:
    pod = yaml.safe_load(example("pod.yaml"))
    del pod["metadata"]["namespace"]
    pod["metadata"]["name"] = "nospec"
    text = yaml.safe_dump(pod)
    ev = sg("evaluate", "-f", "-", "-o", "none", stdin=text)
    audit = sg("audit", "-f", "-", stdin=text)
    assert "# Pod nospec: allowed" in ev.err and "Pod /nospec" not in ev.err, str(ev)
    assert re.search(r"^\w+\s+Pod nospec ", audit.out, re.M), audit.out


def test_team_taint_wording() -> None:
    job = yaml.safe_load(example("job.yaml"))
    spec = job["spec"]["template"]["spec"]
    spec["tolerations"] = [{"key": "spreadguard.io/team", "operator": "Equal", "value": "nlp", "effect": "NoSchedule"}]
    run = sg("evaluate", "-f", "-", "-o", "none", stdin=yaml.safe_dump(job))
    assert run.code == 1, str(run)
    assert "tolerates the taint of team 'nlp' (spreadguard.io/team)" in run.err
    assert "'nlp''s" not in run.err


def test_evaluate_old_judges_an_update(tmp_path: Path) -> None:
    """A violation in a template the update did not touch is a warning, not a denial (Jobs are immutable)."""
    pinned = yaml.safe_load((REPO / "examples" / "denied" / "single-node-pinning.yaml").read_text())
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(pinned))
    relabelled = json.loads(json.dumps(pinned))
    relabelled["metadata"].setdefault("labels", {})["owner"] = "alice"
    (tmp_path / "new.yaml").write_text(yaml.safe_dump(relabelled))
    create = sg("evaluate", "-f", str(tmp_path / "new.yaml"), "-o", "none")
    assert create.code == 1 and "DENIED" in create.err, str(create)
    update = sg("evaluate", "-f", str(tmp_path / "new.yaml"), "--old", str(tmp_path / "old.yaml"), "-o", "none")
    assert update.code == 0, str(update)
    assert "allowed" in update.err and "[single-node-pinning]" in update.err  # still said, as a warning
    other = yaml.safe_load(example("deployment.yaml"))
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    unmatched = sg("evaluate", "-f", str(tmp_path / "new.yaml"), "--old", str(tmp_path / "other.yaml"))
    assert unmatched.code == 2 and "no object of that kind, namespace and name in --old" in unmatched.err
    blind = sg("evaluate", "-f", str(tmp_path / "new.yaml"), "--operation", "UPDATE", "-o", "none")
    assert blind.code == 1 and "UPDATE without --old FILE: every pod template counts as changed" in blind.err
    wrong = sg(
        "evaluate", "-f", str(tmp_path / "new.yaml"), "--old", str(tmp_path / "old.yaml"), "--operation", "CREATE"
    )
    assert wrong.code == 2 and "--operation UPDATE" in wrong.err


def test_duplicate_policy_names_name_the_files(tmp_path: Path) -> None:
    text = (REPO / "policies" / "training.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text)
    run = sg("policies", "check", str(tmp_path))
    assert run.code == 1, str(run)
    assert f"policy name 'training' is used 2 times, in {tmp_path / 'a.yaml'}, {tmp_path / 'b.yaml'}" in run.err


def test_case_resource_resolves_against_the_case_file_not_the_working_directory(tmp_path: Path) -> None:
    cases = tmp_path / "mine" / "tests"
    cases.mkdir(parents=True)
    (tmp_path / "mine" / "job.yaml").write_text(example("pytorchjob.yaml"))
    (cases / "c.yaml").write_text(
        yaml.safe_dump([{"name": "beside the case", "resource": "../job.yaml", "expect": {"allowed": True}}])
    )
    (cases / "d.yaml").write_text(
        yaml.safe_dump([{"name": "from the cwd", "resource": "examples/pytorchjob.yaml", "expect": {"allowed": True}}])
    )
    work = tmp_path / "work"  # the working directory has examples/pytorchjob.yaml; the case file's tree has not
    (work / "examples").mkdir(parents=True)
    (work / "examples" / "pytorchjob.yaml").write_text(example("pytorchjob.yaml"))
    run = sg("test", "../mine/tests", "--policies", str(REPO / "policies"), cwd=work)
    assert run.code == 1, str(run)
    assert re.search(r"^PASS\s+beside the case", run.out, re.M), run.out
    assert re.search(r"^FAIL\s+from the cwd", run.out, re.M), run.out
    assert "resource file 'examples/pytorchjob.yaml' not found in" in run.out


def test_policies_check_hints_at_a_missing_schema(tmp_path: Path) -> None:
    shutil.copy(REPO / "policies" / "training.yaml", tmp_path / "training.yaml")
    run = sg("policies", "check", str(tmp_path))
    assert run.code == 0, str(run)
    schema = tmp_path / "schema.json"
    assert f"$schema=./schema.json points at nothing ({schema} does not exist)" in run.err
    assert f"spreadguard policies schema --write {schema}" in run.err
    assert sg("policies", "schema", "--write", str(schema)).code == 0
    again = sg("policies", "check", str(tmp_path))
    assert again.code == 0 and "hint:" not in again.err, str(again)
