"""Signed exemption grants: proof, carried by a pod template and the pods made from it, that an
authorised user's exemption was approved for one workload (docs/threat-model.md).

When spreadguard admits a workload whose ``spreadguard.io/exempt`` an authorised user applied, it writes
``spreadguard.io/exempt-grant`` into the workload's pod templates: an HMAC-SHA256, keyed by a secret only
spreadguard reads, over the namespace, the workload's API group and kind, its name and the exempted ids.
A pod (or a child workload: the ReplicaSet of a Deployment, the Job of a CronJob) is exempt only when the
grant it carries verifies for its actual controller owner. Copying the annotations to another workload,
another namespace, another set of ids, or onto a pod of a kind spreadguard never admitted proves nothing.

The key reaches the engine as data (``Context.grant_key``); the engine never reads files. Without a key
(offline, or no Secret mounted) no grant is written or accepted: nothing is inherited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

GRANT = "spreadguard.io/exempt-grant"
VERSION = "v1"
MIN_KEY_BYTES = 32
MAX_GRANT_CHARS = 64  # "v1:" + 43 base64url characters; anything longer is not a grant (bounded work)
MAX_GRANTS = 4  # grants in one annotation, space-separated: a child keeps its owner's and adds its own


def _message(namespace: str, group: str, kind: str, name: str, ids: frozenset[str]) -> bytes:
    fields = (f"{GRANT}/{VERSION}", namespace, f"{group}/{kind}", name, ",".join(sorted(ids)))
    return "\n".join(fields).encode()


def sign(key: bytes, namespace: str, group: str, kind: str, name: str, ids: frozenset[str]) -> str:
    """The grant for exempting ``ids`` on workload ``group/kind`` ``namespace/name``."""
    mac = hmac.new(key, _message(namespace, group, kind, name, ids), hashlib.sha256).digest()
    return f"{VERSION}:{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def split(value: object) -> list[str]:
    """The grants of an annotation value (space-separated); at most ``MAX_GRANTS``, each at most
    ``MAX_GRANT_CHARS`` long, or none (bounded work whatever the input)."""
    if not isinstance(value, str) or len(value) > MAX_GRANTS * (MAX_GRANT_CHARS + 1):
        return []
    return [g for g in value.split()[:MAX_GRANTS] if len(g) <= MAX_GRANT_CHARS]


def verify(
    key: bytes | None, value: object, namespace: str, group: str, kind: str, name: str, ids: frozenset[str]
) -> bool:
    """Whether one grant of the annotation ``value`` was signed with ``key`` for exactly this workload and
    these ids."""
    if not key or not name:
        return False
    want = sign(key, namespace, group, kind, name, ids)
    return any(hmac.compare_digest(g, want) for g in split(value))


def add(value: object, grant: str) -> str:
    """The annotation value with ``grant`` added (kept: the first grants, e.g. the owner's the child was
    admitted with, so that a later look at the same object still verifies)."""
    existing = split(value)
    if grant in existing:
        return " ".join(existing)
    return " ".join([*existing[: MAX_GRANTS - 1], grant])


def api_group(api_version: object) -> str:
    """The API group of an ``apiVersion`` ("batch/v1" -> "batch", "v1" -> "")."""
    return api_version.split("/", 1)[0] if isinstance(api_version, str) and "/" in api_version else ""
