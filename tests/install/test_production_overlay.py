"""The production overlay: a NetworkPolicy admitting only the webhook port (from the API server's ranges
and Prometheus's namespace) and the PrometheusRule alerting on what spreadguard allowed undecided.
Rendered with the real ``kubectl kustomize``; every metric an alert uses is one the server exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "manifests" / "overlays" / "production"


def render() -> list[dict]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    done = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_network_policy_admits_only_the_webhook_port_of_the_webhook_pods() -> None:
    import kubernetes_validate

    objects = render()
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    kubernetes_validate.validate(policy, "1.32", strict=True)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items())
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    for rule in policy["spec"]["ingress"]:
        assert rule["from"], "a rule without sources would admit every pod"
        assert [p["port"] for p in rule["ports"]] == ["https"] and "https" in ports
    sources = [s for rule in policy["spec"]["ingress"] for s in rule["from"]]
    assert all("podSelector" not in s for s in sources)  # no pod of the cluster is admitted as such


def test_every_alert_uses_metrics_the_server_exposes() -> None:
    from webhook.server import metrics

    exposed = {
        sample.name
        for family in metrics.get().registry.collect()
        for sample in family.samples
        if sample.name.startswith("spreadguard_")
    } | {f.name for f in metrics.get().registry.collect()}
    (rule,) = [o for o in render() if o["kind"] == "PrometheusRule"]
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    names = {a["alert"] for a in alerts}
    assert {"SpreadguardFailingOpen", "SpreadguardPolicyReloadRefused", "SpreadguardConnectionsRefused"} <= names
    for alert in alerts:
        used = set(re.findall(r"spreadguard_[a-z_]+", alert["expr"]))
        assert used and used <= exposed, (alert["alert"], used - exposed)


def test_production_overlay_calls_spreadguard_once_per_object() -> None:
    """The production overlay keeps the base's single hook: one configuration, both hooks on /admit."""
    objects = render()
    assert not [o for o in objects if o["kind"] == "ValidatingWebhookConfiguration"]
    (mutating,) = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    assert [h["clientConfig"]["service"]["path"] for h in mutating["webhooks"]] == ["/admit", "/admit"]
    assert all(h["reinvocationPolicy"] == "IfNeeded" and h["failurePolicy"] == "Ignore" for h in mutating["webhooks"])
