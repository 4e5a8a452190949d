"""The one way spreadguard reaches a cluster: configuration loading, API-error description, paging.

Used by the server's node/namespace cache (``informer``), the audit's cluster scan (``listing``) and the
certificate bootstrap (``webhook.certs.bootstrap``).

Where the configuration comes from, one rule for every caller, first match wins:

1. an explicit ``--kubeconfig FILE`` and/or ``--context NAME`` (a context alone: in the kubeconfig of step 3/4);
2. the pod's service account, when ``KUBERNETES_SERVICE_HOST`` is set (in-cluster);
3. ``$KUBECONFIG`` (one or more files, ``os.pathsep``-separated);
4. ``~/.kube/config``, unless the caller passes ``home=False`` (the server does: a local ``make serve``
   must not start watching whatever cluster the developer's current context names).

When the source chosen fails to load, ``ConfigError`` says why in one line; when there is no source at all,
``load`` returns None and the caller decides (``NO_CLUSTER`` is the sentence to say).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
HOME_KUBECONFIG = "~/.kube/config"
NO_CLUSTER = (
    "no cluster: not running in a pod (KUBERNETES_SERVICE_HOST is unset) and no kubeconfig "
    "(give --kubeconfig FILE or set KUBECONFIG)"
)
MAX_ERROR_CHARS = 240
_CONNECTION_PREFIX = re.compile(r"^(<[^>]*>|\w+\(host=[^)]*\)): ")


class ConfigError(Exception):
    """The configuration source that applies cannot be loaded (message: one line)."""

    def __init__(self, message: str, explicit: bool):
        super().__init__(message)
        self.explicit = explicit  # from --kubeconfig/--context (else from the environment)


@dataclass(frozen=True)
class Connection:
    """A configured ``kubernetes.client.ApiClient`` and where it came from."""

    api: Any  # kubernetes.client.ApiClient
    host: str
    namespace: str  # the context's namespace, or the service account's ("default" when none)
    context: str  # the context's name, or "in-cluster"
    source: str  # the kubeconfig path(s), or "in-cluster"


def one_line(value: object) -> str:
    return " ".join(str(value).split())


def load(
    kubeconfig: str | None = None, context: str | None = None, *, home: bool = True, retries: int | None = None
) -> Connection | None:
    """The connection the precedence rule above picks; None when there is no source at all. No network call."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if retries is not None:
        cfg.retries = retries
    explicit = kubeconfig is not None or context is not None
    if not explicit and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException as exc:
            raise ConfigError(f"in-cluster configuration: {one_line(exc)}", explicit=False) from None
        ns = SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.is_file() else "default"
        return Connection(client.ApiClient(cfg), str(cfg.host), ns or "default", "in-cluster", "in-cluster")
    path = kubeconfig or os.environ.get("KUBECONFIG") or (HOME_KUBECONFIG if home or explicit else None)
    if not path:
        return None
    files = [Path(p).expanduser() for p in path.split(os.pathsep) if p]
    if not any(f.is_file() for f in files):
        if explicit:
            raise ConfigError(f"no kubeconfig at {path}: no such file", explicit=True)
        if path == HOME_KUBECONFIG:
            return None  # the implicit default is simply not there
        raise ConfigError(f"{NO_CLUSTER}; KUBECONFIG={path}: no such file", explicit=False)
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
        names = [c.get("name") for c in contexts or []]
        if context is not None and context not in names:
            raise ConfigError(
                f"context {context!r} not found in {path} (contexts: {', '.join(map(str, names)) or 'none'})",
                explicit=True,
            )
        chosen = next((c for c in contexts or [] if c.get("name") == context), None) if context else active
        ctx = (chosen or {}).get("context") or {}
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg, persist_config=False)
    except (config.ConfigException, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"kubeconfig {path}: {one_line(exc)}", explicit=explicit) from None
    return Connection(
        client.ApiClient(cfg), str(cfg.host), ctx.get("namespace") or "default", (chosen or {}).get("name", ""), path
    )


# ------------------------------------------------------------------------------------------------- errors


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an ``ApiException`` (0: the client's wrapper of a transport/TLS error), else None."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def status_message(exc: BaseException) -> str:
    """The ``message`` of the ``metav1.Status`` the API server sent with an error ('' when there is none)."""
    body = getattr(exc, "body", None)
    if not body:
        return ""
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return one_line(body)[:300]
    return one_line(status.get("message") or "") if isinstance(status, dict) else ""


def is_transport(exc: BaseException) -> bool:
    """The request never got an HTTP answer: refused, reset, TLS, timeout."""
    from urllib3.exceptions import HTTPError

    return status_of(exc) == 0 or isinstance(exc, HTTPError | OSError)


def describe(exc: BaseException, host: str, what: str = "") -> str:
    """One line saying what went wrong with a call to the API server (``what``: the request, for context)."""
    status = status_of(exc)
    doing = f" ({what})" if what else ""
    if status:  # an HTTP answer (or a watch ERROR event)
        message = status_message(exc) or str(getattr(exc, "reason", "") or "")
        if status == 401:
            text = f"unauthorized: the API server at {host} rejected the credentials{doing}: {message}"
        else:
            text = f"{what + ': ' if what else ''}HTTP {status} {message}"
    elif is_transport(exc):
        reason = getattr(exc, "reason", None) or exc
        # "HTTPSConnection(host='h', port=1): Failed to establish ..." / "<...HTTPSConnection object at 0x..>: ..."
        detail = _CONNECTION_PREFIX.sub("", str(reason))
        text = f"cannot reach the API server at {host}{doing}: {detail or type(exc).__name__}"
    else:  # e.g. a malformed answer
        text = f"unexpected answer from the API server at {host}{doing}: {type(exc).__name__}: {exc}"
    text = one_line(text).rstrip(": ")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


# ------------------------------------------------------------------------------------------------ reading


def call_json(call: Callable[..., Any], timeout: Any, *args: Any, **kw: Any) -> Any:
    """One request through a generated client method, its body parsed as JSON (no model objects: cheaper,
    and the audit and the engine read plain dicts). Errors are the client's: ``ApiException``, urllib3's."""
    resp = call(*args, _preload_content=False, _request_timeout=timeout, **kw)
    try:
        data = resp.data
    finally:
        resp.release_conn()
    return json.loads(data)


def pages(call: Callable[..., Any], limit: int, timeout: Any, **kw: Any) -> Iterator[dict[str, Any]]:
    """A list, page by page (``limit``/``continue``): each page as parsed JSON, the next fetched only when the
    caller asks for it, so at most one page is held. A ``410 Gone`` (the continue token expired) raises."""
    token: str | None = None
    while True:
        args = dict(kw, limit=limit)
        if token:
            args["_continue"] = token
        page = call_json(call, timeout, **args)
        if not isinstance(page, dict):
            raise ValueError(f"a list answer that is not an object: {type(page).__name__}")
        yield page
        token = (page.get("metadata") or {}).get("continue") or None
        if not token:
            return
