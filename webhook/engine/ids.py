"""Every stable id in one place: rules and mutators. Policies, exemptions, metrics and docs name them.

The registries (``rules.RULES``, ``mutators.MUTATORS``) check at import that each module's ``ID`` is
listed here, so this module needs to import nothing and the policy model does not import the rules.
"""

from __future__ import annotations

# validation rules, run on every pod template of a matching object
TEMPLATE_RULE_IDS = (
    "single-node-pinning",
    "self-colocation",
    "team-label-claim",
    "foreign-team-toleration",
    "wildcard-toleration",
    "health-taint-toleration",
    "node-name-taint",
    "unschedulable-spread",
    "singleton-role",
    "node-local-checkpoint",
    "preemption-disabled",
    "exclusive-hostname",
    "weak-spread",
)
# rules that judge the spreadguard.io/exempt annotation itself
EXEMPTION_RULE_IDS = ("anti-affinity-disabled", "exemption-unauthorized")
# team isolation: judged on every pod of a governed namespace whatever it requests, on toleration changes
# of existing pods, and (where CEL can express them) by the ValidatingAdmissionPolicy backstop
ISOLATION_RULE_IDS = (
    "team-label-claim",
    "foreign-team-toleration",
    "wildcard-toleration",
    "health-taint-toleration",
    "node-name-taint",
)
RULE_IDS = sorted([*TEMPLATE_RULE_IDS, *EXEMPTION_RULE_IDS])

# injectors, in the order they run
MUTATOR_IDS = [
    "group-label",
    "exemption-inheritance",
    "team-tolerations",
    "health-avoidance",
    "anti-affinity",
    "topology-spread",
    "gang-affinity",
    "job-failure-policy",
]
