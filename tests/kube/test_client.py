"""webhook/kube/client.py: the one precedence rule for finding a cluster, and the one error describer.

Configuration loading makes no network call, so these tests only write kubeconfig files; the describer is
fed the exceptions the ``kubernetes`` client raises (built here as it builds them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, NewConnectionError

from webhook.kube import client as kube


def kubeconfig(path: Path, server: str, namespace: str = "") -> Path:
    context: dict = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "main",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "main", "context": context}, {"name": "other", "context": {"cluster": "c", "user": "u"}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cluster in the environment; HOME is a fresh directory."""
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_precedence_explicit_then_in_cluster_then_kubeconfig_then_home(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = kubeconfig(env / "home" / ".kube" / "config", "https://home:6443", namespace="ml")
    got = kube.load()
    assert got is not None and (got.host, got.namespace, got.context, got.source) == (
        "https://home:6443",
        "ml",
        "main",
        "~/.kube/config",
    )
    assert kube.load(home=False) is None  # the server's cache: never the home file implicitly

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(env / "env.yaml", "https://env:6443")))
    got = kube.load(home=False)
    assert got is not None and got.host == "https://env:6443" and got.namespace == "default"

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # in a pod, before $KUBECONFIG ...
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(kube.ConfigError, match="^in-cluster configuration: ") as err:
        kube.load()  # (no service account token here: the in-cluster source is chosen, and fails)
    assert err.value.explicit is False

    got = kube.load(str(home), "other")  # ... and an explicit flag before everything
    assert got is not None and (got.host, got.context, got.namespace) == ("https://home:6443", "other", "default")


@pytest.mark.parametrize(
    "kubeconfig_arg, context, env_file, message, explicit",
    [
        ("missing.yaml", None, None, "no kubeconfig at {tmp}/missing.yaml: no such file", True),
        (None, None, "gone.yaml", "no cluster: not running in a pod", False),
        ("good.yaml", "nope", None, "context 'nope' not found in {tmp}/good.yaml (contexts: main, other)", True),
        ("broken.yaml", None, None, "kubeconfig {tmp}/broken.yaml: ", True),
    ],
)
def test_bad_sources_are_one_line(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    kubeconfig_arg: str | None,
    context: str | None,
    env_file: str | None,
    message: str,
    explicit: bool,
) -> None:
    kubeconfig(env / "good.yaml", "https://good:6443")
    (env / "broken.yaml").write_text("apiVersion: v1\nkind: Config\nclusters: 7\n")
    if env_file:
        monkeypatch.setenv("KUBECONFIG", str(env / env_file))
    with pytest.raises(kube.ConfigError) as err:
        kube.load(str(env / kubeconfig_arg) if kubeconfig_arg else None, context)
    text = str(err.value)
    assert text.startswith(message.format(tmp=env)) and "\n" not in text
    assert err.value.explicit is explicit


def test_nothing_configured_is_none(env: Path) -> None:
    assert kube.load() is None and kube.load(home=False) is None


CONN = "<urllib3.connection.HTTPSConnection object at 0x7f3a>"  # how urllib3 names the connection


def _api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return exc


@pytest.mark.parametrize(
    "exc, what, expected",
    [
        (
            _api_error(403, 'pods is forbidden: User "x"'),
            "list pods",
            'list pods: HTTP 403 pods is forbidden: User "x"',
        ),
        (
            _api_error(401, "Unauthorized"),
            "",
            "unauthorized: the API server at https://h:6443 rejected the credentials: Unauthorized",
        ),
        (ApiException(status=0, reason="[SSL: CERTIFICATE_VERIFY_FAILED] x"), "", "cannot reach the API server at "),
        (
            MaxRetryError(None, "/api", NewConnectionError(CONN, "Failed to establish a new connection: refused")),  # type: ignore[arg-type]
            "GET /api",
            "cannot reach the API server at https://h:6443 (GET /api): Failed to establish a new connection: refused",
        ),
        (ValueError("not json"), "", "unexpected answer from the API server at https://h:6443: ValueError: not json"),
    ],
)
def test_describe(exc: BaseException, what: str, expected: str) -> None:
    text = kube.describe(exc, "https://h:6443", what)
    assert text.startswith(expected) and "\n" not in text and len(text) <= kube.MAX_ERROR_CHARS


def test_describe_bounds_what_the_server_says() -> None:
    text = kube.describe(_api_error(500, "x" * 5000), "https://h:6443")
    assert len(text) == kube.MAX_ERROR_CHARS and text.endswith("...")
