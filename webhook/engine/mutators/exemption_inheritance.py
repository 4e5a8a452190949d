"""exemption-inheritance: record an approved exemption in a workload's pod templates, with the signed
grant (``spreadguard.io/exempt-grant``, webhook/engine/grants.py) that lets the pods and child workloads
its controller makes prove the approval for their owner. Only for an exemption granted to an
authorised user (or proven by a grant), and only with a grant key."""

from __future__ import annotations

from webhook.engine import grants, podspec
from webhook.engine.exemptions import EXEMPT, GRANT, REASON, parse_ids, requested
from webhook.engine.target import Target

ID = "exemption-inheritance"


def mutate(t: Target) -> str | None:
    if t.exempt_stamp is None or not t.group.path:
        return None
    raw, grant = t.exempt_stamp
    ann = podspec.path_to(t.template, "metadata", "annotations")
    if EXEMPT in ann and parse_ids(ann[EXEMPT]) != t.exempt:
        return None  # the template asks for other ids: its pods prove nothing (the grant names these ids)
    changed = []
    if EXEMPT not in ann:
        ann[EXEMPT] = raw
        changed.append("the exemption")
        req = requested(t.obj)
        if req is not None and req.reason and REASON not in ann:
            ann[REASON] = req.reason
    value = grants.add(ann.get(GRANT), grant)
    if ann.get(GRANT) != value:
        ann[GRANT] = value
        changed.append("its grant")
    if not changed:
        return None
    return f"{t.describe}: pods inherit {' and '.join(changed)} ({raw})"
