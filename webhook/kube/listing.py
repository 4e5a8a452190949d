"""Listing what spreadguard audits from a live cluster, through the ``kubernetes`` client.

Read-only (discovery and ``list``), page by page (``limit``/``continue``): a page is parsed, its objects
are yielded one by one and dropped, so a cluster of 100,000 pods is never held in memory. Kinds are
listed owners first (a Deployment before its ReplicaSets before their Pods) so that the audit can skip
the children of workloads it already judged. Training CRDs the cluster does not serve are skipped with
a note; a resource that cannot be listed (403) is reported and the scan goes on. ``nodes()`` lists the
Nodes, paged the same way, for the placement audit (where pods run). Configuration, error wording and
paging come from ``webhook.kube.client``; plurals and versions from ``webhook.engine.workloads``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from webhook.engine import workloads
from webhook.kube import client as kube

DEFAULT_CHUNK = 500
TIMEOUT = (10, 120)  # connect, read (seconds)


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


# PodDisruptionBudgets come first (few; then the audit needs no index of what they select), then every kind of
# the workload table, owners before what they own (``Kind.depth``: TrainJob > JobSet > Job > Pod, ...).
PDB = ApiKind("policy", "PodDisruptionBudget", "poddisruptionbudgets", ("v1",))
CATALOG: tuple[ApiKind, ...] = (
    PDB,
    *(
        ApiKind(k.group, k.kind, k.plural, k.versions)
        for k in sorted(workloads.KINDS.values(), key=lambda k: k.depth)
        if k.plural
    ),
)
BUILTIN_GROUPS = ("", "apps", "batch", "policy")  # always served; listed through the typed APIs
_SNAKE = {
    "Pod": "pod",
    "Deployment": "deployment",
    "StatefulSet": "stateful_set",
    "ReplicaSet": "replica_set",
    "DaemonSet": "daemon_set",
    "Job": "job",
    "CronJob": "cron_job",
    "PodDisruptionBudget": "pod_disruption_budget",
}


def unlisted_kinds() -> list[str]:
    """Kinds of ``workloads.KINDS`` without a REST plural (a new kind needs one to be audited live)."""
    listed = {(k.group, k.kind) for k in CATALOG}
    return [f"{kind} ({group or 'core'})" for group, kind in workloads.KINDS if (group, kind) not in listed]


class ClusterError(Exception):
    """A problem that stops the scan, said in one line."""


Session = kube.Connection  # what a scan runs against


def connect(kubeconfig: str | None = None, context: str | None = None) -> Session:
    """The connection ``webhook.kube.client.load`` picks (its precedence rule); ``ClusterError`` when none."""
    try:
        session = kube.load(kubeconfig, context)
    except kube.ConfigError as exc:
        raise ClusterError(str(exc)) from None
    if session is None:
        raise ClusterError(kube.NO_CLUSTER)
    return session


@dataclass
class Scan:
    """One read-only pass over a cluster: ``discover()``, then ``namespaces()``, ``nodes()`` and ``objects()``.

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
        """One GET through the client, parsed as JSON; no answer or bad credentials raise ClusterError,
        other HTTP errors stay ``ApiException`` (the caller knows what they mean for the scan)."""
        self.requests += 1
        try:
            body = kube.call_json(call, TIMEOUT, **kw)
        except ValueError as exc:
            raise ClusterError(f"{what}: the API server answered with something that is not JSON: {exc}") from None
        except Exception as exc:
            if kube.is_transport(exc) or kube.status_of(exc) == 401:
                raise ClusterError(kube.describe(exc, self.session.host, what)) from None
            raise
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
            raise ClusterError(f"API discovery failed: {kube.describe(exc, self.session.host)}") from None
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
                        self._error(kube.describe(exc, self.session.host, f"discovery of {key}"))
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

    def _pages(self, ak: ApiKind, version: str, call: Callable[..., Any] | None = None) -> Iterator[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        api_version = f"{ak.group}/{version}" if ak.group else version
        count = 0
        pages = kube.pages(call or self._lister(ak, version), self.chunk_size, TIMEOUT)
        while True:
            self.requests += 1
            try:
                page = next(pages)
            except StopIteration:
                self.requests -= 1  # the last page said there is no more: no request was made
                return
            except ApiException as exc:
                if kube.is_transport(exc) or exc.status == 401:
                    raise ClusterError(kube.describe(exc, self.session.host, f"list {ak.resource}")) from None
                self._error(self._list_error(ak, exc, count))
                return
            except ValueError as exc:
                raise ClusterError(
                    f"list {ak.resource}: the API server answered with something that is not JSON: {exc}"
                ) from None
            except Exception as exc:
                if kube.is_transport(exc):
                    raise ClusterError(kube.describe(exc, self.session.host, f"list {ak.resource}")) from None
                raise
            for item in page.get("items") or []:
                if not isinstance(item, dict):
                    continue
                item.setdefault("apiVersion", api_version)  # list items usually omit them
                item.setdefault("kind", ak.kind)
                (item.get("metadata") or {}).pop("managedFields", None)  # large and irrelevant here
                count += 1
                yield item
            if self.on_page:
                self.on_page(ak, count)

    def _list_error(self, ak: ApiKind, exc: Any, count: int) -> str:
        if exc.status == 403:
            return f"forbidden: cannot list {ak.resource} {self._where()}"
        if exc.status == 410:
            return (
                f"list {ak.resource} {self._where()}: the continue token expired after {count} objects "
                f"(410 Gone); the rest of them are not audited, re-run with a larger --chunk-size"
            )
        return kube.describe(exc, self.session.host, f"cannot list {ak.resource} {self._where()}")

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

    def nodes(self) -> Iterator[dict[str, Any]]:
        """Every Node, page by page (cluster-scoped, whatever the namespace scope): where pods run, their
        zones and taints. Not readable (403): a note, and the placement audit goes on without zones or taints."""
        from kubernetes import client

        nodes = ApiKind("", "Node", "nodes", ("v1",))
        errors = len(self.errors)
        before, on_error = self.namespace, self.on_error
        self.namespace, self.on_error = None, None  # nodes are cluster-scoped; a failure is a note
        try:
            yield from self._pages(nodes, "v1", client.CoreV1Api(self.session.api).list_node)
        finally:
            self.namespace, self.on_error = before, on_error
        if len(self.errors) > errors:  # keep a 403 on nodes a note: it loses zones and taints, not objects
            self.notes.append(f"{self.errors.pop()}: zones and node taints are unknown in the placement audit")
