"""gang-affinity: keep a synchronous gang (placement class gang) compact: pod affinity of the whole
job to one zone (required when the cluster view shows every zone it could start in can hold it,
else preferred with the reason), preferably one rack/block, and preferably on shared nodes, so it
runs on the fewest nodes its GPU requests allow. Every node a gang spans is one more failure that
restarts all of it; the note says how many.

The first pod of a gang matches its own required term, which the scheduler accepts when no other
pod matches yet: it picks the zone, the rest follow. A node without the zone label would leave the
rest nowhere to go, so required also needs every eligible node to carry the label. "Can hold" counts
allocatable GPUs, not free ones: in a busy zone the rest of the gang waits there for capacity.
"""

from __future__ import annotations

from typing import Any

from webhook.engine import classes, podspec
from webhook.engine.placement import eligible_by_label, largest_node_gpus
from webhook.engine.target import Target

ID = "gang-affinity"


def _has(t: Target, key: str) -> bool:
    labels = t.labels
    for required in (True, False):
        for term in podspec.pod_affinity_terms(t.spec, "podAffinity", required):
            if term.get("topologyKey") == key and podspec.term_selects(term, labels, t.namespace):
                return True
    return False


def _node_gpus(t: Target) -> tuple[int, bool]:
    """GPUs of the nodes the gang would use, and whether that is assumed (no cluster view)."""
    view = t.context.cluster
    if view is not None and view.synced:
        found = largest_node_gpus(view, t.spec, t.policy.gpuResources, t.context.meter)
        if found:
            return found, False
    return classes.DEFAULT_NODE_GPUS, True


def zone_mode(t: Target, zone_key: str, configured: str) -> tuple[str, str]:
    """("required" or "preferred", why) for keeping the gang in one zone."""
    if configured == "preferred":
        return "preferred", ""
    view = t.context.cluster
    if view is None or not view.synced:
        return "preferred", "no cluster view to check a zone can hold it"
    if t.gang is None:
        return "preferred", "gang size unknown at the pod"
    zones = eligible_by_label(view, t.spec, t.policy.gpuResources, zone_key, t.context.meter)
    if not zones:
        return "preferred", "no eligible node"
    if None in zones:
        return "preferred", f"{zones[None][0]} eligible nodes have no {zone_key} label"
    short = []
    for zone, (nodes, gpus) in sorted(zones.items(), key=lambda z: str(z[0])):
        need = t.gang.min_nodes(gpus) or t.gang.pods
        if nodes < need:
            short.append(f"zone {zone} has {nodes} eligible nodes, the gang needs {need}")
    if short:
        return "preferred", "; ".join(short[:3]) + ": required could strand it there"
    held = ", ".join(f"{z}: {n}" for z, (n, _g) in sorted(zones.items(), key=lambda z: str(z[0]))[:6])
    return "required", f"every zone it could start in can hold it (eligible nodes {held})"


def _term(t: Target, key: str) -> dict[str, Any]:
    term: dict[str, Any] = {"labelSelector": t.group.gang_selector, "topologyKey": key}
    if t.group.gang_keys:
        term["matchLabelKeys"] = list(t.group.gang_keys)
    return term


def mutate(t: Target) -> str | None:
    cfg = t.policy.mutate.gangAffinity
    if cfg is None or not cfg.enabled or t.placement != "gang" or not t.group.gang_selector:
        return None
    if t.placement_owner:
        return None
    required: list[dict[str, Any]] = []
    preferred: list[dict[str, Any]] = []
    done = []
    if cfg.zone != "off" and not _has(t, cfg.zoneKey):
        mode, why = zone_mode(t, cfg.zoneKey, cfg.zone)
        (required if mode == "required" else preferred).append(_term(t, cfg.zoneKey))
        done.append(f"{mode} one {cfg.zoneKey}" + (f" ({why})" if why else ""))
    for key in cfg.blockKeys:
        if not _has(t, key):
            preferred.append(_term(t, key))
            done.append(f"preferred one {key}")
    gpus, assumed = _node_gpus(t)
    per_pod = podspec.gpu_count(t.spec, t.policy.gpuResources)
    if cfg.compactHosts and not t.policy.placement.spreadGangs and per_pod < gpus and not _has(t, podspec.HOSTNAME):
        preferred.append(_term(t, podspec.HOSTNAME))
        done.append("preferred shared nodes")
    if required or preferred:
        affinity = podspec.path_to(t.template, "spec", "affinity", "podAffinity")
        if required:
            podspec.child(affinity, "requiredDuringSchedulingIgnoredDuringExecution", list).extend(required)
        if preferred:
            podspec.child(affinity, "preferredDuringSchedulingIgnoredDuringExecution", list).extend(
                {"weight": cfg.weight, "podAffinityTerm": term} for term in preferred
            )
    if not done:
        return None
    note = f"{t.describe}, class gang: {', '.join(done)}"
    if t.gang is not None and t.gang.first == t.group.path:
        note += f". {t.gang.explain(gpus, assumed)}"
    return note
