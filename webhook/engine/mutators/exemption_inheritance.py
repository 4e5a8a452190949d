"""exemption-inheritance: copy a granted exemption from a workload onto its pod templates, so the
pods its controller creates carry it (and controllers listed in the policy inherit it)."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.exemptions import EXEMPT, REASON, requested
from webhook.engine.target import Target

ID = "exemption-inheritance"


def mutate(t: Target) -> str | None:
    if not t.exempt or not t.group.path:
        return None
    req = requested(t.obj)
    if req is None:
        return None
    ann = podspec.path_to(t.template, "metadata", "annotations")
    if EXEMPT in ann:
        return None
    ann[EXEMPT] = req.raw
    if req.reason and REASON not in ann:
        ann[REASON] = req.reason
    return f"{t.describe}: pods inherit the exemption {req.raw}"
