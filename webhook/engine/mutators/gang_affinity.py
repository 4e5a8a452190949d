"""gang-affinity: keep a tightly coupled training gang in one rack/block (preferred pod affinity of
the whole job on the policy's topology key) while its replicas spread over hosts."""

from __future__ import annotations

from webhook.engine import podspec
from webhook.engine.target import Target

ID = "gang-affinity"


def mutate(t: Target) -> str | None:
    cfg = t.policy.mutate.gangAffinity
    if cfg is None or not cfg.enabled or t.workload_class != "training" or not t.group.gang_selector:
        return None
    if t.placement_owner:
        return None
    labels = t.labels
    for required in (True, False):
        for term in podspec.pod_affinity_terms(t.spec, "podAffinity", required):
            if term.get("topologyKey") == cfg.topologyKey and podspec.term_selects(term, labels, t.namespace):
                return None
    affinity = podspec.path_to(t.template, "spec", "affinity", "podAffinity")
    podspec.child(affinity, "preferredDuringSchedulingIgnoredDuringExecution", list).append(
        {
            "weight": cfg.weight,
            "podAffinityTerm": {"labelSelector": t.group.gang_selector, "topologyKey": cfg.topologyKey},
        }
    )
    return f"{t.describe}: keeps the job's pods in one {cfg.topologyKey} (preferred)"
