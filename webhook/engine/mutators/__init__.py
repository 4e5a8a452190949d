"""Injectors, applied in this order. Each module has ``ID`` and ``mutate(target) -> str | None``
(a short note of what it added, None when it added nothing). Each must be idempotent."""

from webhook.engine import ids
from webhook.engine.mutators import (
    anti_affinity,
    exemption_inheritance,
    gang_affinity,
    group_label,
    health_avoidance,
    job_failure_policy,
    team_tolerations,
    topology_spread,
)

MUTATORS = [
    group_label,
    exemption_inheritance,
    team_tolerations,
    health_avoidance,
    anti_affinity,
    topology_spread,
    gang_affinity,
    job_failure_policy,
]
assert [m.ID for m in MUTATORS] == ids.MUTATOR_IDS, "update engine/ids.py"
MUTATOR_IDS = ids.MUTATOR_IDS

# What each mutator writes: pod template fields (metadata labels/annotations, spec fields, affinity
# kinds) and JobSpec fields. On UPDATE only mutators whose fields the API server lets change run
# (decide.update_scope); tests/engine/test_validity.py checks every patch against these.
FIELDS: dict[str, frozenset[str]] = {
    "group-label": frozenset({"labels"}),
    "exemption-inheritance": frozenset({"annotations"}),
    "team-tolerations": frozenset({"tolerations"}),
    "health-avoidance": frozenset({"nodeAffinity"}),
    "anti-affinity": frozenset({"podAntiAffinity"}),
    "topology-spread": frozenset({"topologySpreadConstraints"}),
    "gang-affinity": frozenset({"podAffinity"}),
    "job-failure-policy": frozenset({"podFailurePolicy", "podReplacementPolicy"}),
}
assert set(FIELDS) == set(MUTATOR_IDS), "say which fields each mutator writes"
