"""Reading pod templates: GPU requests, tolerations, node pinning, affinity terms.

Pure helpers shared by the mutators and the rules; they never modify their input.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from webhook.engine import labels as labelsel

HOSTNAME = "kubernetes.io/hostname"


def child(parent: dict[str, Any], key: str, empty: type[dict[str, Any]] | type[list[Any]]) -> Any:
    """``parent[key]``, created empty when absent or null (null means absent in the API)."""
    if parent.get(key) is None:
        parent[key] = empty()
    return parent[key]


def path_to(parent: dict[str, Any], *keys: str) -> dict[str, Any]:
    """Nested dicts below ``parent``, created (or replacing null) as needed."""
    for key in keys:
        parent = child(parent, key, dict)
    return parent


def spec_of(template: dict[str, Any]) -> dict[str, Any]:
    spec = template.get("spec")
    return spec if isinstance(spec, dict) else {}


def pod_labels(template: dict[str, Any], selector: dict[str, Any]) -> dict[str, str]:
    """The labels the group's pods will carry: the template's plus those its controller adds."""
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.update(selector.get("matchLabels") or {})
    return labels


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                yield c


def _positive(quantity: Any) -> bool:
    if isinstance(quantity, bool):
        return False
    if isinstance(quantity, int | float):
        return quantity > 0
    if isinstance(quantity, str):
        try:
            return float(quantity) > 0
        except ValueError:
            return bool(quantity.strip("0 "))
    return False


def gpu_count(spec: dict[str, Any], resources: list[str]) -> int:
    """Whole GPUs requested by one pod (limits or requests of any container)."""
    wanted = _names(tuple(resources))
    total = 0
    for c in containers(spec):
        res = c.get("resources")
        if not isinstance(res, dict):
            continue
        for section in (res.get("limits"), res.get("requests")):
            if not isinstance(section, dict):
                continue
            # the section's few entries against the names: not every name against the section
            for name, value in section.items():
                if name in wanted and _positive(value):
                    try:
                        total = max(total, int(float(value)))
                    except (TypeError, ValueError, OverflowError):  # "1Ki"; "1e309" (stored by the API server,
                        total = max(total, 1)  # infinite as a float): a GPU request, counted as one
    return total


@functools.lru_cache(maxsize=64)
def _names(resources: tuple[str, ...]) -> frozenset[str]:
    return frozenset(resources)


def requests_gpu(spec: dict[str, Any], resources: list[str]) -> bool:
    return gpu_count(spec, resources) > 0


def tolerations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]


def tolerates(tol: dict[str, Any], key: str, value: str | None, effect: str) -> bool:
    """Whether toleration ``tol`` tolerates the taint ``key=value:effect``."""
    if tol.get("effect") and tol.get("effect") != effect:
        return False
    op = tol.get("operator") or "Equal"
    if not tol.get("key"):
        return op == "Exists"
    if tol.get("key") != key:
        return False
    return op == "Exists" or (tol.get("value") or "") == (value or "")


def required_node_terms(spec: dict[str, Any]) -> list[dict[str, Any]]:
    aff = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    return [t for t in aff.get("nodeSelectorTerms") or [] if isinstance(t, dict)]


def hosts_allowed_by_term(term: dict[str, Any]) -> set[str] | None:
    """Hostnames one nodeSelectorTerm allows; None when it does not restrict the hostname."""
    allowed: set[str] | None = None
    for expr in term.get("matchExpressions") or []:
        if isinstance(expr, dict) and expr.get("key") == HOSTNAME and expr.get("operator") == "In":
            values = set(expr.get("values") or [])
            allowed = values if allowed is None else allowed & values
    for expr in term.get("matchFields") or []:
        if isinstance(expr, dict) and expr.get("key") == "metadata.name" and expr.get("operator") == "In":
            values = set(expr.get("values") or [])
            allowed = values if allowed is None else allowed & values
    return allowed


def pod_affinity_terms(spec: dict[str, Any], kind: str, required: bool) -> list[dict[str, Any]]:
    """Affinity terms of ``kind`` ('podAffinity' or 'podAntiAffinity'); preferred ones unwrapped."""
    section = (spec.get("affinity") or {}).get(kind) or {}
    if required:
        return [t for t in section.get("requiredDuringSchedulingIgnoredDuringExecution") or [] if isinstance(t, dict)]
    out = []
    for weighted in section.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        if isinstance(weighted, dict) and isinstance(weighted.get("podAffinityTerm"), dict):
            out.append(weighted["podAffinityTerm"])
    return out


def term_selects(term: dict[str, Any], labels: dict[str, str], namespace: str | None = None) -> bool:
    """Whether an affinity term's labelSelector selects pods carrying ``labels`` in the pod's own
    namespace (``namespaces``/``namespaceSelector`` may point elsewhere).

    ``matchLabelKeys`` (the pod's own values for those keys) counts as selecting itself.
    """
    namespaces = term.get("namespaces") or []
    ns_selector = term.get("namespaceSelector")
    if namespaces and (namespace is None or namespace not in namespaces):
        return False
    if ns_selector and (ns_selector.get("matchLabels") or ns_selector.get("matchExpressions")):
        return False  # another set of namespaces (their labels are not known here): not self
    selector = term.get("labelSelector")
    if labelsel.matches(selector, labels):
        return True
    keys = term.get("matchLabelKeys") or []
    return bool(keys) and not selector and all(k in labels for k in keys)


def pinned_host(spec: dict[str, Any]) -> tuple[tuple[str, ...], str] | None:
    """(field steps below ``spec``, host) of a pin that leaves a pod a single node, or None:
    ``nodeName``, a hostname ``nodeSelector``, or required node affinity allowing one host."""
    if spec.get("nodeName"):
        return ("nodeName",), str(spec["nodeName"])
    host = (spec.get("nodeSelector") or {}).get(HOSTNAME)
    if host:
        return ("nodeSelector", HOSTNAME), str(host)
    terms = required_node_terms(spec)
    if terms:
        allowed: set[str] = set()
        for term in terms:  # terms are ORed: every one must restrict the host for a pin
            hosts = hosts_allowed_by_term(term)
            if hosts is None:
                return None
            allowed |= hosts
        if len(allowed) == 1:
            return ("affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"), next(iter(allowed))
    return None


def pinned_value(spec: dict[str, Any], key: str) -> str | None:
    """The single value of node label ``key`` a pod is confined to (``nodeName`` counts for the hostname):
    ``nodeSelector``, or required node affinity whose every term allows one value; None otherwise."""
    if key == HOSTNAME and spec.get("nodeName"):
        return str(spec["nodeName"])
    value = (spec.get("nodeSelector") or {}).get(key)
    if value:
        return str(value)
    allowed: set[str] = set()
    for term in required_node_terms(spec):  # ORed: every term must confine the key
        values = hosts_allowed_by_term(term) if key == HOSTNAME else label_values_allowed_by_term(term, key)
        if values is None:
            return None
        allowed |= values
    return next(iter(allowed)) if len(allowed) == 1 else None


def label_values_allowed_by_term(term: dict[str, Any], key: str) -> set[str] | None:
    """Values of node label ``key`` one nodeSelectorTerm allows; None when it does not restrict ``key``."""
    values: set[str] | None = None
    for expr in term.get("matchExpressions") or []:
        if isinstance(expr, dict) and expr.get("key") == key and expr.get("operator") == "In":
            vals = {str(v) for v in expr.get("values") or []}
            values = vals if values is None else values & vals
    return values
