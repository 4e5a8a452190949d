"""Node and namespace caches: list + watch through the ``kubernetes`` client, one snapshot for admission.

Admission reads ``ClusterCache.view()``, an immutable ``placement.ClusterView`` swapped in with one
attribute assignment; a request never waits on the API. Behind it, per gunicorn worker:

- one daemon thread per resource (nodes, namespaces): a paginated list (``limit=500``), then a watch from
  the list's resourceVersion (bookmarks on), a full relist every ``resync_seconds`` and after ``410 Gone``,
  exponential backoff with jitter on errors;
- one daemon thread that publishes the view: it rebuilds the node classes when a watched field changed
  (labels, taints, allocatable GPUs, unschedulable; a status heartbeat changes none of them and is
  dropped), at most once every ``min_rebuild_seconds``, and flips ``synced`` when the health changes.

The raw state is compact: per node one tuple of shared (interned) pieces, per namespace its labels.
Watch events are parsed into plain dicts (no ``V1Node`` models). Figures and the decisions taken
(when the view counts as synced, what a restart costs) are in docs/caches.md.
"""

from __future__ import annotations

import logging
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from webhook.engine.placement import (
    PER_NODE_LABELS,
    ClusterView,
    NodeRecord,
    classify_records,
    cordoned,
    node_from_api,
)
from webhook.kube import client as kube

log = logging.getLogger("spreadguard.caches")

HOSTNAME = "kubernetes.io/hostname"
PAGE_SIZE = 500
RESYNC_SECONDS = 600.0  # full relist of each resource
WATCH_SECONDS = 300  # server-side timeout of one watch request (jittered down to half of it)
MIN_REBUILD_SECONDS = 0.5  # at most two rebuilds of the node classes a second
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
CONNECT_TIMEOUT = 5.0
LIST_READ_TIMEOUT = 60.0
TICK_SECONDS = 0.5  # how often the publisher re-checks the health without a data change
_MAX_ERROR_CHARS = 240
_CONNECTION_PREFIX = re.compile(r"^(<[^>]*>|\w+\(host=[^)]*\)): ")

# (hostname, shared labels, taints, allocatable GPUs, unschedulable): the shared labels, taints and GPUs
# are sorted tuples exactly as placement.classify keys them, and interned, so nodes of one pool share them.


class CacheConfigError(Exception):
    """An explicitly given kubeconfig or context that cannot be loaded."""


class _Interner:
    """One shared copy of each tuple (flyweights); strings go through ``sys.intern``.

    The table only grows with distinct values; it is dropped when it holds more than ``4 x live + 4096``
    entries (old records keep their copies, new ones start sharing again) and replaced on every relist.
    """

    def __init__(self) -> None:
        self._table: dict[tuple, tuple] = {}
        self.live = 0  # records of the resource, for the bound

    def tup(self, value: tuple) -> tuple:
        got = self._table.get(value)
        if got is None:
            if len(self._table) > 4 * self.live + 4096:
                self._table = {}
            self._table[value] = got = value
        return got


def _s(value: Any) -> str:
    return sys.intern(value if isinstance(value, str) else str(value))


def node_record(raw: dict[str, Any], interner: _Interner) -> tuple[str, NodeRecord] | None:
    """A Node object (dict form, as the API sends it) as (name, compact record); None without a name."""
    info = node_from_api(raw)
    if not info.name:
        return None
    tup = interner.tup
    name = _s(info.name)
    labels = tup(tuple(sorted(tup((_s(k), _s(v))) for k, v in info.labels.items() if k not in PER_NODE_LABELS)))
    taints = tup(tuple(sorted(tup((_s(k), _s(v), _s(e))) for k, v, e in info.taints)))
    gpus = tup(tuple(sorted((_s(k), v) for k, v in info.gpus.items())))
    host = _s(info.labels.get(HOSTNAME, name))
    return name, (host, labels, taints, gpus, info.unschedulable)


def namespace_record(raw: dict[str, Any], _interner: _Interner) -> tuple[str, dict[str, str]] | None:
    """A Namespace object as (name, labels); the labels dict is never changed afterwards (shared by views)."""
    meta = raw.get("metadata") or {}
    name = meta.get("name")
    if not name:
        return None
    return _s(name), {_s(k): _s(v) for k, v in (meta.get("labels") or {}).items()}


def _utc(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def describe_error(exc: BaseException, host: str) -> str:
    """One line saying what went wrong with a call to the API server (``webhook.kube.client.describe``)."""
    return kube.describe(exc, host)


def _raw_watch() -> Any:
    """A ``watch.Watch`` that hands out the event's object as parsed JSON (no model deserialization):
    a Node heartbeat then costs one ``json.loads``. ERROR events still raise ``ApiException(code)``."""
    from kubernetes import watch

    class RawWatch(watch.Watch):
        def get_return_type(self, func: Any) -> Any:
            return None

    return RawWatch()


@dataclass(eq=False)
class _Resource:
    """One watched collection and its bookkeeping (written by its own thread, under the cache lock)."""

    kind: str  # "nodes" / "namespaces"
    lister: Callable[..., Any]
    record: Callable[[dict[str, Any], _Interner], tuple[str, Any] | None]
    items: dict[str, Any] = field(default_factory=dict)
    interner: _Interner = field(default_factory=_Interner)
    resource_version: str = ""
    listed: bool = False  # a full list completed at least once
    need_list: bool = True
    next_resync: float = 0.0  # monotonic
    last_list: float | None = None  # wall clock of the last completed list
    last_event: float | None = None
    failing_since: float | None = None  # monotonic; None while the API answers
    last_error: str = ""
    last_error_at: float | None = None
    lists: int = 0
    pages: int = 0
    events: int = 0
    unchanged: int = 0  # MODIFIED events that changed no watched field
    watch_restarts: int = 0  # watches that ended in an error or 410 (not the server's timeout)
    gone: int = 0  # 410 Gone seen (watch or list): relisted
    watch: Any = None  # the open watch.Watch, so stop() can break its read
    watch_open: bool = False  # the current watch request was answered (HTTP 200)

    def as_json(self, now: float) -> dict[str, Any]:
        failing = None if self.failing_since is None else round(now - self.failing_since, 1)
        return {
            "count": len(self.items),
            "listed": self.listed,
            "resourceVersion": self.resource_version,
            "lastList": _utc(self.last_list),
            "lastEvent": _utc(self.last_event),
            "lists": self.lists,
            "pages": self.pages,
            "events": self.events,
            "unchangedEvents": self.unchanged,
            "watchRestarts": self.watch_restarts,
            "gone": self.gone,
            "failingForSeconds": failing,
            "lastError": self.last_error or None,
            "lastErrorAt": _utc(self.last_error_at),
        }


class ClusterCache:
    """Nodes and namespaces of one cluster, kept by list + watch, served as ``view()``.

    ``api_client`` is a ``kubernetes.client.ApiClient`` (``from_environment`` builds one). Nothing
    talks to the API until ``start()``. ``stale_after`` (default two resync periods): how long the
    watch of a resource that was listed once may keep failing before the view says ``synced=False``;
    before the first complete list of both resources it is never synced.
    """

    def __init__(
        self,
        api_client: Any,
        *,
        page_size: int = PAGE_SIZE,
        resync_seconds: float = RESYNC_SECONDS,
        stale_after: float | None = None,
        watch_seconds: int = WATCH_SECONDS,
        min_rebuild_seconds: float = MIN_REBUILD_SECONDS,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        request_timeout: tuple[float, float] = (CONNECT_TIMEOUT, LIST_READ_TIMEOUT),
    ) -> None:
        from kubernetes import client

        self._api = api_client
        self.host = str(getattr(api_client.configuration, "host", "") or "")
        self.page_size = page_size
        self.resync_seconds = float(resync_seconds)
        self.stale_after = 2 * self.resync_seconds if stale_after is None else float(stale_after)
        self.watch_seconds = max(1, int(watch_seconds))
        self.min_rebuild_seconds = float(min_rebuild_seconds)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.request_timeout = request_timeout
        core = client.CoreV1Api(api_client)
        self._nodes = _Resource("nodes", core.list_node, node_record)
        self._namespaces = _Resource("namespaces", core.list_namespace, namespace_record)
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pid: int | None = None
        self._dirty = False
        self.generation = 0  # data changes seen (a rebuild covers all changes since the previous one)
        self.rebuilds = 0  # node-class rebuilds (a view with new data)
        self.publishes = 0  # views swapped in (rebuilds and health-only changes)
        self.ticks = 0  # publisher loop iterations
        self.last_rebuild_seconds = 0.0
        self._view = ClusterView(synced=False, error="cluster cache not started")

    # ------------------------------------------------------------------ public

    @classmethod
    def from_environment(
        cls, kubeconfig: str | None = None, context: str | None = None, **options: Any
    ) -> ClusterCache | None:
        """A cache for the cluster this process runs in, or None (spec-only decisions).

        Explicit ``kubeconfig`` / ``context``: that kubeconfig (an error raises ``CacheConfigError``).
        Otherwise the in-cluster service account when ``KUBERNETES_SERVICE_HOST`` is set, else
        ``$KUBECONFIG`` when set, else None: ``~/.kube/config`` is never picked up implicitly, so a local
        ``make serve`` stays spec-only instead of watching whatever cluster the current context names.
        No network call is made here.
        """
        api = api_client_from_environment(kubeconfig, context)
        return cls(api, **options) if api is not None else None

    def view(self) -> ClusterView:
        """The current snapshot (one attribute read; never blocks)."""
        return self._view

    def start(self) -> ClusterCache:
        """Start the watch threads (idempotent, returns at once; safe from any thread).

        In a forked child (gunicorn worker) of a process that had started the cache, the state is reset
        and the threads started afresh: threads do not survive a fork.
        """
        with self._start_lock:
            pid = os.getpid()
            if self._pid == pid and self._threads and not self._stopping.is_set():
                return self
            if self._pid is not None and self._pid != pid:
                self._reset_after_fork()
            self._pid = pid
            self._stopping = stopping = threading.Event()  # per run: a late thread of an earlier run stays stopped
            if self._view.error == "cluster cache not started":
                self._view = ClusterView(synced=False)
            self._threads = [
                threading.Thread(
                    target=self._run, args=(res, stopping), name=f"spreadguard-cache-{res.kind}", daemon=True
                )
                for res in (self._nodes, self._namespaces)
            ]
            self._threads.append(
                threading.Thread(target=self._publisher, args=(stopping,), name="spreadguard-cache-view", daemon=True)
            )
            for t in self._threads:
                t.start()
            log.info("cluster cache started against %s", self.host)
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the threads; True when all ended within ``timeout`` seconds (they are daemons anyway)."""
        with self._start_lock:
            self._stopping.set()
            self._wake.set()
            threads = list(self._threads)
            deadline = time.monotonic() + timeout
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                for res in (self._nodes, self._namespaces):
                    w = res.watch
                    if w is not None:
                        w.stop()  # shuts the socket down: the blocked read returns
                for t in threads:
                    t.join(0.05)
            self._threads = [t for t in threads if t.is_alive()]
            return not self._threads

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads) and not self._stopping.is_set()

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: the view's state, counts, last sync and error, restarts."""
        now = time.monotonic()
        view = self._view
        with self._lock:
            nodes, namespaces = self._nodes.as_json(now), self._namespaces.as_json(now)
        lasts = [r["lastList"] for r in (nodes, namespaces)]
        errors = [
            (r["lastErrorAt"], f"{kind}: {r['lastError']}")
            for kind, r in (("nodes", nodes), ("namespaces", namespaces))
            if r["lastError"]
        ]
        latest_error = max(errors)[1] if errors else None
        return {
            "synced": view.synced,
            "error": view.error or None,
            "running": self.running,
            "apiServer": self.host,
            "nodes": nodes["count"],
            "nodeClasses": len(view.classes),
            "namespaces": namespaces["count"],
            "lastSync": None if None in lasts else min(lasts),  # both resources fully listed since then
            "lastError": latest_error,
            "watchRestarts": nodes["watchRestarts"] + namespaces["watchRestarts"],
            "rebuilds": self.rebuilds,
            "lastRebuildSeconds": round(self.last_rebuild_seconds, 4),
            "resources": {"nodes": nodes, "namespaces": namespaces},
        }

    # ------------------------------------------------------------- watch loop

    def _run(self, res: _Resource, stopping: threading.Event) -> None:
        failures = 0
        while not stopping.is_set():
            delay = 0.0
            try:
                if res.need_list or time.monotonic() >= res.next_resync:
                    self._list(res, stopping)
                healthy = self._watch(res, stopping)
                failures = 0 if healthy else failures + 1
                if not healthy:
                    delay = self._backoff(failures)
            except Exception as exc:  # noqa: BLE001 - any failure: note it, back off, go on
                if stopping.is_set():
                    break
                failures = 1 if res.watch_open else failures + 1  # a watch that was open: the API answered
                res.watch_open = False
                gone = kube.status_of(exc) == 410
                with self._lock:
                    res.watch_restarts += 1
                    if gone:  # the resourceVersion (or continue token) expired: list again
                        res.gone += 1
                        res.need_list = True
                    else:
                        self._failed(res, describe_error(exc, self.host))
                delay = 0.0 if gone and failures == 1 else self._backoff(failures)
                if not gone:
                    log.warning("cluster cache: %s: %s (retrying in %.1f s)", res.kind, res.last_error, delay)
            if delay:
                stopping.wait(delay)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** min(failures - 1, 20))
        return random.uniform(ceiling / 2, ceiling)

    def _failed(self, res: _Resource, message: str) -> None:
        res.last_error = message
        res.last_error_at = time.time()
        if res.failing_since is None:
            res.failing_since = time.monotonic()
        self._wake.set()  # the health may have changed

    def _contact(self, res: _Resource) -> None:
        """The API answered for ``res`` (under the lock)."""
        if res.failing_since is not None:
            res.failing_since = None
            self._wake.set()

    def _list(self, res: _Resource, stopping: threading.Event | None = None) -> None:
        stopping = stopping or self._stopping
        interner = _Interner()
        items: dict[str, Any] = {}
        version = ""
        pages = 0
        for page in kube.pages(res.lister, self.page_size, self.request_timeout):
            pages += 1
            for raw in page.get("items") or ():
                if isinstance(raw, dict):
                    got = res.record(raw, interner)
                    if got is not None:
                        items[got[0]] = got[1]
            interner.live = len(items)
            version = str((page.get("metadata") or {}).get("resourceVersion") or version)
            if stopping.is_set():
                break
        if stopping.is_set():
            return
        with self._lock:
            changed = items != res.items
            res.items, res.interner, res.resource_version = items, interner, version
            res.listed, res.need_list = True, False
            res.lists += 1
            res.pages += pages
            res.last_list = time.time()
            res.next_resync = time.monotonic() + self.resync_seconds * random.uniform(0.9, 1.0)
            self._contact(res)
            if changed or res.lists == 1:
                self._changed()

    def _watch(self, res: _Resource, stopping: threading.Event) -> bool:
        """One watch request until the server ends it (or the resync is due). True when it was healthy."""
        started = time.monotonic()
        remaining = max(1.0, res.next_resync - started)
        timeout = max(1, int(min(remaining, self.watch_seconds * random.uniform(0.5, 1.0))))
        w = _raw_watch()
        res.watch = w
        res.watch_open = False
        events = 0

        def opened(**kw: Any) -> Any:  # the watch request, answered: the API server is back
            resp = res.lister(**kw)
            with self._lock:
                res.watch_open = True
                self._contact(res)
            return resp

        try:
            if stopping.is_set():
                return True
            stream = w.stream(
                opened,
                resource_version=res.resource_version,
                timeout_seconds=timeout,
                allow_watch_bookmarks=True,
                _request_timeout=(self.request_timeout[0], timeout + 30),
            )
            for event in stream:
                events += 1
                self._apply(res, event)
                if stopping.is_set():
                    w.stop()
                    break
        finally:
            res.watch = None
        healthy = res.watch_open and (events > 0 or time.monotonic() - started >= 1.0)
        res.watch_open = False
        return healthy  # a stream the server closes at once, again and again, must not spin

    def _apply(self, res: _Resource, event: dict[str, Any]) -> None:
        """One watch event (``type`` and ``raw_object``, the object as parsed JSON)."""
        kind = event.get("type")
        obj = event.get("raw_object")
        if not isinstance(obj, dict):
            return
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            with self._lock:
                res.resource_version = version or res.resource_version
                res.last_event = time.time()
                self._contact(res)
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        got = res.record(obj, res.interner)
        if got is None:
            return
        name, record = got
        with self._lock:
            res.events += 1
            res.last_event = time.time()
            res.resource_version = version or res.resource_version
            self._contact(res)
            if kind == "DELETED":
                changed = res.items.pop(name, None) is not None
            elif res.items.get(name) == record:
                res.unchanged += 1
                changed = False
            else:
                res.items[name] = record
                changed = True
            res.interner.live = len(res.items)
            if changed:
                self._changed()

    def _changed(self) -> None:
        """Data changed (under the lock): the publisher rebuilds."""
        self.generation += 1
        self._dirty = True
        self._wake.set()

    # ---------------------------------------------------------------- the view

    def _health(self, now: float) -> tuple[bool, str]:
        """(synced, error) of the view from the two resources' state (under the lock)."""
        synced = True
        problems = []
        for res in (self._nodes, self._namespaces):
            if not res.listed:
                synced = False
                if res.last_error:
                    problems.append(f"{res.kind}: {res.last_error}")
            elif res.failing_since is not None and now - res.failing_since > self.stale_after:
                synced = False
                problems.append(
                    f"{res.kind}: no answer from the API server for {int(now - res.failing_since)} s ({res.last_error})"
                )
        return synced, "; ".join(problems)

    def _publisher(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()
            if stopping.is_set():
                break
            rebuilt = self.publish()
            self.ticks += 1
            if rebuilt and self.min_rebuild_seconds > 0:
                stopping.wait(self.min_rebuild_seconds)  # coalesce whatever arrives meanwhile

    def publish(self) -> bool:
        """Swap in a new view if the data or the health changed; True when the classes were rebuilt."""
        started = time.perf_counter()
        with self._lock:
            dirty, self._dirty = self._dirty, False
            synced, error = self._health(time.monotonic())
            if dirty:
                records = list(self._nodes.items.values())
                namespaces = dict(self._namespaces.items)
        current = self._view
        if dirty:
            view = ClusterView(
                synced=synced,
                classes=classify_records(records),
                namespaces=namespaces,
                error=error,
                cordoned=cordoned(records),
            )
            self.rebuilds += 1
            self.last_rebuild_seconds = time.perf_counter() - started
        elif (synced, error) != (current.synced, current.error):
            view = replace(current, synced=synced, error=error)
        else:
            return False
        self._view = view  # the one assignment readers see
        self.publishes += 1
        if synced != current.synced:
            if synced:
                log.info(
                    "cluster view synced: %d nodes in %d classes, %d namespaces",
                    view.node_count,
                    len(view.classes),
                    len(view.namespaces),
                )
            else:
                log.warning("cluster view not synced: %s", error or "starting")
        return dirty

    # ------------------------------------------------------------------- fork

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()  # locks and events may have been held by threads that are gone
        self._wake = threading.Event()
        self._threads = []
        self._dirty = False
        for res in (self._nodes, self._namespaces):
            res.items, res.interner, res.resource_version = {}, _Interner(), ""
            res.listed, res.need_list, res.next_resync, res.failing_since, res.watch = False, True, 0.0, None, None
        self._view = ClusterView(synced=False)
        try:  # connections the parent opened are the parent's
            self._api.rest_client.pool_manager.clear()
        except Exception:  # noqa: BLE001
            log.debug("could not clear the inherited connection pool", exc_info=True)


def api_client_from_environment(kubeconfig: str | None = None, context: str | None = None) -> Any | None:
    """A ``kubernetes.client.ApiClient`` as ``ClusterCache.from_environment`` describes, or None.

    The source is picked by ``webhook.kube.client.load`` (the one precedence rule), without its last step:
    ``~/.kube/config`` is never used implicitly here. A source given explicitly that fails raises
    ``CacheConfigError``; one found in the environment that fails is logged and the server runs spec-only.
    """
    try:
        # one quick retry (a pooled connection the server closed); the cache backs off itself
        connection = kube.load(kubeconfig, context, home=False, retries=1)
    except kube.ConfigError as exc:
        if exc.explicit:
            raise CacheConfigError(str(exc)) from None
        log.warning("%s: no cluster cache, decisions from the spec alone", exc)
        return None
    if connection is None:
        log.info("no cluster configuration (not in a pod, no KUBECONFIG): decisions from the spec alone")
        return None
    return connection.api
