"""team-label-claim: a workload or pod label ``spreadguard.io/team`` naming another team than the one
its namespace belongs to. The namespace is the tenancy boundary; a label is only used where the
namespace has no team."""

from __future__ import annotations

from typing import Any

from webhook.engine.target import Finding, Target
from webhook.engine.workloads import TEAM_LABEL, Path, format_path

ID = "team-label-claim"
DEFAULT_ACTION = "deny"


def _claim(meta: Any) -> str | None:
    labels = meta.get("labels") if isinstance(meta, dict) else None
    value = labels.get(TEAM_LABEL) if isinstance(labels, dict) else None
    return str(value) if value else None


def check(t: Target) -> list[Finding]:
    if not t.namespace_team:
        return []
    out = []
    places: list[tuple[Path, Any]] = [((), t.obj.get("metadata"))]
    if t.group.path:  # a workload's pod template (a Pod's metadata is its own)
        places.append((t.group.path, t.template.get("metadata")))
    for steps, meta in places:
        claimed = _claim(meta)
        if claimed is None or claimed == t.namespace_team:
            continue
        path = format_path((*steps, "metadata", "labels", TEAM_LABEL))
        out.append(
            Finding(
                path,
                f"labelled team {claimed!r} but namespace {t.namespace} belongs to team {t.namespace_team} "
                f"({t.namespace_team_source}): the namespace decides the team, so this workload gets team "
                f"{t.namespace_team}'s nodes only. Fix: remove the label or set it to {t.namespace_team}; a "
                "workload for another team belongs in that team's namespace",
            )
        )

    return out
