"""``spreadguard certs bootstrap`` against a test double of the Kubernetes API.

There is no kube-apiserver here, so the shared fake API server (tests/fakeapi.py, a test double) stands in for
one: a real HTTPS server on 127.0.0.1 that implements what bootstrap uses, the way kube-apiserver does it:
GET/POST/PUT/PATCH of Secrets with ``resourceVersion`` conflicts (409) and ``AlreadyExists`` (409), and GET/PATCH
(strategic merge by webhook name, JSON merge, JSON patch) of ``admissionregistration.k8s.io/v1``
Mutating/ValidatingWebhookConfigurations, with ``Status`` bodies for errors and bearer-token authentication.
bootstrap talks to it through the real ``kubernetes`` client, configured by a generated kubeconfig. The webhook
configurations it starts with are the ones ``kubectl kustomize`` renders (when kubectl is there): most tests use the
two-hook install (``manifests/overlays/two-hooks``: a Mutating and a ValidatingWebhookConfiguration, both named
spreadguard); the base has only the MutatingWebhookConfiguration, and ``base_api`` serves that, with the base's own
RBAC enforced by the fake (a request the rendered roles do not allow is a 403, as kube-apiserver's RBAC answers).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeapi
import pytest
import yaml
from conftest import REPO, free_port
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fakeapi import FakeKubeAPI

from webhook.certs import bootstrap
from webhook.certs import files as certs
from webhook.certs.bootstrap import BootstrapError, Kube
from webhook.cli import main as cli_main

NS, SERVICE, SECRET, HOOK = "spreadguard", "spreadguard", "spreadguard-tls", "spreadguard"
# the command line of every CLI test here, before its --kubeconfig and options
BOOTSTRAP = ["certs", "bootstrap", "--namespace", NS, "--service", SERVICE, "--secret", SECRET, "--webhook", HOOK]
TOKEN = "bootstrap-test-token"
ADMISSION = "/apis/admissionregistration.k8s.io/v1/"
KINDS = {
    "mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
    "validatingwebhookconfigurations": "ValidatingWebhookConfiguration",
}


# --- fixtures -----------------------------------------------------------------------------------------------------


INSTALLS = {"base": REPO / "manifests", "two-hooks": REPO / "manifests" / "overlays" / "two-hooks"}


def rendered_webhook_configurations(install: str = "two-hooks") -> list[dict]:
    """The webhook configurations ``kubectl kustomize`` renders for ``install`` (hand-written ones without kubectl):
    the base has the mutating one only, the two-hook install both."""
    return copy.deepcopy(_rendered(install)[0])


def rendered_roles(install: str = "base") -> list[tuple[str, list[dict]]]:
    """``(namespace, rules)`` of the roles ``install`` binds to spreadguard's service account ("" for a
    ClusterRole), for ``FakeKubeAPI.rbac``; skipped without kubectl (no hand-written copy of the RBAC)."""
    roles = _rendered(install)[1]
    if roles is None:
        pytest.skip("kubectl is not installed: cannot render the RBAC")
    return copy.deepcopy(roles)


@functools.cache
def _rendered(install: str) -> tuple[list[dict], list[tuple[str, list[dict]]] | None]:
    kinds = ["MutatingWebhookConfiguration"] + (["ValidatingWebhookConfiguration"] if install == "two-hooks" else [])
    if shutil.which("kubectl"):
        done = subprocess.run(
            ["kubectl", "kustomize", str(INSTALLS[install])], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        docs = [d for d in yaml.safe_load_all(done.stdout) if d]
        found = [d for d in docs if d.get("kind") in KINDS.values()]
        assert [d["kind"] for d in found] == kinds, f"{install}: {[d['kind'] for d in found]}"
        return found, _bound_roles(docs)
    return _hand_written(kinds), None


def _bound_roles(docs: list[dict]) -> list[tuple[str, list[dict]]]:
    account = {"kind": "ServiceAccount", "name": SERVICE, "namespace": NS}
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}
    out = []
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding") or account not in binding["subjects"]:
            continue
        where = binding["metadata"].get("namespace", "")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], "" if ref["kind"] == "ClusterRole" else where, ref["name"])]
        out.append((where, role["rules"]))
    return out


def _hand_written(kinds: list[str]) -> list[dict]:
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": HOOK},
            "webhooks": [
                {
                    "name": f"{part}.spreadguard.io",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {"service": {"namespace": NS, "name": SERVICE, "path": "/x", "port": 443}},
                }
                for part in ("workloads", "pods")
            ],
        }
        for kind in kinds
    ]


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    server = FakeKubeAPI(token=TOKEN).serve()
    for obj in rendered_webhook_configurations():
        server.put(obj["kind"].lower() + "s", copy.deepcopy(obj))
    try:
        yield server
    finally:
        server.stop_serving()


@pytest.fixture
def base_api() -> Iterator[FakeKubeAPI]:
    """The base install: the MutatingWebhookConfiguration only, and the base's RBAC enforced."""
    server = FakeKubeAPI(token=TOKEN)
    server.rbac = rendered_roles("base")
    server.serve()
    for obj in rendered_webhook_configurations("base"):
        server.put(obj["kind"].lower() + "s", copy.deepcopy(obj))
    try:
        yield server
    finally:
        server.stop_serving()


@pytest.fixture
def kubeconfig(api: FakeKubeAPI, tmp_path: Path) -> Path:
    """A kubeconfig for the double: its CA, a bearer token."""
    return api.kubeconfig(tmp_path / "kubeconfig", namespace=NS)


def run(kubeconfig: Path, **kwargs: Any) -> bootstrap.BootstrapResult:
    args: dict[str, Any] = {"namespace": NS, "service": SERVICE, "secret": SECRET, "webhooks": [HOOK]}
    args.update(kwargs)
    return bootstrap.bootstrap(kubeconfig=str(kubeconfig), **args)


def secret_files(api: FakeKubeAPI) -> dict[str, bytes]:
    secret = api.get("secrets", SECRET, NS)
    assert secret is not None, "no Secret"
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def ca_bundles(api: FakeKubeAPI) -> list[str | None]:
    out = []
    for resource in KINDS:
        obj = api.get(resource, HOOK)
        assert obj is not None
        out.extend((w.get("clientConfig") or {}).get("caBundle") for w in obj["webhooks"])
    return out


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def make_secret(directory: Path, days: int, renew_ca: bool = False) -> dict:
    """A Secret as bootstrap would have written it, with a serving certificate valid for ``days``."""
    result = certs.ensure_certs(directory, dns=bootstrap.service_dns_names(SERVICE, NS), days=days)
    data = {
        name: base64.b64encode((directory / name).read_bytes()).decode()
        for name in (certs.CA_CERT, certs.CA_KEY, certs.TLS_CERT, certs.TLS_KEY)
    }
    assert result.action == "created"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": SECRET, "namespace": NS},
        "data": data,
    }


# --- tests --------------------------------------------------------------------------------------------------------


def test_creates_the_secret_and_patches_every_ca_bundle(api: FakeKubeAPI, kubeconfig: Path) -> None:
    assert all(b is None for b in ca_bundles(api)), "the rendered manifests must not carry a caBundle"
    result = run(kubeconfig)

    assert result.secret_action == "created" and not result.raced
    secret = api.get("secrets", SECRET, NS)
    assert secret["type"] == "kubernetes.io/tls"
    files = secret_files(api)
    assert set(files) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    serving, ca = cert(files["tls.crt"]), cert(files["ca.crt"])
    serving.verify_directly_issued_by(ca)
    sans = set(
        serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )
    assert {
        "spreadguard",
        "spreadguard.spreadguard",
        "spreadguard.spreadguard.svc",
        "spreadguard.spreadguard.svc.cluster.local",
    } <= sans
    key = serialization.load_pem_private_key(files["tls.key"], None)
    assert key.public_key() == serving.public_key()
    assert serving.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=360)

    bundles = ca_bundles(api)
    assert len(bundles) == 4 and set(bundles) == {base64.b64encode(files["ca.crt"]).decode()}
    assert api.writes() == [
        ("POST", f"/api/v1/namespaces/{NS}/secrets"),
        ("PATCH", f"{ADMISSION}mutatingwebhookconfigurations/{HOOK}"),
        ("PATCH", f"{ADMISSION}validatingwebhookconfigurations/{HOOK}"),
    ]
    assert result.webhooks == [
        ("MutatingWebhookConfiguration", HOOK, "patched"),
        ("ValidatingWebhookConfiguration", HOOK, "patched"),
    ]
    # the rest of the configurations is untouched by the patch
    for obj in rendered_webhook_configurations():
        stored = api.get(obj["kind"].lower() + "s", HOOK)
        for hook in stored["webhooks"]:
            hook["clientConfig"].pop("caBundle")
        assert stored["webhooks"] == obj["webhooks"]


def test_second_run_writes_nothing(api: FakeKubeAPI, kubeconfig: Path) -> None:
    first = run(kubeconfig)
    before = (api.get("secrets", SECRET, NS), ca_bundles(api))
    writes = len(api.writes())
    second = run(kubeconfig)
    assert second.secret_action == "kept"
    assert second.webhooks == [
        ("MutatingWebhookConfiguration", HOOK, "unchanged"),
        ("ValidatingWebhookConfiguration", HOOK, "unchanged"),
    ]
    assert len(api.writes()) == writes, f"the second run wrote: {api.writes()[writes:]}"
    assert (api.get("secrets", SECRET, NS), ca_bundles(api)) == before
    assert second.ca_bundle == first.ca_bundle


def test_near_expiry_certificate_is_renewed_with_the_same_ca(
    api: FakeKubeAPI, kubeconfig: Path, tmp_path: Path
) -> None:
    old = make_secret(tmp_path / "old", days=10)
    api.put("secrets", old)
    old_files = {k: base64.b64decode(v) for k, v in old["data"].items()}
    run(kubeconfig)  # first: caBundle written for that CA
    api.requests.clear()
    files = secret_files(api)
    assert files["ca.crt"] == old_files["ca.crt"] and files["ca.key"] == old_files["ca.key"]
    assert files["tls.crt"] != old_files["tls.crt"] and files["tls.key"] != old_files["tls.key"]
    renewed = cert(files["tls.crt"])
    renewed.verify_directly_issued_by(cert(old_files["ca.crt"]))
    assert renewed.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=360)
    assert set(ca_bundles(api)) == {base64.b64encode(old_files["ca.crt"]).decode()}


def test_renewal_keeps_the_ca_bundle_untouched(api: FakeKubeAPI, kubeconfig: Path, tmp_path: Path) -> None:
    old = make_secret(tmp_path / "old", days=10)
    old["metadata"]["labels"] = {"team": "platform"}
    old["data"]["note"] = base64.b64encode(b"added by someone else").decode()
    api.put("secrets", old)
    for resource in KINDS:  # the configurations already trust this CA
        obj = api.get(resource, HOOK)
        for hook in obj["webhooks"]:
            hook["clientConfig"]["caBundle"] = old["data"]["ca.crt"]
        api.put(resource, obj)
    api.requests.clear()
    result = run(kubeconfig)
    assert result.secret_action == "renewed"
    assert api.writes() == [("PUT", f"/api/v1/namespaces/{NS}/secrets/{SECRET}")]
    secret = api.get("secrets", SECRET, NS)
    assert secret["metadata"]["labels"]["team"] == "platform", "an update keeps what others put on the Secret"
    assert secret_files(api)["note"] == b"added by someone else"
    assert secret["metadata"]["annotations"]["spreadguard.io/not-after"].startswith(
        f"{result.not_after:%Y-%m-%dT%H:%M}"
    )


def test_a_good_secret_without_the_ca_key_is_kept_until_renewal(
    api: FakeKubeAPI, kubeconfig: Path, tmp_path: Path
) -> None:
    brought = make_secret(tmp_path / "brought", days=365)
    del brought["data"]["ca.key"]
    api.put("secrets", brought)
    api.requests.clear()
    assert run(kubeconfig).secret_action == "kept"
    assert [m for m, _ in api.writes()] == ["PATCH", "PATCH"]
    assert run(kubeconfig, renew_before_days=400, days=500).secret_action == "replaced"  # no key: a new CA


def test_renew_before_decides(api: FakeKubeAPI, kubeconfig: Path, tmp_path: Path) -> None:
    api.put("secrets", make_secret(tmp_path / "old", days=60))
    assert run(kubeconfig).secret_action == "kept"  # 60 days left, default --renew-before 30
    assert run(kubeconfig, renew_before_days=90, days=400).secret_action == "renewed"
    assert run(kubeconfig, renew_before_days=90, days=400).secret_action == "kept"
    with pytest.raises(BootstrapError, match="renew-before") as err:
        run(kubeconfig, renew_before_days=365, days=365)
    assert err.value.code == 2


def test_create_conflict_uses_the_other_pods_secret(api: FakeKubeAPI, kubeconfig: Path, tmp_path: Path) -> None:
    theirs = make_secret(tmp_path / "theirs", days=365)

    def another_pod_was_first(server: FakeKubeAPI) -> None:
        server.put("secrets", copy.deepcopy(theirs))  # lands between our GET (404) and our POST

    api.before[("create", "secrets")] = another_pod_was_first
    result = run(kubeconfig)
    assert result.raced and result.secret_action == "kept"
    assert secret_files(api) == {k: base64.b64decode(v) for k, v in theirs["data"].items()}
    assert set(ca_bundles(api)) == {theirs["data"]["ca.crt"]}
    methods = [m for m, _ in api.writes()]
    assert methods == ["POST", "PATCH", "PATCH"], api.writes()


def test_update_conflict_rereads(api: FakeKubeAPI, kubeconfig: Path, tmp_path: Path) -> None:
    api.put("secrets", make_secret(tmp_path / "old", days=5))
    fresh = make_secret(tmp_path / "fresh", days=365)

    def another_pod_renewed_first(server: FakeKubeAPI) -> None:
        server.put("secrets", copy.deepcopy(fresh))  # new resourceVersion: our PUT conflicts

    api.before[("update", "secrets")] = another_pod_renewed_first
    result = run(kubeconfig)
    assert result.raced and result.secret_action == "kept"
    assert secret_files(api)["tls.crt"] == base64.b64decode(fresh["data"]["tls.crt"])
    assert set(ca_bundles(api)) == {fresh["data"]["ca.crt"]}


def test_pods_starting_together_agree_on_one_secret(api: FakeKubeAPI, kubeconfig: Path) -> None:
    """Five init containers at once (the rollout of a fresh install): one Secret, one CA everywhere."""
    results: list[bootstrap.BootstrapResult] = []
    errors: list[BaseException] = []

    def one_pod() -> None:
        try:
            results.append(run(kubeconfig))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one_pod) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(results) == 5
    bundle = secret_files(api)["ca.crt"]
    assert all(r.ca_bundle == bundle for r in results)
    assert set(ca_bundles(api)) == {base64.b64encode(bundle).decode()}
    created = [r for r in results if r.secret_action == "created" and not r.raced]
    assert len(created) <= 1 and sum(1 for m, _ in api.writes() if m == "POST") <= 5


def test_webhook_patch_conflict_retries(api: FakeKubeAPI, kubeconfig: Path) -> None:
    def someone_edits_it(server: FakeKubeAPI) -> None:
        server.put("mutatingwebhookconfigurations", server.get("mutatingwebhookconfigurations", HOOK))

    api.before[("patch", "mutatingwebhookconfigurations")] = someone_edits_it
    run(kubeconfig)
    assert len(set(ca_bundles(api))) == 1 and None not in ca_bundles(api)
    patches = [p for m, p in api.writes() if m == "PATCH" and "mutating" in p]
    assert len(patches) == 2  # the first one conflicted


def test_new_ca_keeps_the_old_one_trusted_until_it_expires(api: FakeKubeAPI, kubeconfig: Path, tmp_path: Path) -> None:
    old = make_secret(tmp_path / "old", days=10)  # due for renewal...
    old_ca = base64.b64decode(old["data"]["ca.crt"])
    old["data"]["ca.key"] = base64.b64encode(b"lost").decode()  # ...and the CA cannot sign any more
    api.put("secrets", old)
    result = run(kubeconfig)
    assert result.secret_action == "replaced"
    bundle = x509.load_pem_x509_certificates(secret_files(api)["ca.crt"])
    assert len(bundle) == 2 and bundle[1] == cert(old_ca)
    cert(secret_files(api)["tls.crt"]).verify_directly_issued_by(bundle[0])
    assert set(ca_bundles(api)) == {base64.b64encode(secret_files(api)["ca.crt"]).decode()}
    assert run(kubeconfig).secret_action == "kept"  # and it stays that way


def test_out_writes_usable_files(api: FakeKubeAPI, kubeconfig: Path, tmp_path: Path) -> None:
    out = tmp_path / "tls"
    run(kubeconfig, out=out)
    files = secret_files(api)
    for name in ("ca.crt", "tls.crt", "tls.key"):
        assert (out / name).read_bytes() == files[name]
    assert not (out / "ca.key").exists(), "the server has no use for the CA key"
    assert (out / "tls.key").stat().st_mode & 0o077 == 0
    ssl.create_default_context().load_cert_chain(out / "tls.crt", out / "tls.key")


def test_forbidden_names_verb_and_resource_and_exits_2(
    api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.forbidden.add(("create", "secrets"))
    code = cli_main(
        [
            *BOOTSTRAP,
            "--kubeconfig",
            str(kubeconfig),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "forbidden: cannot create secrets 'spreadguard-tls' in namespace spreadguard" in err
    assert "rbac.yaml" in err

    api.forbidden = {("patch", "validatingwebhookconfigurations")}
    code = cli_main(
        [
            *BOOTSTRAP,
            "--kubeconfig",
            str(kubeconfig),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot patch validatingwebhookconfigurations.admissionregistration.k8s.io 'spreadguard'" in err


def test_cli_success_prints_one_summary_line(
    api: FakeKubeAPI, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(
        [
            *BOOTSTRAP,
            "--kubeconfig",
            str(kubeconfig),
            "--days",
            "90",
            "--renew-before",
            "10",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.count("\n") == 1 and "Secret spreadguard/spreadguard-tls: created" in captured.err
    assert "MutatingWebhookConfiguration spreadguard patched" in captured.err
    not_after = cert(secret_files(api)["tls.crt"]).not_valid_after_utc
    assert dt.timedelta(days=89) < not_after - dt.datetime.now(dt.UTC) <= dt.timedelta(days=90)


def test_missing_webhook_configuration_is_an_error(api: FakeKubeAPI, kubeconfig: Path) -> None:
    with pytest.raises(
        BootstrapError, match="no MutatingWebhookConfiguration or ValidatingWebhookConfiguration named 'other'"
    ) as err:
        run(kubeconfig, webhooks=[HOOK, "other"])
    assert err.value.code == 1


def test_no_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    nothing = tmp_path / "kubeconfig"
    nothing.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [
                    {
                        "name": "x",
                        "cluster": {
                            "server": f"https://127.0.0.1:{free_port()}",
                            "certificate-authority": str(fakeapi.tls().ca),
                        },
                    }
                ],
                "users": [{"name": "x", "user": {"token": TOKEN}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
            }
        )
    )
    args = BOOTSTRAP
    assert cli_main([*args, "--kubeconfig", str(nothing)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach the API server at https://127.0.0.1:" in err, err

    assert cli_main([*args, "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "no cluster" in err and err.count("\n") == 1


def test_kube_wrapper_reads_raw_objects(api: FakeKubeAPI, kubeconfig: Path) -> None:
    kube = Kube(bootstrap.api_client(str(kubeconfig)))
    assert kube.get_secret(NS, SECRET) is None
    mutating = kube.get_webhook_configuration("MutatingWebhookConfiguration", HOOK)
    assert mutating["kind"] == "MutatingWebhookConfiguration" and len(mutating["webhooks"]) == 2
    assert kube.get_webhook_configuration("ValidatingWebhookConfiguration", "absent") is None


# --- the base install: no ValidatingWebhookConfiguration ------------------------------------------------------------


def test_base_install_patches_the_one_configuration_it_has(base_api: FakeKubeAPI, tmp_path: Path) -> None:
    """The base has no ValidatingWebhookConfiguration: bootstrap (init container and CronJob, same command line)
    looks for one by name, gets a 404, and succeeds with the mutating one patched, under the base's own RBAC."""
    config = base_api.kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    result = run(config)
    assert result.secret_action == "created"
    assert result.webhooks == [("MutatingWebhookConfiguration", HOOK, "patched")]
    assert base_api.writes() == [
        ("POST", f"/api/v1/namespaces/{NS}/secrets"),
        ("PATCH", f"{ADMISSION}mutatingwebhookconfigurations/{HOOK}"),
    ]
    assert base_api.get("validatingwebhookconfigurations", HOOK) is None
    assert ("GET", f"{ADMISSION}validatingwebhookconfigurations/{HOOK}") in [
        (r.method, r.path) for r in base_api.requests
    ]
    bundle = base64.b64encode(secret_files(base_api)["ca.crt"]).decode()
    mutating = base_api.get("mutatingwebhookconfigurations", HOOK)
    assert [w["clientConfig"]["caBundle"] for w in mutating["webhooks"]] == [bundle, bundle]
    writes = len(base_api.writes())
    again = run(config)  # the daily renewal: nothing to do, nothing written
    assert again.secret_action == "kept" and again.webhooks == [("MutatingWebhookConfiguration", HOOK, "unchanged")]
    assert len(base_api.writes()) == writes


def test_two_hook_install_under_the_same_rbac_gets_both_bundles(base_api: FakeKubeAPI, tmp_path: Path) -> None:
    """The two-hook overlay adds the validating configuration and keeps the base's RBAC: bootstrap sets its
    caBundle too (a validating hook without one fails every call, and fails open)."""
    assert rendered_roles("two-hooks") == rendered_roles("base")
    for obj in rendered_webhook_configurations("two-hooks"):
        base_api.put(obj["kind"].lower() + "s", copy.deepcopy(obj))
    result = run(base_api.kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    assert result.webhooks == [
        ("MutatingWebhookConfiguration", HOOK, "patched"),
        ("ValidatingWebhookConfiguration", HOOK, "patched"),
    ]
    assert set(ca_bundles(base_api)) == {base64.b64encode(secret_files(base_api)["ca.crt"]).decode()}


def test_switching_from_two_hooks_to_the_base(base_api: FakeKubeAPI, tmp_path: Path) -> None:
    """An installed two-hook base switched to the single hook: once the validating configuration is deleted
    (docs/install.md), bootstrap patches the mutating one alone, without an error."""
    for obj in rendered_webhook_configurations("two-hooks"):
        base_api.put(obj["kind"].lower() + "s", copy.deepcopy(obj))
    config = base_api.kubeconfig(tmp_path / "kubeconfig", namespace=NS)
    assert len(run(config).webhooks) == 2
    base_api.delete("validatingwebhookconfigurations", HOOK)
    assert run(config).webhooks == [("MutatingWebhookConfiguration", HOOK, "unchanged")]


def test_rbac_without_the_validating_configuration_would_fail_loudly(base_api: FakeKubeAPI, tmp_path: Path) -> None:
    """Why the base's RBAC keeps validatingwebhookconfigurations: bootstrap asks for it by name in every install,
    and a 403 is an error (exit 2), never taken for "not installed" (which would leave the two-hook install's
    validating hooks without a caBundle, failing open)."""
    trimmed = []
    for namespace, rules in rendered_roles("base"):
        kept = []
        for rule in rules:
            if "validatingwebhookconfigurations" in rule.get("resources", []):
                rule = {**rule, "resources": [r for r in rule["resources"] if r != "validatingwebhookconfigurations"]}
            kept.append(rule)
        trimmed.append((namespace, kept))
    assert trimmed != rendered_roles("base")
    base_api.rbac = trimmed
    with pytest.raises(BootstrapError, match="cannot get validatingwebhookconfigurations") as err:
        run(base_api.kubeconfig(tmp_path / "kubeconfig", namespace=NS))
    assert err.value.code == 2
