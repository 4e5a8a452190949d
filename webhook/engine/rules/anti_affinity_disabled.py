"""anti-affinity-disabled: an opt-out of spreading (``spreadguard.io/exempt: anti-affinity`` or
``topology-spread``) by someone the policy does not allow to grant it."""

ID = "anti-affinity-disabled"
DEFAULT_ACTION = "deny"
SPREADING = frozenset({"anti-affinity", "topology-spread"})


def applies(ids: set[str]) -> bool:
    return bool(ids & SPREADING)
