"""Placement classes under a policy, and what a node failure costs each class.

The kind table gives every group its class (``Group.placement``); a policy may override it
(``placement.overrides``) and may honour the workload's own label ``spreadguard.io/placement``
(``placement.workloadLabel``). A gang is every group of one job whose class is gang: its pods are
"in series", so each node it uses is one more failure that restarts all of it.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from webhook.engine import podspec
from webhook.engine.workloads import (
    ELASTIC,
    GANG,
    PLACEMENT_CLASSES,
    PLACEMENT_LABEL,
    REPLICAS,
    Group,
    Kind,
    Path,
)

if TYPE_CHECKING:
    from webhook.engine.policy import PolicySpec

# Published fleet figure (design.md): node remediations per 1000 nodes per day.
NODE_FAILURES_PER_1000_PER_DAY = 19.0
DEFAULT_NODE_GPUS = 8  # assumed node size when there is no cluster view
SPREADING = (REPLICAS, ELASTIC)


def _labels(meta_holder: dict[str, Any]) -> dict[str, Any]:
    meta = meta_holder.get("metadata")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    return labels if isinstance(labels, dict) else {}


def _kind_matches(patterns: list[str], kind: Kind) -> bool:
    return any(p in ("*", kind.kind, f"{kind.group}/{kind.kind}") for p in patterns)


def resolve(
    group: Group, obj: dict[str, Any], template: dict[str, Any], kind: Kind, policy: PolicySpec
) -> tuple[str, str | None]:
    """(class, note): the label on the pod template or workload if the policy honours it, else the
    policy's first matching override, else the kind table's class. ``note`` says why a label was ignored."""
    mode = policy.placement.workloadLabel
    for labels in (_labels(template), _labels(obj)):
        value = labels.get(PLACEMENT_LABEL)
        if value is None:
            continue
        if mode == "ignore":
            break
        if value not in PLACEMENT_CLASSES:
            return _override(group, kind, policy), (
                f"{PLACEMENT_LABEL}={str(value)[:63]!r} is not a class ({', '.join(PLACEMENT_CLASSES)}): ignored"
            )
        if mode == "any" or value in SPREADING:
            return str(value), None
        return _override(group, kind, policy), (
            f"{PLACEMENT_LABEL}={value} ignored for group {group.name}: the policy lets this label only choose "
            f"a class that spreads ({', '.join(SPREADING)}); ask an admin for a placement override"
        )
    return _override(group, kind, policy), None


def _override(group: Group, kind: Kind, policy: PolicySpec) -> str:
    for o in policy.placement.overrides:
        if _kind_matches(o.kinds, kind) and any(fnmatch.fnmatchcase(group.name, g) for g in o.groups):
            return o.placement
    return group.placement


def restarts_per_30_days(nodes: int, rate: float = NODE_FAILURES_PER_1000_PER_DAY) -> float:
    """Expected node failures among ``nodes`` in 30 days: each one restarts a gang that spans them."""
    return nodes * rate / 1000.0 * 30.0


@dataclass(frozen=True)
class Gang:
    """Every gang-class group of one job: sizes and GPUs per pod, for the compaction decision."""

    name: str
    parts: tuple[tuple[int, int], ...]  # (pods, GPUs per pod) of each group
    first: Path  # the group that reports the gang's summary

    @property
    def pods(self) -> int:
        return sum(p for p, _ in self.parts)

    @property
    def gpus(self) -> int:
        return sum(p * g for p, g in self.parts)

    def min_nodes(self, node_gpus: int) -> int | None:
        """The fewest nodes of ``node_gpus`` GPUs its pods fit on (None: no GPUs to pack by)."""
        if node_gpus <= 0 or not any(g for _, g in self.parts):
            return None
        slots = sum(Fraction(p, max(1, node_gpus // g)) if g else Fraction(0) for p, g in self.parts)
        return max(1, math.ceil(slots))

    def describe(self) -> str:
        sizes = {g for _, g in self.parts}
        if len(sizes) == 1:
            return f"gang {self.name} ({self.pods} pods x {sizes.pop()} GPUs)"
        return f"gang {self.name} ({self.pods} pods, {self.gpus} GPUs)"

    def explain(self, node_gpus: int, assumed: bool) -> str:
        """Why compaction: restarts on the fewest nodes versus one node per pod."""
        low = self.min_nodes(node_gpus)
        size = f"{node_gpus}-GPU nodes" + (", assumed: no cluster view" if assumed else "")
        if low is None:
            return f"{self.describe()}: kept in one zone; any of its nodes failing restarts all {self.pods} pods"
        rate = NODE_FAILURES_PER_1000_PER_DAY
        cost = (
            f"{restarts_per_30_days(low):.1f} expected restarts per 30 days at {rate:g} node failures per 1000 "
            f"nodes per day"
        )
        if self.pods > low:
            return (
                f"{self.describe()}: kept on the fewest nodes of one zone; spread over {self.pods} nodes it would "
                f"restart on any of {self.pods} node failures instead of {low} ({size}; {cost} instead of "
                f"{restarts_per_30_days(self.pods):.1f})"
            )
        return (
            f"{self.describe()}: needs {low} nodes either way ({size}); kept in one zone so its collectives do not "
            f"cross zones; no hostname spread: it would not lower its {cost}"
        )


def gangs(
    groups: list[tuple[Group, dict[str, Any]]], classes: dict[Path, str], gpu_resources: list[str], name: str
) -> dict[Path, Gang]:
    """The gang each gang-class group belongs to, by group path (groups sharing one gang selector)."""
    members: dict[str, list[tuple[Group, int]]] = {}
    for group, template in groups:
        if classes.get(group.path) != GANG or group.replicas is None:
            continue
        key = json.dumps(group.gang_selector or group.selector, sort_keys=True)
        gpus = podspec.gpu_count(podspec.spec_of(template), gpu_resources)
        members.setdefault(key, []).append((group, gpus))
    out: dict[Path, Gang] = {}
    for found in members.values():
        gang = Gang(name, tuple((g.replicas or 0, n) for g, n in found), found[0][0].path)
        out.update({g.path: gang for g, _ in found})
    return out
