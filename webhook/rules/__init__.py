"""Validation rules by stable id. Each module has ``ID``, ``DEFAULT_ACTION`` ("deny" or "warn")
and ``check(target) -> list[Finding]``; the message says what, why it matters and the fix."""

from webhook.rules import foreign_team_toleration, self_colocation, single_node_pinning, wildcard_toleration

RULES = {m.ID: m for m in (single_node_pinning, self_colocation, foreign_team_toleration, wildcard_toleration)}
