"""What the cluster has, as the engine sees it: a read-only snapshot of nodes and namespaces.

Built by the caches (webhook/caches.py) from list+watch, never fetched on the request path. Nodes
are folded into *classes* (same labels but the hostname, same taints, same allocatable GPUs), and the
classes again by taints and GPUs alone (``ClusterView.folded``): a pod template without a node selection
is counted against those, a handful whatever labels nodes carry of their own. A node selection (the
input's) is checked per class and per hostname within a budget of label checks per evaluation
(``MAX_LABEL_CHECKS``): the input never multiplies the cluster's size into unbounded work.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from webhook.engine import podspec
from webhook.engine.podspec import required_node_terms

PER_NODE_LABELS = frozenset({"kubernetes.io/hostname"})


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: dict[str, str]
    taints: tuple[tuple[str, str, str], ...]  # (key, value, effect)
    gpus: dict[str, int]  # allocatable, by resource name
    unschedulable: bool = False


@dataclass(frozen=True)
class NodeClass:
    labels: tuple[tuple[str, str], ...]  # shared labels (hostname removed)
    taints: tuple[tuple[str, str, str], ...]
    gpus: tuple[tuple[str, int], ...]
    hostnames: tuple[str, ...]  # the hostname label of each member

    @property
    def count(self) -> int:
        return len(self.hostnames)

    @cached_property
    def host_set(self) -> frozenset[str]:
        """The hostnames, for lookups (built once per snapshot, on first use)."""
        return frozenset(self.hostnames)


def node_from_api(node: dict[str, Any]) -> NodeInfo:
    """A NodeInfo from a Node object as the API returns it (dict form)."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    taints = tuple(
        (str(t.get("key") or ""), str(t.get("value") or ""), str(t.get("effect") or ""))
        for t in spec.get("taints") or []
        if isinstance(t, dict)
    )
    gpus: dict[str, int] = {}
    for name, qty in (status.get("allocatable") or {}).items():
        if "gpu" in name:
            try:
                gpus[name] = int(float(str(qty)))
            except ValueError:
                continue
    return NodeInfo(
        str(meta.get("name") or ""), dict(meta.get("labels") or {}), taints, gpus, bool(spec.get("unschedulable"))
    )


# (hostname, shared labels, taints, allocatable GPUs, unschedulable): what classes are made of
NodeRecord = tuple[
    str, tuple[tuple[str, str], ...], tuple[tuple[str, str, str], ...], tuple[tuple[str, int], ...], bool
]


def record(n: NodeInfo) -> NodeRecord:
    shared = tuple(sorted((k, v) for k, v in n.labels.items() if k not in PER_NODE_LABELS))
    host = n.labels.get("kubernetes.io/hostname", n.name)
    return host, shared, tuple(sorted(n.taints)), tuple(sorted(n.gpus.items())), n.unschedulable


def classify_records(records: Iterable[NodeRecord]) -> tuple[NodeClass, ...]:
    """Fold schedulable nodes into classes of identical scheduling properties."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for host, labels, taints, gpus, unschedulable in records:
        if not unschedulable:
            groups.setdefault((labels, taints, gpus), []).append(host)
    return tuple(NodeClass(k[0], k[1], k[2], tuple(sorted(v))) for k, v in groups.items())


def classify(nodes: Iterable[NodeInfo]) -> tuple[NodeClass, ...]:
    return classify_records(record(n) for n in nodes)


# (hostname, taints, shared labels) of an unschedulable node
Cordoned = tuple[str, tuple[tuple[str, str, str], ...], tuple[tuple[str, str], ...]]


def cordoned(records: Iterable[NodeRecord]) -> tuple[Cordoned, ...]:
    """(hostname, taints, labels) of the unschedulable nodes: left out of the classes (nothing is scheduled
    there), but a pod naming one in ``nodeName`` still runs on it, and a node selection that allows one is not
    a pin to the other nodes it allows (a cordon is lifted after the drain)."""
    return tuple((host, taints, labels) for host, labels, taints, _gpus, unschedulable in records if unschedulable)


@dataclass(frozen=True)
class ClusterView:
    """An immutable snapshot; the caches swap in a new one on every change."""

    synced: bool = False
    classes: tuple[NodeClass, ...] = ()
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    error: str = ""  # why the view is not synced, for the warning
    cordoned: tuple[Cordoned, ...] = ()  # unschedulable nodes' hostnames, taints and labels

    @property
    def node_count(self) -> int:
        return sum(c.count for c in self.classes)

    @cached_property
    def _taints_by_host(self) -> dict[str, tuple[tuple[str, str, str], ...]]:
        # built once per snapshot (the caches swap in a new view on every change), on first use
        out = {host: taints for host, taints, _labels in self.cordoned}
        out.update((host, c.taints) for c in self.classes for host in c.hostnames)
        return out

    @cached_property
    def _folds(self) -> dict[str | None, tuple[NodeClass, ...]]:
        return {}

    def folded(self, key: str | None = None) -> tuple[NodeClass, ...]:
        """The classes folded by what decides eligibility without a node selection (taints, GPUs), keeping
        only the label ``key`` (a zone): a handful, however many nodes carry labels of their own. Built once
        per snapshot and key (the policy's), on first use."""
        if key not in self._folds:
            hosts: dict[tuple[Any, ...], list[str]] = {}
            for c in self.classes:
                value = dict(c.labels).get(key) if key else None
                labels = ((key, value),) if key and value is not None else ()
                hosts.setdefault((labels, c.taints, c.gpus), []).extend(c.hostnames)
            self._folds[key] = tuple(NodeClass(lab, t, g, tuple(h)) for (lab, t, g), h in hosts.items())
        return self._folds[key]

    @cached_property
    def cordoned_classes(self) -> tuple[NodeClass, ...]:
        """Each unschedulable node as a class of its own (no GPUs: nothing is scheduled there), for node
        selections that count what a selection allows, not where pods can start now."""
        return tuple(NodeClass(labels, taints, (), (host,)) for host, taints, labels in self.cordoned)

    @cached_property
    def every_class(self) -> tuple[NodeClass, ...]:
        """The schedulable classes and the cordoned nodes, each cordoned node a class of its own."""
        return (*self.classes, *self.cordoned_classes)

    @cached_property
    def by_label(self) -> dict[tuple[str, str], list[NodeClass]]:
        """``every_class`` by each (label, value) they carry (the hostname excluded): the classes a node selection
        that requires a label can match, looked up instead of scanned."""
        out: dict[tuple[str, str], list[NodeClass]] = {}
        for c in self.every_class:
            for pair in c.labels:
                out.setdefault(pair, []).append(c)
        return out

    @cached_property
    def by_label_key(self) -> dict[str, list[NodeClass]]:
        """``every_class`` by each label key they carry (for ``Exists``)."""
        out: dict[str, list[NodeClass]] = {}
        for c in self.every_class:
            for key, _value in c.labels:
                out.setdefault(key, []).append(c)
        return out

    def taints_of(self, node: str) -> tuple[tuple[str, str, str], ...] | None:
        """The taints of the node named ``node``, schedulable or cordoned (by its hostname label, which the kubelet sets
        to the node name unless overridden), or None when the view does not know it."""
        return self._taints_by_host.get(node)


def _expr_holds(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = str(expr.get("key") or ""), expr.get("operator"), expr.get("values") or []
    if not isinstance(values, list):
        values = []  # not a list of values (a CRD's template is not validated like a Pod's): matches no value
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            a, b = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


HOSTNAME = podspec.HOSTNAME
# Label checks (one per requirement and listed value) that counting eligible nodes may make per evaluation.
# The node selection is the input's, the node count the cluster's: their product is not bounded by either,
# and every call past the webhook's budget admits unchecked (fail open). Past it, a selection is no longer
# applied node by node: the class's nodes all count (its taints and GPUs still decide). The choice between
# required and preferred spreading and the gang zone use this count. The one rule that denies on a count
# (single-node-pinning by a label one node carries, ``selection_hosts``) treats a refused check as unknown and
# does not deny: past the budget, a count can only be too high, never too low.
MAX_LABEL_CHECKS = 1_000_000


class WorkMeter:
    """Label checks spent by one evaluation (``Context.meter``): ``spend`` refuses what would pass the limit."""

    __slots__ = ("spent", "limit", "exhausted", "counted", "selections")

    def __init__(self, limit: int = MAX_LABEL_CHECKS) -> None:
        self.spent = 0
        self.limit = limit
        self.exhausted = False
        # eligible classes by what decides them: the groups of one workload mostly share a node selection
        self.counted: dict[str, list[tuple[NodeClass, int]]] = {}
        # the nodes a node selection alone allows (``selection_hosts``), by selection
        self.selections: dict[str, tuple[str, ...] | None] = {}

    def spend(self, checks: int) -> bool:
        if self.spent + checks > self.limit:
            self.exhausted = True
            return False
        self.spent += checks
        return True


def _checks(exprs: list[dict[str, Any]]) -> int:
    return sum(
        1 + (len(values) if isinstance(values := e.get("values"), list) else 0) for e in exprs if isinstance(e, dict)
    )


def _host_requirements(term: dict[str, Any], shared: dict[str, str]) -> list[dict[str, Any]] | None:
    """What ``term`` asks of a node's hostname, once the requirements on the labels every node of a class
    shares are checked (once per class, not per node); None when one of those fails."""
    out = []
    for e in term.get("matchExpressions") or []:
        if not isinstance(e, dict):
            continue
        if e.get("key") == HOSTNAME:
            out.append(e)
        elif not _expr_holds(e, shared):
            return None
    for e in term.get("matchFields") or []:
        if isinstance(e, dict) and e.get("key") == "metadata.name":
            out.append({**e, "key": HOSTNAME})
    return out


class _Tolerations:
    """A pod's tolerations indexed by what they match, so a taint is looked up in constant time (the same
    verdict as ``podspec.tolerates`` on each): trying each toleration on each of the cluster's distinct taint
    sets made the work the input's tolerations times the cluster's taint sets."""

    def __init__(self, tolerations: list[dict[str, Any]]) -> None:
        self.every_key: set[str] = set()  # effects ("" = all) tolerated whatever the key (no key, Exists)
        self.by_key: dict[str, set[str]] = {}  # keyed Exists
        self.by_value: dict[tuple[str, str], set[str]] = {}  # keyed, any other operator: compared by value
        for tol in tolerations:
            key, value, effect = tol.get("key"), tol.get("value") or "", tol.get("effect") or ""
            op = tol.get("operator") or "Equal"
            if not isinstance(effect, str) or not isinstance(value, str) or (key and not isinstance(key, str)):
                continue  # never equal to a taint's strings: tolerates nothing
            if not key:
                if op == "Exists":
                    self.every_key.add(effect)
            elif op == "Exists":
                self.by_key.setdefault(key, set()).add(effect)
            else:
                self.by_value.setdefault((key, value), set()).add(effect)

    def tolerate(self, key: str, value: str, effect: str) -> bool:
        return any(
            effects is not None and ("" in effects or effect in effects)
            for effects in (self.every_key, self.by_key.get(key), self.by_value.get((key, value or "")))
        )


def _selected_hosts(
    cls: NodeClass, selector: dict[str, Any], terms: list[dict[str, Any]], meter: WorkMeter
) -> tuple[tuple[str, ...], bool]:
    """The nodes of ``cls`` the pod's nodeSelector and required node affinity allow, and whether that is exact
    (False: ``meter`` refused the node-by-node checks, and every node the class-wide checks let through is in)."""
    shared = dict(cls.labels)
    if any(k != HOSTNAME and shared.get(k) != v for k, v in selector.items()):
        return (), True
    hosts = cls.hostnames
    if HOSTNAME in selector:  # looked up, not scanned: groups (the input's) times nodes (the cluster's)
        host = selector[HOSTNAME]
        hosts = (host,) if isinstance(host, str) and host in cls.host_set else ()
    live = [r for t in terms if (r := _host_requirements(t, shared)) is not None]
    if terms and not live:
        return (), True
    if not terms or any(not r for r in live):
        return hosts, True  # a term that holds on the class alone: every node of it
    if not meter.spend(len(hosts) * sum(_checks(r) for r in live)):
        return hosts, False
    return tuple(h for h in hosts if any(all(_expr_holds(e, {HOSTNAME: h}) for e in r) for r in live)), True


def _selected(cls: NodeClass, selector: dict[str, Any], terms: list[dict[str, Any]], meter: WorkMeter) -> int:
    """How many nodes of ``cls`` the pod's nodeSelector and required node affinity allow (past ``meter``: every
    node the class-wide checks let through)."""
    return len(_selected_hosts(cls, selector, terms, meter)[0])


def eligible_classes(
    view: ClusterView,
    spec: dict[str, Any],
    gpu_resources: list[str],
    meter: WorkMeter | None = None,
    key: str | None = None,
) -> list[tuple[NodeClass, int]]:
    """(class, how many of its nodes) a pod with ``spec`` could be scheduled on, by selectors, affinity,
    taints and GPUs; classes keep the label ``key`` (for counts per zone).

    Without a node selection the view's folded classes are enough (a handful). With one, requirements on
    shared labels are checked once per class and those on the hostname node by node, within ``meter`` (one
    per evaluation; a fresh one when not given): past it, the selection is not applied.
    """
    meter = meter if meter is not None else WorkMeter()
    selector = spec.get("nodeSelector") or {}
    terms = required_node_terms(spec)
    need = podspec.gpu_count(spec, gpu_resources)
    seen = json.dumps(
        [id(view), selector, terms, podspec.tolerations(spec), need, gpu_resources, key], sort_keys=True, default=str
    )
    if seen not in meter.counted:
        meter.counted[seen] = _eligible(view, selector, terms, spec, need, gpu_resources, meter, key)
    return meter.counted[seen]


def _eligible(
    view: ClusterView,
    selector: dict[str, Any],
    terms: list[dict[str, Any]],
    spec: dict[str, Any],
    need: int,
    gpu_resources: list[str],
    meter: WorkMeter,
    key: str | None,
) -> list[tuple[NodeClass, int]]:
    classes = view.folded(key)
    if selector or terms:
        class_checks = len(selector) + sum(_checks(t.get("matchExpressions") or []) for t in terms)
        if meter.spend(len(view.classes) * (1 + class_checks)):
            classes = view.classes
        else:
            selector, terms = {}, []
    tolerations = _Tolerations(podspec.tolerations(spec))
    taints_ok: dict[tuple[Any, ...], bool] = {}
    gpus_ok: dict[tuple[Any, ...], bool] = {}
    out: list[tuple[NodeClass, int]] = []
    for cls in classes:
        if cls.taints not in taints_ok:
            taints_ok[cls.taints] = not any(
                effect in ("NoSchedule", "NoExecute") and not tolerations.tolerate(key, value, effect)
                for key, value, effect in cls.taints
            )
        if not taints_ok[cls.taints]:
            continue
        if cls.gpus not in gpus_ok:
            gpus = dict(cls.gpus)
            gpus_ok[cls.gpus] = not need or max((gpus.get(r, 0) for r in gpu_resources), default=0) >= need
        if not gpus_ok[cls.gpus]:
            continue
        count = _selected(cls, selector, terms, meter) if selector or terms else cls.count
        if count:
            out.append((cls, count))
    return out


def selection_hosts(view: ClusterView, spec: dict[str, Any], meter: WorkMeter, upto: int = 2) -> tuple[str, ...] | None:
    """Up to ``upto`` hostnames of the nodes, schedulable or cordoned, whose labels the pod's node selection
    (``nodeSelector`` and required node affinity) allows, whatever their taints and GPUs: the nodes the selection
    alone leaves the pod. None when ``meter`` cannot pay for the checks: not known, so nothing may be denied on it.

    Stops at ``upto`` (a selection that allows two nodes is not a pin, however many more it allows), so a pool
    costs a few checks; a selection that narrows to one node is checked on every class, within ``meter``.
    """
    selector = spec.get("nodeSelector") or {}
    terms = required_node_terms(spec)
    seen = json.dumps([id(view), selector, terms, upto], sort_keys=True, default=str)
    if seen not in meter.selections:
        meter.selections[seen] = _selection_hosts(view, selector, terms, meter, upto)
    return meter.selections[seen]


def _selection_hosts(
    view: ClusterView, selector: dict[str, Any], terms: list[dict[str, Any]], meter: WorkMeter, upto: int
) -> tuple[str, ...] | None:
    class_checks = 1 + len(selector) + sum(_checks(t.get("matchExpressions") or []) for t in terms)
    found: list[str] = []
    candidates = _candidates(view, selector, terms, meter)
    if candidates is None:
        return None
    for cls in candidates:
        if not meter.spend(class_checks):
            return None
        hosts, exact = _selected_hosts(cls, selector, terms, meter)
        if not exact:
            return None
        found.extend(hosts[: upto - len(found)])
        if len(found) >= upto:
            break
    return tuple(found)


def _candidates(
    view: ClusterView, selector: dict[str, Any], terms: list[dict[str, Any]], meter: WorkMeter
) -> list[NodeClass] | tuple[NodeClass, ...] | None:
    """The classes a node selection can match at all, by its narrowest required label: a ``nodeSelector`` pair,
    and in every (ORed) term an ``In`` or ``Exists`` requirement. A superset of the matches, looked up in the
    view's label index, so padding a selection with requirements that narrow nothing does not multiply the
    cluster's size. None when ``meter`` cannot pay for merging the terms' lists."""
    best: list[NodeClass] | tuple[NodeClass, ...] = view.every_class
    for key, value in selector.items():
        if key != HOSTNAME:
            got = view.by_label.get((key, value), []) if isinstance(value, str) else []
            if len(got) < len(best):
                best = got
    if not terms:
        return best
    merged: dict[int, NodeClass] = {}
    for term in terms:
        narrowest: tuple[int, list[list[NodeClass]]] | None = None
        for e in term.get("matchExpressions") or []:
            if not isinstance(e, dict) or not isinstance(e.get("key"), str) or e.get("key") == HOSTNAME:
                continue
            values = e.get("values") or []
            if e.get("operator") == "In" and isinstance(values, list):
                lists = [view.by_label.get((e["key"], v), []) for v in values if isinstance(v, str)]
            elif e.get("operator") == "Exists":
                lists = [view.by_label_key.get(e["key"], [])]
            else:
                continue
            size = sum(len(x) for x in lists)
            if narrowest is None or size < narrowest[0]:
                narrowest = (size, lists)
        if narrowest is None:
            return best  # a term that may match any class: the terms narrow nothing
        if not meter.spend(narrowest[0]):
            return None
        merged.update((id(c), c) for x in narrowest[1] for c in x)
    return list(merged.values()) if len(merged) < len(best) else best


def eligible_nodes(
    view: ClusterView, spec: dict[str, Any], gpu_resources: list[str], meter: WorkMeter | None = None
) -> int:
    """How many nodes a pod with ``spec`` could be scheduled on."""
    return sum(n for _cls, n in eligible_classes(view, spec, gpu_resources, meter))


def node_gpus(cls: NodeClass, gpu_resources: list[str]) -> int:
    gpus = dict(cls.gpus)
    return max((gpus.get(r, 0) for r in gpu_resources), default=0)


def eligible_by_label(
    view: ClusterView, spec: dict[str, Any], gpu_resources: list[str], key: str, meter: WorkMeter | None = None
) -> dict[str | None, tuple[int, int]]:
    """Eligible nodes per value of the node label ``key`` (None: nodes without it), as
    (nodes, GPUs of the smallest of them): what one zone can hold."""
    out: dict[str | None, tuple[int, int]] = {}
    for cls, count in eligible_classes(view, spec, gpu_resources, meter, key):
        value = dict(cls.labels).get(key)
        nodes, gpus = out.get(value, (0, 1 << 30))
        out[value] = (nodes + count, min(gpus, node_gpus(cls, gpu_resources)))
    return out


def largest_node_gpus(
    view: ClusterView, spec: dict[str, Any], gpu_resources: list[str], meter: WorkMeter | None = None
) -> int:
    """GPUs of the largest node the pod could use (0 when none)."""
    classes = eligible_classes(view, spec, gpu_resources, meter)
    return max((node_gpus(c, gpu_resources) for c, _n in classes), default=0)


def shortage(t: Any) -> str | None:
    """Why ``t``'s group cannot get one node per pod (replicas plus a rolling update's surge), from the
    cluster view; None when it can (or when there is no synced view to tell)."""
    view = t.context.cluster
    if view is None or not view.synced or t.group.replicas is None or t.group.replicas < 2:
        return None
    cfg = t.policy.mutate.antiAffinity
    if cfg is None or cfg.topologyKey != "kubernetes.io/hostname":
        return None
    eligible = eligible_nodes(view, t.spec, t.policy.gpuResources, t.context.meter)
    needed = t.group.replicas + t.group.surge
    if eligible >= needed:
        return None
    owner = f"team {t.team} has" if t.team else "the cluster has"
    surge = f" + {t.group.surge} surge" if t.group.surge else ""
    return f"{t.group.replicas} replicas{surge} need {needed} nodes; {owner} {eligible} eligible node" + (
        "s" if eligible != 1 else ""
    )
