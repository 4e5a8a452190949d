"""Validation rules by stable id.

Template rules (``RULES``): ``ID``, ``DEFAULT_ACTION`` ("deny" or "warn") and
``check(target) -> list[Finding]``, run on every pod template of a matching object. Exemption rules
(``EXEMPTION_RULES``) judge the ``spreadguard.io/exempt`` annotation itself (webhook/exemptions.py).
Every message says what, why it matters and the fix.
"""

from webhook.engine import ids
from webhook.engine.rules import (
    anti_affinity_disabled,
    exclusive_hostname,
    exemption_unauthorized,
    foreign_team_toleration,
    health_taint_toleration,
    node_local_checkpoint,
    node_name_taint,
    preemption_disabled,
    self_colocation,
    single_node_pinning,
    singleton_role,
    team_label_claim,
    unschedulable_spread,
    weak_spread,
    wildcard_toleration,
)

RULES = {
    m.ID: m
    for m in (
        single_node_pinning,
        self_colocation,
        team_label_claim,
        foreign_team_toleration,
        wildcard_toleration,
        health_taint_toleration,
        node_name_taint,
        unschedulable_spread,
        singleton_role,
        node_local_checkpoint,
        preemption_disabled,
        exclusive_hostname,
        weak_spread,
    )
}
EXEMPTION_RULES = {m.ID: m for m in (anti_affinity_disabled, exemption_unauthorized)}
assert tuple(RULES) == ids.TEMPLATE_RULE_IDS, "update engine/ids.py"
assert tuple(EXEMPTION_RULES) == ids.EXEMPTION_RULE_IDS, "update engine/ids.py"
RULE_IDS = ids.RULE_IDS
