"""anti-affinity: pod anti-affinity between the pods of one group on the policy's topology key
(``kubernetes.io/hostname``), so one node failure takes at most one replica.

Only for groups whose class spreads (replicas, elastic; gangs only with ``placement.spreadGangs``):
a gang restarts whole on any of its nodes failing, so spreading it multiplies its restarts.
Required only when the cluster view shows a node per pod, counting a rolling update's surge.

What the template already has (``already_spread``), told apart by where it comes from:

- the submitted template's *required* term on the key, selecting the group: it keeps the pods apart
  as well as ours would; nothing added.
- the submitted template's *preferred* term: it does not keep them apart (the scheduler's
  bin-packing score can outweigh a weight-1 preference and pack every replica on one node), so a
  tenant could switch spreading off with it. spreadguard adds its term as it would without it;
  only when its own choice is preferred too (the cluster cannot hold required, or the group size is
  unknown at a Pod) is nothing added: a second preferred term on the same key and selector adds no
  guarantee. This also keeps the Pod backstop from stacking a term on what spreadguard put on the
  workload: the workload's required term arrives at the Pod as the template's own required term, its
  preferred one (a shortage) as a preferred term, which the Pod (size unknown: preferred) leaves alone.
- a term spreadguard added earlier in this evaluation (an earlier policy; in the working copy past
  the end of the submitted list), of either kind: the earlier policy's addition wins, as for every
  mutator (``decide``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook.engine import podspec
from webhook.engine.placement import eligible_nodes, shortage
from webhook.engine.target import Target

ID = "anti-affinity"
_LISTS = {
    True: "requiredDuringSchedulingIgnoredDuringExecution",
    False: "preferredDuringSchedulingIgnoredDuringExecution",
}


@dataclass
class Spread:
    """The anti-affinity already repelling a group on one key, by where it comes from."""

    added: bool = False  # spreadguard added a term earlier in this evaluation (either kind)
    required: bool = False  # the submitted template has a required term
    preferred_weights: list[int] = field(default_factory=list)  # the submitted template's preferred terms


def _entries(spec: dict[str, Any], required: bool) -> list[Any]:
    """The raw list of required or preferred podAntiAffinity entries (indexes as in the object)."""
    affinity = spec.get("affinity")
    anti = affinity.get("podAntiAffinity") if isinstance(affinity, dict) else None
    entries = anti.get(_LISTS[required]) if isinstance(anti, dict) else None
    return entries if isinstance(entries, list) else []


def _repels(entry: Any, required: bool, t: Target, labels: dict[str, str], topology_key: str) -> bool:
    """Whether one entry repels the group's own pods on ``topology_key``.

    A term with ``mismatchLabelKeys`` does not count: the API server merges each key into its selector as
    ``key NotIn (<the pod's value>)``, and with a key every pod of the group shares (a template label, the
    controller's revision hash, which admission cannot see) it selects none of the group's own pods."""
    term = entry if required else (entry.get("podAffinityTerm") if isinstance(entry, dict) else None)
    if not isinstance(term, dict) or term.get("mismatchLabelKeys") or term.get("topologyKey") != topology_key:
        return False
    return podspec.term_selects(term, labels, t.namespace)


def already_spread(t: Target, topology_key: str) -> Spread:
    """The terms repelling the group on ``topology_key``: those of the submitted template (by kind, the
    preferred ones' weights) and whether spreadguard added one earlier in this evaluation. Mutators only
    append to these lists, so an entry past the submitted list's length is spreadguard's."""
    out, labels = Spread(), t.labels
    submitted = t.submitted_spec
    for required in (True, False):
        own = len(_entries(submitted, required))
        for i, entry in enumerate(_entries(t.spec, required)):
            if not _repels(entry, required, t, labels, topology_key):
                continue
            if i >= own:
                out.added = True
            elif required:
                out.required = True
            else:
                weight = entry.get("weight")
                out.preferred_weights.append(weight if isinstance(weight, int) else 0)
    return out


def _weights(weights: list[int]) -> str:
    return ", ".join(str(w) for w in weights)


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
    spread = already_spread(t, cfg.topologyKey)
    if spread.added or spread.required:
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
    own = spread.preferred_weights
    if mode == "preferred" and own:
        # a second preferred term on the same key and selector guarantees nothing more; say so when the
        # template's is lighter than the policy's (not at a Pod: its workload was told)
        if t.group.replicas is not None and max(own) < cfg.weight:
            t.info.append(
                f"{t.describe}, class {t.placement}: preferred anti-affinity on {cfg.topologyKey}{why} left to the "
                f"template's own preferred anti-affinity (weight {_weights(own)}; the policy's weight is {cfg.weight})"
            )
        return None
    anti = podspec.path_to(t.template, "spec", "affinity", "podAntiAffinity")
    if mode == "required":
        podspec.child(anti, _LISTS[True], list).append(term)
    else:
        podspec.child(anti, _LISTS[False], list).append({"weight": cfg.weight, "podAffinityTerm": term})
    note = f"{t.describe}, class {t.placement}: {mode} anti-affinity on {cfg.topologyKey}{why}"
    if own:
        note += (
            f"; the template's own preferred anti-affinity (weight {_weights(own)}) does not keep replicas apart: "
            "required added"
        )
    return note
