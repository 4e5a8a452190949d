"""The workload model: each object is read once, through the one table of kinds, into its groups.

``read(obj, namespace)`` gives a ``Workload``: the kind, the object's identity and, per replica
group, the group (name, template path, replica count, selector, role, placement class) and its pod
template as submitted. Facts that depend on a policy setting (which resources count as GPUs) are
computed once per distinct setting and cached on the model. The engine hands the model to the
mutators and rules (as ``Target``s); nothing after ``read`` goes back to the kind table.

The model is read-only: mutators edit a working copy of the object, reached through each group's
template path (``Workload.templates_in(copy)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook.engine import podspec, workloads
from webhook.engine.policy import Facts
from webhook.engine.workloads import Group, Kind, Path


@dataclass(frozen=True)
class GroupModel:
    """One replica group and its pod template as submitted (read-only)."""

    group: Group
    template: dict[str, Any]


@dataclass(frozen=True)
class WorkloadFacts:
    """What matching and the rules need for one ``gpuResources`` setting."""

    policy: Facts  # for policy matching
    gpu_by_group: dict[Path, bool]  # by group path (no mutator touches resources)


@dataclass
class Workload:
    """An object read into its groups, once."""

    obj: dict[str, Any]  # as submitted (never modified)
    kind: Kind
    namespace: str
    name: str
    groups: list[GroupModel]
    workload_class: str
    _facts: dict[tuple[str, ...], WorkloadFacts] = field(default_factory=dict, repr=False)

    def facts(self, gpu_resources: list[str]) -> WorkloadFacts:
        """The facts under one ``gpuResources`` list; computed on first use, then cached."""
        key = tuple(gpu_resources)
        if key not in self._facts:
            self._facts[key] = self._compute(gpu_resources)
        return self._facts[key]

    def _compute(self, gpu_resources: list[str]) -> WorkloadFacts:
        gpu_by_group = {
            m.group.path: podspec.requests_gpu(podspec.spec_of(m.template), gpu_resources) for m in self.groups
        }
        gpu = any(gpu_by_group.values())
        if self.kind.kind == "TrainJob":  # no pod template: resources live in spec.trainer
            res = workloads.get(self.obj, ("spec", "trainer", "resourcesPerNode")) or {}
            gpu = podspec.requests_gpu({"containers": [{"resources": res}]}, gpu_resources)
        facts = Facts(
            kind=self.kind,
            namespace=self.namespace,
            labels=[_labels_of(self.obj)] + [_labels_of(m.template) for m in self.groups],
            workload_class=self.workload_class,
            gpu=gpu,
            largest_group=max((m.group.replicas or 1 for m in self.groups), default=0),
        )
        return WorkloadFacts(facts, gpu_by_group)

    def templates_in(
        self, copy: dict[str, Any], only: list[Group] | None = None
    ) -> list[tuple[Group, dict[str, Any], dict[str, Any]]]:
        """(group, template inside ``copy``, template as submitted) for each group: ``copy`` is a working copy
        of ``obj`` whose templates the mutators edit; the submitted one is the model's (read-only, not copied)."""
        out = []
        wanted = None if only is None else {g.path for g in only}  # by path: a list lookup made this n^2
        for m in self.groups:
            if wanted is not None and m.group.path not in wanted:
                continue
            template = workloads.pod_template(copy, m.group)
            if isinstance(template, dict):
                out.append((m.group, template, m.template))
        return out


def _labels_of(obj: dict[str, Any]) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def read(obj: Any, namespace: str = "", per_node_trusted: bool = True) -> Workload | None:
    """``obj`` as a workload model, or None for kinds spreadguard does not know.

    ``per_node_trusted``: see ``workloads.groups_of`` (the engine passes ``owners.trusted_per_node``).
    """
    if not isinstance(obj, dict):
        return None
    kind = workloads.kind_of(obj)
    if kind is None:
        return None
    raw_meta = obj.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    groups = [GroupModel(g, workloads.pod_template(obj, g)) for g in workloads.groups_of(obj, per_node_trusted)]
    templates = [m.template for m in groups if isinstance(m.template, dict)]
    return Workload(
        obj=obj,
        kind=kind,
        namespace=namespace or str(meta.get("namespace") or ""),
        name=str(meta.get("name") or meta.get("generateName") or ""),
        groups=groups,
        workload_class=workloads.workload_class(obj, kind, templates),
    )
