"""What a tenant can put in a request that the API server accepts, against the engine: every such input
gets a decision (an exception or a slow evaluation makes the webhook admit unchecked: fail open)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webhook.engine.decide import evaluate
from webhook.engine.policy import load_policies
from webhook.engine.target import Context

REPO = Path(__file__).resolve().parents[2]
POLICIES = load_policies(REPO / "policies")
FOREIGN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "nlp", "effect": "NoSchedule"}


def _pod(limits: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "resources": {"limits": limits}}], **spec},
    }


# Quantities the API server stores (resource.ParseQuantity keeps any exponent; for an integer resource its
# check of MilliValue() % 1000 sees 0 once the value overflows int64) but Python's float() makes infinite.
HUGE_QUANTITIES = ["1e309", "9" * 400, "1E400", "+1e309"]


@pytest.mark.parametrize("quantity", HUGE_QUANTITIES)
def test_a_gpu_quantity_past_a_float_is_decided_not_crashed(quantity: str) -> None:
    ctx = Context(namespace="ml", namespace_labels={"spreadguard.io/team": "vision"})
    decision = evaluate(_pod({"nvidia.com/gpu": quantity}, tolerations=[FOREIGN]), ctx, POLICIES)
    assert "training" in decision.policies  # still a GPU pod: the GPU policies apply
    assert [v.rule for v in decision.violations] == ["foreign-team-toleration"]
