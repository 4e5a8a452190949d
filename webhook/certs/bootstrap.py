"""``spreadguard certs bootstrap``: the webhook's CA and serving certificate kept in a Secret, and the CA kept in
the ``caBundle`` of its webhook configurations. Runs in the init container of every spreadguard pod and in a daily
CronJob (``manifests/base``); safe to run any number of times, from several pods at once.

1. Read the Secret (``kubernetes.io/tls``: ``ca.crt``, ``ca.key``, ``tls.crt``, ``tls.key``; ``ca.key`` stays in
   the Secret so that a renewal keeps the CA, and with it every ``caBundle``).
2. Keep its certificate while it covers the Service's DNS names, is signed by the CA and stays valid for longer
   than ``renew_before``; otherwise renew it from the same CA, or make a new CA when the old one is unusable.
   Certificates are made by ``webhook.certs.ensure_certs`` in a temporary directory.
3. Create or update the Secret. A 409 (another pod created or renewed it first) re-reads it and starts over,
   which normally keeps theirs.
4. Set ``caBundle`` on every webhook of each named Mutating/ValidatingWebhookConfiguration where it differs: a
   strategic merge patch by webhook name that carries the ``resourceVersion`` (409: re-read, start over). A kind
   with no configuration of that name (404) is skipped: the base install has only the MutatingWebhookConfiguration,
   the two-hook install (``manifests/overlays/two-hooks``) both, under the same name and command line. A name
   found under neither kind is an error; so is a 403 on either (never read as "not installed": a configuration
   left without its caBundle fails every call, and fails open).

Nothing is written when nothing changed. When a new CA replaces one that has not expired yet, the bundle
(``ca.crt`` and ``caBundle``) keeps the old CA after the new one until it expires, so servers still presenting
a certificate of the old CA stay trusted while the kubelet brings them the new one.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from webhook.certs import files as certs
from webhook.kube import client as kube

SECRET_TYPE = "kubernetes.io/tls"
CA_CERT, CA_KEY, TLS_CERT, TLS_KEY = certs.CA_CERT, certs.CA_KEY, certs.TLS_CERT, certs.TLS_KEY
FIELD_MANAGER = "spreadguard-bootstrap"
NOT_AFTER_ANNOTATION = "spreadguard.io/not-after"
DEFAULT_DAYS = 365
DEFAULT_RENEW_BEFORE_DAYS = 30
ATTEMPTS = 5  # read-decide-write rounds before giving up on conflicts
REQUEST_TIMEOUT = (5, 20)  # seconds: connect, read
MUTATING = "MutatingWebhookConfiguration"
VALIDATING = "ValidatingWebhookConfiguration"
_RESOURCES = {
    MUTATING: "mutatingwebhookconfigurations.admissionregistration.k8s.io",
    VALIDATING: "validatingwebhookconfigurations.admissionregistration.k8s.io",
}


class BootstrapError(Exception):
    """One line for stderr, and the exit code: 2 for bad arguments, no cluster configuration or a
    forbidden request; 1 when the API server cannot be reached or the work cannot be finished."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class _Conflict(Exception):
    """409 from the API server: someone else wrote first. Re-read and decide again."""


@dataclass
class BootstrapResult:
    """What one run did.

    ``secret_action``: ``created``, ``kept``, ``renewed`` (new serving certificate, same CA) or ``replaced``
    (new CA). ``raced``: a write lost to another writer at least once (their Secret was then used).
    ``webhooks``: one ``(kind, name, "patched"|"unchanged")`` per configuration found.
    """

    secret_action: str
    not_after: dt.datetime
    ca_bundle: bytes
    webhooks: list[tuple[str, str, str]] = field(default_factory=list)
    raced: bool = False
    out: Path | None = None


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server and in-cluster clients may use for the Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


# --- the Kubernetes API ---------------------------------------------------------------------------------------------


def api_client(kubeconfig: str | None = None) -> Any:
    """A ``kubernetes`` ApiClient from the source ``webhook.kube.client.load`` picks (its one precedence rule:
    ``--kubeconfig``, else in-cluster, else ``$KUBECONFIG``, else ``~/.kube/config``); exit code 2 when none."""
    try:
        connection = kube.load(kubeconfig)
    except kube.ConfigError as exc:
        raise BootstrapError(str(exc), 2) from None
    if connection is None:
        raise BootstrapError(kube.NO_CLUSTER, 2)
    return connection.api


class Kube:
    """The few API calls bootstrap makes, as plain dicts, with API errors turned into one-line messages."""

    def __init__(self, client_: Any):
        from kubernetes import client

        self._client = client_
        self._core = client.CoreV1Api(client_)
        self._admission = client.AdmissionregistrationV1Api(client_)
        self.host = getattr(client_.configuration, "host", "?")

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call("get", "secrets", name, namespace, self._core.read_namespaced_secret, name, namespace)

    def create_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call(
            "create",
            "secrets",
            name,
            namespace,
            self._core.create_namespaced_secret,
            namespace,
            body,
            field_manager=FIELD_MANAGER,
        )

    def replace_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return self._call(
            "update",
            "secrets",
            name,
            namespace,
            self._core.replace_namespaced_secret,
            name,
            namespace,
            body,
            field_manager=FIELD_MANAGER,
        )

    def get_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None:
        read = (
            self._admission.read_mutating_webhook_configuration
            if kind == MUTATING
            else self._admission.read_validating_webhook_configuration
        )
        return self._call("get", _RESOURCES[kind], name, None, read, name)

    def patch_webhook_configuration(self, kind: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        update = (
            self._admission.patch_mutating_webhook_configuration
            if kind == MUTATING
            else self._admission.patch_validating_webhook_configuration
        )
        return self._call(
            "patch",
            _RESOURCES[kind],
            name,
            None,
            update,
            name,
            patch,
            field_manager=FIELD_MANAGER,
            _content_type="application/strategic-merge-patch+json",
        )

    def _call(
        self, verb: str, resource: str, name: str, namespace: str | None, method: Callable, *args: Any, **kwargs: Any
    ) -> Any:
        """Call ``method`` and return the response body as a dict; ``None`` for a 404 on ``get``."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        where = f" in namespace {namespace}" if namespace else ""
        try:
            return kube.call_json(method, REQUEST_TIMEOUT, *args, **kwargs)
        except ApiException as exc:
            status = exc.status or 0
            detail = kube.status_message(exc) or exc.reason or ""
            if status == 404 and verb == "get":
                return None
            if status == 409:
                raise _Conflict(detail) from None
            if status == 403:
                raise BootstrapError(
                    f"forbidden: cannot {verb} {resource} {name!r}{where}: {detail} "
                    "(the service account needs the permissions in manifests/base/rbac.yaml)",
                    2,
                ) from None
            code = 1 if kube.is_transport(exc) else 2 if status == 401 else 1
            raise BootstrapError(kube.describe(exc, self.host, f"{verb} {resource} {name!r}{where}"), code) from None
        except (HTTPError, OSError) as exc:
            raise BootstrapError(kube.describe(exc, self.host)) from None
        except ValueError as exc:  # a body that is not JSON
            raise BootstrapError(
                f"{verb} {resource} {name!r}{where}: unreadable answer: {kube.one_line(exc)}"
            ) from None


# --- deciding what the Secret holds -------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the Secret should hold, and whether that means writing it."""

    action: str  # created | kept | renewed | replaced
    data: dict[str, bytes]  # ca.crt (the bundle), ca.key, tls.crt, tls.key
    not_after: dt.datetime
    write: bool


def _pem_certs(data: bytes | None) -> list[x509.Certificate]:
    if not data:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        return []


_FINGERPRINT = hashes.SHA256()


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def plan(
    existing: dict[str, bytes] | None,
    dns: Sequence[str],
    days: int,
    renew_before: dt.timedelta,
    now: dt.datetime | None = None,
) -> Plan:
    """What the Secret should hold, given what it holds (``None``: no Secret). Pure apart from a temporary dir."""
    now = now or dt.datetime.now(dt.UTC)
    existing = existing or {}
    cas = _pem_certs(existing.get(CA_CERT))
    with tempfile.TemporaryDirectory(prefix="spreadguard-bootstrap-") as tmp:
        out = Path(tmp)
        # what the Secret has, as files for ensure_certs: the signing CA (first of the bundle), its key, the pair
        if cas:
            (out / CA_CERT).write_bytes(_pem(cas[0]))
        for name in (CA_KEY, TLS_CERT, TLS_KEY):
            if existing.get(name):
                (out / name).write_bytes(existing[name])
        try:
            result = certs.ensure_certs(out, dns=dns, days=days)
            if result.action == "kept" and result.not_after - now <= renew_before:
                # valid for certs.py (30 days) but not for --renew-before: a new pair from the same CA
                (out / TLS_CERT).unlink()
                (out / TLS_KEY).unlink()
                result = certs.ensure_certs(out, dns=dns, days=days)
        except certs.CertError as exc:
            raise BootstrapError(str(exc), 2) from None
        files = {n: (out / n).read_bytes() for n in (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY) if (out / n).exists()}

    action = result.action
    primary = x509.load_pem_x509_certificate(files[CA_CERT])
    # earlier CAs stay trusted until they expire: the first one replaced now, and any kept from before
    previous = cas if action == "replaced" else cas[1:]
    seen = {primary.fingerprint(_FINGERPRINT)}
    keep: list[x509.Certificate] = []
    for ca in previous:
        fp = ca.fingerprint(_FINGERPRINT)
        if fp not in seen and ca.not_valid_after_utc > now:
            seen.add(fp)
            keep.append(ca)
    if action == "kept" and keep == cas[1:]:  # x509.Certificate compares by content
        # nothing to change: keep the Secret's bytes exactly as they are
        kept = {k: existing[k] for k in (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY) if k in existing}
        return Plan("kept", kept, result.not_after, False)
    files[CA_CERT] = b"".join([files[CA_CERT], *(_pem(c) for c in keep)])
    return Plan(action, files, result.not_after, True)


def _secret_data(secret: dict[str, Any] | None) -> dict[str, bytes] | None:
    if secret is None:
        return None
    data = secret.get("data") or {}
    out: dict[str, bytes] = {}
    for key in (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY):
        if data.get(key):
            try:
                out[key] = base64.b64decode(data[key], validate=True)
            except (ValueError, TypeError):
                pass  # unreadable: treated as missing, so it is replaced
    return out


def _secret_body(namespace: str, name: str, plan_: Plan, existing: dict[str, Any] | None) -> dict[str, Any]:
    """The Secret to create, or ``existing`` with the new data (everything else it carries is kept)."""
    if existing is not None:
        body = copy.deepcopy(existing)
        body.setdefault("type", SECRET_TYPE)  # immutable: keep whatever it was created with
        body["metadata"].pop("managedFields", None)
    else:
        body = {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE, "metadata": {}}
    meta = body["metadata"]
    meta["name"], meta["namespace"] = name, namespace
    meta["labels"] = {
        **(meta.get("labels") or {}),
        "app.kubernetes.io/name": "spreadguard",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
    }
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        NOT_AFTER_ANNOTATION: plan_.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    data = dict(body.get("data") or {})  # keys someone else added stay
    data.update({k: base64.b64encode(v).decode("ascii") for k, v in plan_.data.items()})
    body["data"] = data
    return body


# --- the run --------------------------------------------------------------------------------------------------------


def ensure_secret(
    kube: Kube, namespace: str, name: str, dns: Sequence[str], days: int, renew_before: dt.timedelta
) -> tuple[Plan, bool]:
    """Read, decide, write; on a 409 start over. Returns the plan in force and whether a write lost a race."""
    raced = False
    for _attempt in range(ATTEMPTS):
        secret = kube.get_secret(namespace, name)
        plan_ = plan(_secret_data(secret), dns, days, renew_before)
        if not plan_.write:
            return plan_, raced
        body = _secret_body(namespace, name, plan_, secret)
        try:
            if secret is None:
                kube.create_secret(namespace, body)
            else:
                kube.replace_secret(namespace, body)
            return plan_, raced
        except _Conflict:
            raced = True  # another pod created or renewed it first: use theirs (next round reads it)
    raise BootstrapError(f"Secret {namespace}/{name} kept changing under us ({ATTEMPTS} conflicts in a row)")


def ensure_ca_bundle(kube: Kube, names: Sequence[str], bundle: bytes) -> list[tuple[str, str, str]]:
    """Set ``caBundle`` on every webhook of the named configurations (each kind that exists) where it differs."""
    wanted = base64.b64encode(bundle).decode("ascii")
    done: list[tuple[str, str, str]] = []
    for name in names:
        found = False
        for kind in (MUTATING, VALIDATING):
            outcome = _patch_one(kube, kind, name, wanted)
            if outcome is not None:
                found = True
                done.append((kind, name, outcome))
        if not found:
            raise BootstrapError(
                f"no {MUTATING} or {VALIDATING} named {name!r} (apply the manifests first: kubectl apply -k manifests/)"
            )
    return done


def _patch_one(kube: Kube, kind: str, name: str, wanted: str) -> str | None:
    for _attempt in range(ATTEMPTS):
        obj = kube.get_webhook_configuration(kind, name)
        if obj is None:
            return None
        stale = [
            w["name"]
            for w in obj.get("webhooks") or []
            if isinstance(w, dict) and (w.get("clientConfig") or {}).get("caBundle") != wanted
        ]
        if not stale:
            return "unchanged"
        patch = {
            "metadata": {"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion")},
            "webhooks": [{"name": n, "clientConfig": {"caBundle": wanted}} for n in stale],
        }
        try:
            kube.patch_webhook_configuration(kind, name, patch)
            return "patched"
        except _Conflict:
            continue
    raise BootstrapError(f"{kind} {name} kept changing under us ({ATTEMPTS} conflicts in a row)")


def write_files(out: str | Path, data: dict[str, bytes]) -> Path:
    """Write ``ca.crt``, ``tls.crt`` and ``tls.key`` (0600) into ``out`` atomically, key before certificate."""
    directory = Path(out)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, secret in ((CA_CERT, False), (TLS_KEY, True), (TLS_CERT, False)):
            tmp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data[name])
            os.replace(tmp, directory / name)
    except OSError as exc:
        raise BootstrapError(f"--out {directory}: {exc.strerror or exc}", 2) from None
    return directory


def bootstrap(
    namespace: str,
    service: str,
    secret: str,
    webhooks: Sequence[str],
    out: str | Path | None = None,
    days: int = DEFAULT_DAYS,
    renew_before_days: float = DEFAULT_RENEW_BEFORE_DAYS,
    kubeconfig: str | None = None,
    kube: Kube | None = None,
) -> BootstrapResult:
    """Make sure the Secret holds a good certificate and every named webhook configuration trusts its CA."""
    if not 0 <= renew_before_days < days:
        raise BootstrapError(
            f"--renew-before {renew_before_days:g} must be at least 0 and less than --days {days} "
            "(or every run would renew)",
            2,
        )
    if not webhooks:
        raise BootstrapError("give at least one --webhook NAME", 2)
    kube = kube or Kube(api_client(kubeconfig))
    plan_, raced = ensure_secret(
        kube, namespace, secret, service_dns_names(service, namespace), days, dt.timedelta(days=renew_before_days)
    )
    done = ensure_ca_bundle(kube, webhooks, plan_.data[CA_CERT])
    result = BootstrapResult(plan_.action, plan_.not_after, plan_.data[CA_CERT], done, raced)
    if out is not None:
        result.out = write_files(out, plan_.data)
    return result


def run(args: Any) -> int:
    """The CLI command: one summary line on stderr; exit code 0, or that of the ``BootstrapError``."""
    try:
        result = bootstrap(
            namespace=args.namespace,
            service=args.service,
            secret=args.secret,
            webhooks=args.webhook,
            out=args.out,
            days=args.days,
            renew_before_days=args.renew_before,
            kubeconfig=args.kubeconfig,
        )
    except BootstrapError as exc:
        print(f"spreadguard certs bootstrap: error: {exc}", file=sys.stderr)
        return exc.code
    action = result.secret_action + (" (another pod wrote it first)" if result.raced else "")
    hooks = ", ".join(f"{kind} {name} {what}" for kind, name, what in result.webhooks)
    where = f"; files in {result.out}" if result.out else ""
    print(
        f"Secret {args.namespace}/{args.secret}: {action}, serving certificate valid until "
        f"{result.not_after:%Y-%m-%d %H:%M} UTC; caBundle: {hooks}{where}",
        file=sys.stderr,
    )
    return 0
