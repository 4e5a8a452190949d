"""exemption-unauthorized: an exemption from a rule (other than spreading) by someone the policy does
not allow to grant it, or without the required reason."""

ID = "exemption-unauthorized"
DEFAULT_ACTION = "deny"


def applies(ids: set[str]) -> bool:
    from webhook.engine.rules.anti_affinity_disabled import SPREADING

    return bool(ids - SPREADING)
