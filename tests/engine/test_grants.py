"""Exemption grants (webhook/engine/grants.py): a grant verifies for exactly the workload and ids it was
signed for, under the key that signed it; malformed or oversized input verifies for nothing, cheaply."""

from __future__ import annotations

import pytest

from webhook.engine import grants

KEY = b"k" * 32
BOUND = ("ml", "batch", "Job", "burn-in", frozenset({"wildcard-toleration"}))


def test_a_grant_verifies_for_what_it_was_signed_for() -> None:
    grant = grants.sign(KEY, *BOUND)
    assert grant.startswith("v1:") and len(grant) <= grants.MAX_GRANT_CHARS
    assert grants.verify(KEY, grant, *BOUND)
    assert grants.verify(KEY, f"v1:other {grant}", *BOUND)  # one of a list


@pytest.mark.parametrize(
    "other",
    [
        ("other", "batch", "Job", "burn-in", frozenset({"wildcard-toleration"})),  # namespace
        ("ml", "batch.volcano.sh", "Job", "burn-in", frozenset({"wildcard-toleration"})),  # API group
        ("ml", "batch", "CronJob", "burn-in", frozenset({"wildcard-toleration"})),  # kind
        ("ml", "batch", "Job", "burn-in-2", frozenset({"wildcard-toleration"})),  # name
        ("ml", "batch", "Job", "burn-in", frozenset({"wildcard-toleration", "anti-affinity"})),  # more ids
        ("ml", "batch", "Job", "", frozenset({"wildcard-toleration"})),  # no name: never
    ],
    ids=["namespace", "group", "kind", "name", "ids", "no-name"],
)
def test_a_grant_verifies_for_nothing_else(other: tuple) -> None:
    assert not grants.verify(KEY, grants.sign(KEY, *BOUND), *other)


@pytest.mark.parametrize(
    "value",
    [None, 7, "", "v1:", "v1:" + "A" * 43 + "x", " ".join(["v1:x"] * 4) + " " + "junk" * 100, "v1:x " * 10_000],
    ids=["none", "int", "empty", "short", "long", "too-long-list", "huge"],
)
def test_malformed_grants_verify_for_nothing(value: object) -> None:
    assert not grants.verify(KEY, value, *BOUND)
    assert len(grants.split(value)) <= grants.MAX_GRANTS


def test_other_key_or_no_key_verifies_nothing() -> None:
    grant = grants.sign(KEY, *BOUND)
    assert not grants.verify(b"j" * 32, grant, *BOUND)
    assert not grants.verify(None, grant, *BOUND)


def test_add_keeps_the_first_grants_and_is_idempotent() -> None:
    owner = grants.sign(KEY, "ml", "batch", "CronJob", "nightly", frozenset({"wildcard-toleration"}))
    own = grants.sign(KEY, "ml", "batch", "Job", "nightly-1", frozenset({"wildcard-toleration"}))
    value = grants.add(owner, own)
    assert value == f"{owner} {own}" and grants.add(value, own) == value
    full = grants.add(" ".join(f"v1:{i}" for i in range(6)), own)
    assert full.split() == ["v1:0", "v1:1", "v1:2", own]


def test_the_grant_annotation_passes_the_api_servers_annotation_validation() -> None:
    """apimachinery ValidateAnnotations: keys are qualified names (optional DNS-1123 subdomain prefix of at most
    253 characters, "/", a name of at most 63 characters of [A-Za-z0-9-_.] beginning and ending alphanumeric);
    all annotations of an object together at most 256 KiB (the grant list is bounded far below)."""
    import re

    prefix, _, name = grants.GRANT.partition("/")
    assert len(prefix) <= 253 and re.fullmatch(
        r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", prefix
    )
    assert len(name) <= 63 and re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", name)
    full = " ".join(grants.sign(KEY, "ml", "batch", "Job", f"j{i}", BOUND[4]) for i in range(grants.MAX_GRANTS))
    assert grants.split(full) == full.split() and len(full) < 256 * 1024
