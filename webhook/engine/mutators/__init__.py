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
