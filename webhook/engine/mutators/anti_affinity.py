"""anti-affinity: pod anti-affinity between the pods of one group on the policy's topology key
(``kubernetes.io/hostname``), so one node failure takes at most one replica.

Only for groups whose class spreads (replicas, elastic; gangs only with ``placement.spreadGangs``):
a gang restarts whole on any of its nodes failing, so spreading it multiplies its restarts.
Required only when the cluster view shows a node per pod, counting a rolling update's surge.
"""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.placement import eligible_nodes, shortage
from webhook.engine.target import Target

ID = "anti-affinity"


def already_spread(t: Target, topology_key: str) -> bool:
    """Whether the template already repels its own group on ``topology_key`` (required or preferred).

    A term with ``mismatchLabelKeys`` does not count: the API server merges each key into its selector as
    ``key NotIn (<the pod's value>)``, and with a key every pod of the group shares (a template label, the
    controller's revision hash, which admission cannot see) it selects none of the group's own pods."""
    labels = t.labels
    for required in (True, False):
        for term in podspec.pod_affinity_terms(t.spec, "podAntiAffinity", required):
            if term.get("mismatchLabelKeys"):
                continue
            if term.get("topologyKey") == topology_key and podspec.term_selects(term, labels, t.namespace):
                return True
    return False


def _why_required(t: Target) -> str:
    view = t.context.cluster
    n = t.group.replicas
    if view is None or not view.synced or n is None:
        return ""
    pods = n + t.group.surge
    surge = f" ({n} replicas + {t.group.surge} surge)" if t.group.surge else ""
    eligible = eligible_nodes(view, t.spec, t.policy.gpuResources, t.context.meter)
    return f" ({eligible} eligible nodes for {pods} pods{surge}; a node failure takes at most 1 of {n})"


def mutate(t: Target) -> str | None:
    cfg = t.policy.mutate.antiAffinity
    if cfg is None or not cfg.enabled or not t.group.selector or not t.spreads:
        return None
    if t.group.replicas is not None and t.group.replicas < cfg.minReplicas:
        return None
    if already_spread(t, cfg.topologyKey):
        return None
    if cfg.topologyKey == podspec.HOSTNAME and podspec.pinned_host(t.spec):
        return None  # pinned to one node (single-node-pinning judges it): required would strand the rest
    term = {"labelSelector": t.group.selector, "topologyKey": cfg.topologyKey}
    mode, why = cfg.mode, ""
    view = t.context.cluster
    if mode == "required" and t.group.replicas is None:
        # a Pod whose workload was not mutated (created before spreadguard, or an unlisted controller):
        # its group size is unknown, so required could leave pods Pending forever
        mode, why = "preferred", " instead of required (group size unknown at the pod)"
    elif mode == "required" and cfg.onShortage == "preferred":
        short = shortage(t)
        if short:
            mode, why = "preferred", f" instead of required ({short})"
        elif t.workload_class == "serving" and (view is None or not view.synced):
            # serving rolls out with surge pods: without a node count, required could block a rollout
            mode, why = "preferred", " instead of required (no cluster view to count eligible nodes)"
        elif cfg.topologyKey == podspec.HOSTNAME:
            why = _why_required(t)
    anti = podspec.path_to(t.template, "spec", "affinity", "podAntiAffinity")
    if mode == "required":
        podspec.child(anti, "requiredDuringSchedulingIgnoredDuringExecution", list).append(term)
    else:
        podspec.child(anti, "preferredDuringSchedulingIgnoredDuringExecution", list).append(
            {"weight": cfg.weight, "podAffinityTerm": term}
        )
    return f"{t.describe}, class {t.placement}: {mode} anti-affinity on {cfg.topologyKey}{why}"
