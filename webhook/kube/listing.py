"""Listing what spreadguard audits from a live cluster, through the ``kubernetes`` client.

Read-only (discovery and ``list``), page by page (``limit``/``continue``): a page is parsed, its objects
are yielded one by one and dropped, so a cluster of 100,000 pods is never held in memory. Kinds are
listed owners first (a Deployment before its ReplicaSets before their Pods) so that the audit can skip
the children of workloads it already judged. Training CRDs the cluster does not serve are skipped with
a note; a resource that cannot be listed (403) is reported and the scan goes on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webhook.engine import workloads

DEFAULT_CHUNK = 500
TIMEOUT = (10, 120)  # connect, read (seconds)
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True)
class ApiKind:
    """How to list one kind: its REST plural and the versions spreadguard knows (preferred first)."""

    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]

    @property
    def resource(self) -> str:
        """``pods``, ``deployments.apps``, ``pytorchjobs.kubeflow.org``: what RBAC and kubectl call it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


# Listing order: PodDisruptionBudgets first (few; then the audit needs no index of what they select),
# then owners before what they own (TrainJob > JobSet > Job > Pod, RayJob > RayCluster,
# LeaderWorkerSet > StatefulSet, Deployment > ReplicaSet, CronJob > Job).
CATALOG: tuple[ApiKind, ...] = (
    ApiKind("policy", "PodDisruptionBudget", "poddisruptionbudgets", ("v1",)),
    ApiKind("trainer.kubeflow.org", "TrainJob", "trainjobs", ("v1alpha1",)),
    ApiKind("jobset.x-k8s.io", "JobSet", "jobsets", ("v1alpha2",)),
    ApiKind("leaderworkerset.x-k8s.io", "LeaderWorkerSet", "leaderworkersets", ("v1",)),
    ApiKind("ray.io", "RayJob", "rayjobs", ("v1", "v1alpha1")),
    ApiKind("ray.io", "RayCluster", "rayclusters", ("v1", "v1alpha1")),
    ApiKind("kubeflow.org", "PyTorchJob", "pytorchjobs", ("v1",)),
    ApiKind("kubeflow.org", "TFJob", "tfjobs", ("v1",)),
    ApiKind("kubeflow.org", "MPIJob", "mpijobs", ("v2beta1", "v1")),
    ApiKind("kubeflow.org", "XGBoostJob", "xgboostjobs", ("v1",)),
    ApiKind("batch.volcano.sh", "Job", "jobs", ("v1alpha1",)),
    ApiKind("apps", "Deployment", "deployments", ("v1",)),
    ApiKind("apps", "StatefulSet", "statefulsets", ("v1",)),
    ApiKind("batch", "CronJob", "cronjobs", ("v1",)),
    ApiKind("batch", "Job", "jobs", ("v1",)),
    ApiKind("apps", "ReplicaSet", "replicasets", ("v1",)),
    ApiKind("", "Pod", "pods", ("v1",)),
)
BUILTIN_GROUPS = ("", "apps", "batch", "policy")  # always served; listed through the typed APIs
_SNAKE = {
    "Pod": "pod",
    "Deployment": "deployment",
    "StatefulSet": "stateful_set",
    "ReplicaSet": "replica_set",
    "Job": "job",
    "CronJob": "cron_job",
    "PodDisruptionBudget": "pod_disruption_budget",
}


def unlisted_kinds() -> list[str]:
    """Kinds of ``workloads.KINDS`` with no CATALOG entry (a new kind needs one to be audited live)."""
    listed = {(k.group, k.kind) for k in CATALOG}
    return [f"{kind} ({group or 'core'})" for group, kind in workloads.KINDS if (group, kind) not in listed]


class ClusterError(Exception):
    """A problem that stops the scan, said in one line."""


@dataclass
class Session:
    api: Any  # kubernetes.client.ApiClient
    host: str
    namespace: str  # the context's namespace (used without -n / -A)
    context: str


def _context_namespace(
    contexts: list[dict[str, Any]], name: str | None, active: dict[str, Any] | None
) -> tuple[str, str]:
    chosen = next((c for c in contexts if c.get("name") == name), None) if name else active
    ctx = (chosen or {}).get("context") or {}
    return (chosen or {}).get("name", ""), ctx.get("namespace") or "default"


def connect(kubeconfig: str | None = None, context: str | None = None) -> Session:
    """An API client from a kubeconfig (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``), or the
    in-cluster service account when neither flag is given and ``KUBERNETES_SERVICE_HOST`` is set."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException as exc:
            raise ClusterError(f"in-cluster configuration: {exc}") from None
        ns = SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.is_file() else "default"
        return Session(client.ApiClient(cfg), cfg.host, ns, "in-cluster")
    path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    files = [Path(p).expanduser() for p in path.split(os.pathsep) if p]
    if not any(f.is_file() for f in files):
        raise ClusterError(f"no kubeconfig at {path} (and not running in a pod): pass --kubeconfig or set KUBECONFIG")
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
        names = [c.get("name") for c in contexts or []]
        if context is not None and context not in names:
            raise ClusterError(f"context {context!r} not found in {path} (contexts: {', '.join(names) or 'none'})")
        name, namespace = _context_namespace(contexts or [], context, active)
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg, persist_config=False)
    except config.ConfigException as exc:
        raise ClusterError(f"kubeconfig {path}: {' '.join(str(exc).split())}") from None
    return Session(client.ApiClient(cfg), cfg.host, namespace, name)


def _status_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason or "")


@dataclass
class Scan:
    """One read-only pass over a cluster: ``discover()``, then ``namespaces()`` and ``objects()``.

    ``namespace`` None lists every namespace. Problems that end the scan raise ``ClusterError``; ones
    that only lose a resource (403, an expired continue token) go to ``errors`` (and ``on_error``).
    """

    session: Session
    namespace: str | None
    chunk_size: int = DEFAULT_CHUNK
    on_error: Callable[[str], None] | None = None
    on_page: Callable[[ApiKind, int], None] | None = None  # after each page: kind, objects so far
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    requests: int = 0
    _served: list[tuple[ApiKind, str]] = field(default_factory=list)

    # ----------------------------------------------------------------- plumbing

    def _where(self) -> str:
        return f"in namespace {self.namespace}" if self.namespace else "at cluster scope (all namespaces)"

    def _get(self, call: Callable[..., Any], what: str, **kw: Any) -> dict[str, Any]:
        """One GET through the client, parsed as JSON; connection problems raise ClusterError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        self.requests += 1
        try:
            resp = call(_preload_content=False, _request_timeout=TIMEOUT, **kw)
            try:
                data = resp.data
            finally:
                resp.release_conn()
        except ApiException as exc:
            if exc.status == 0:  # TLS and transport errors are wrapped with status 0
                raise ClusterError(f"cannot reach the API server at {self.session.host}: {exc.reason}") from None
            if exc.status == 401:
                raise ClusterError(
                    f"unauthorized: the API server at {self.session.host} rejected the credentials "
                    f"of context {self.session.context!r} ({_status_message(exc)})"
                ) from None
            raise
        except HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ClusterError(
                f"cannot reach the API server at {self.session.host} ({what}): {' '.join(str(reason).split())}"
            ) from None
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise ClusterError(f"{what}: the API server answered with something that is not JSON: {exc}") from None
        return body if isinstance(body, dict) else {}

    # ---------------------------------------------------------------- discovery

    def discover(self) -> list[tuple[ApiKind, str]]:
        """Which kinds (and at which version) the cluster serves; the others get a note."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            self._get(client.CoreApi(self.session.api).get_api_versions, "GET /api")
            groups = self._get(client.ApisApi(self.session.api).get_api_versions, "GET /apis").get("groups") or []
        except ApiException as exc:
            raise ClusterError(f"API discovery failed: HTTP {exc.status} {_status_message(exc)}") from None
        served = {g.get("name"): g for g in groups if isinstance(g, dict)}
        custom = client.CustomObjectsApi(self.session.api)
        resources: dict[str, set[str] | None] = {}
        self._served = []
        for ak in CATALOG:
            if ak.group in BUILTIN_GROUPS:
                self._served.append((ak, ak.versions[0]))
                continue
            version = self._served_version(ak, served.get(ak.group), custom, resources)
            if version:
                self._served.append((ak, version))
            else:
                self.notes.append(f"{ak.kind} ({ak.resource}) is not served by this cluster: skipped")
        return list(self._served)

    def _served_version(
        self, ak: ApiKind, group: dict[str, Any] | None, custom: Any, cache: dict[str, Any]
    ) -> str | None:
        from kubernetes.client.exceptions import ApiException

        if not group:
            return None
        offered = [v.get("version") for v in group.get("versions") or [] if isinstance(v, dict)]
        preferred = (group.get("preferredVersion") or {}).get("version")
        candidates = [v for v in ak.versions if v in offered] + [v for v in [preferred, *offered] if v]
        for version in dict.fromkeys(candidates):
            key = f"{ak.group}/{version}"
            if key not in cache:
                try:
                    body = self._get(custom.get_api_resources, f"GET /apis/{key}", group=ak.group, version=version)
                    cache[key] = {r.get("name") for r in body.get("resources") or [] if isinstance(r, dict)}
                except ApiException as exc:  # 404: listed in /apis but not served (stale discovery, CRD gone)
                    cache[key] = None
                    if exc.status not in (404, 503):
                        self._error(f"discovery of {key}: HTTP {exc.status} {_status_message(exc)}")
            if cache[key] and ak.plural in cache[key]:
                return version
        return None

    # ------------------------------------------------------------------ listing

    def _error(self, message: str) -> None:
        self.errors.append(message)
        if self.on_error:
            self.on_error(message)

    def _lister(self, ak: ApiKind, version: str) -> Callable[..., Any]:
        from kubernetes import client

        ns = self.namespace
        if ak.group in BUILTIN_GROUPS:
            api_class = {
                "": client.CoreV1Api,
                "apps": client.AppsV1Api,
                "batch": client.BatchV1Api,
                "policy": client.PolicyV1Api,
            }[ak.group]
            api = api_class(self.session.api)
            snake = _SNAKE[ak.kind]
            if ns is None:
                return getattr(api, f"list_{snake}_for_all_namespaces")
            namespaced = getattr(api, f"list_namespaced_{snake}")
            return lambda **kw: namespaced(ns, **kw)
        custom = client.CustomObjectsApi(self.session.api)
        if ns is None:
            return lambda **kw: custom.list_cluster_custom_object(ak.group, version, ak.plural, **kw)
        return lambda **kw: custom.list_namespaced_custom_object(ak.group, version, ns, ak.plural, **kw)

    def _pages(self, ak: ApiKind, version: str) -> Iterator[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        call = self._lister(ak, version)
        api_version = f"{ak.group}/{version}" if ak.group else version
        token: str | None = None
        count = 0
        while True:
            kw: dict[str, Any] = {"limit": self.chunk_size}
            if token:
                kw["_continue"] = token
            try:
                page = self._get(call, f"list {ak.resource}", **kw)
            except ApiException as exc:
                self._error(self._list_error(ak, exc, count))
                return
            items = page.get("items") or []
            for item in items:
                if not isinstance(item, dict):
                    continue
                item.setdefault("apiVersion", api_version)  # list items usually omit them
                item.setdefault("kind", ak.kind)
                (item.get("metadata") or {}).pop("managedFields", None)  # large and irrelevant here
                count += 1
                yield item
            if self.on_page:
                self.on_page(ak, count)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def _list_error(self, ak: ApiKind, exc: Any, count: int) -> str:
        if exc.status == 403:
            return f"forbidden: cannot list {ak.resource} {self._where()}"
        if exc.status == 410:
            return (
                f"list {ak.resource} {self._where()}: the continue token expired after {count} objects "
                f"(410 Gone); the rest of them are not audited, re-run with a larger --chunk-size"
            )
        return f"cannot list {ak.resource} {self._where()}: HTTP {exc.status} {_status_message(exc)}"

    def namespaces(self) -> Iterator[dict[str, Any]]:
        """The Namespace objects in scope (their labels feed team tolerations); a note when not readable."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.session.api)
        try:
            if self.namespace is None:
                yield from (self._get(core.list_namespace, "list namespaces").get("items") or [])
            else:
                yield self._get(core.read_namespace, f"get namespace {self.namespace}", name=self.namespace)
        except ApiException as exc:
            verb = "list namespaces" if self.namespace is None else f"get namespace {self.namespace}"
            why = "forbidden" if exc.status == 403 else f"HTTP {exc.status}"
            self.notes.append(f"cannot {verb} ({why}): team tolerations from namespace labels are not applied")

    def objects(self) -> Iterator[dict[str, Any]]:
        """Every object of every served kind, owners first, page by page."""
        for ak, version in self._served or self.discover():
            yield from self._pages(ak, version)
