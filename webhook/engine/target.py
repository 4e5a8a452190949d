"""What a mutator or rule sees: one replica group of one object, under one policy."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from webhook.engine.classes import Gang
from webhook.engine.placement import ClusterView, WorkMeter
from webhook.engine.podspec import pod_labels, spec_of
from webhook.engine.workloads import PLACEMENT_OWNER_ANNOTATIONS, Group, Kind, format_path

if TYPE_CHECKING:
    from webhook.engine.policy import PolicySpec


@dataclass(frozen=True)
class Context:
    """The admission request around an object (all optional for offline use)."""

    operation: str = "CREATE"
    namespace: str = ""
    username: str = ""
    groups: tuple[str, ...] = ()
    dry_run: bool = False
    namespace_labels: dict[str, str] = field(default_factory=dict)
    old_object: dict[str, Any] | None = None
    cluster: ClusterView | None = None  # the caches' snapshot; None offline (spec-only decisions)
    force_mode: str | None = None  # every policy in this mode (audit: "what would enforce do")
    # the key that signs and checks exemption grants (webhook/engine/grants.py); None: nothing is inherited
    grant_key: bytes | None = field(default=None, repr=False)
    resource: str = ""  # the request's resource ("deployments"), for scale subresources
    subresource: str = ""  # "scale" when the object is an autoscaling/v1 Scale
    # label checks spent counting eligible nodes (placement.MAX_LABEL_CHECKS); ``evaluate`` gives each
    # evaluation its own
    meter: WorkMeter = field(default_factory=WorkMeter, repr=False, compare=False)


@dataclass
class Target:
    """One group's pod template inside the (mutable copy of the) object."""

    obj: dict[str, Any]
    kind: Kind
    group: Group
    template: dict[str, Any]  # the pod template dict inside ``obj``: mutators edit it in place
    workload_class: str
    team: str | None  # the namespace's team when it has one, else the workload's label (``decide._team``)
    gpu: bool
    policy_name: str
    policy: PolicySpec
    context: Context
    exempt: frozenset[str] = frozenset()  # rule and mutator ids this object is exempted from
    exempt_stamp: tuple[str, str] | None = None  # (exempt annotation, signed grant) to record in the template
    namespace_team: str | None = None  # the team the namespace belongs to (policy map or namespace label)
    namespace_team_source: str = ""  # where namespace_team comes from, for messages
    # the group's pod template as submitted (the model's, shared: read it, never write it); None: the
    # template is taken as submitted. What ``template`` has beyond it, spreadguard added in this evaluation
    # (an earlier policy's mutators), which a later policy must not stack on (``decide``'s module docstring)
    submitted: dict[str, Any] | None = field(default=None, repr=False)

    def may_borrow(self) -> bool:
        """Whether this group's pods may tolerate every team's taint: a borrowing priority class, in a
        namespace the policy lets borrow."""
        cfg = self.policy.mutate.teamTolerations
        if cfg is None or self.spec.get("priorityClassName") not in cfg.borrowingPriorityClasses:
            return False
        return any(fnmatch.fnmatchcase(self.namespace, pat) for pat in cfg.borrowingNamespaces)

    gang: Gang | None = None  # the whole gang this group belongs to (class gang, size known)
    info: list[str] = field(default_factory=list)  # what a mutator chose not to do, and why (warnings)

    @property
    def placement(self) -> str:
        """The group's placement class under this policy (overrides applied)."""
        return self.group.placement

    @property
    def spreads(self) -> bool:
        """Whether this group is spread over hosts: replicas and elastic groups, and gangs when the
        policy chooses ``placement.spreadGangs``."""
        cls = self.group.placement
        return cls in ("replicas", "elastic") or (cls == "gang" and self.policy.placement.spreadGangs)

    @property
    def spec(self) -> dict[str, Any]:
        return spec_of(self.template)

    @property
    def submitted_spec(self) -> dict[str, Any]:
        """The pod spec of the group as submitted (read-only)."""
        return spec_of(self.template if self.submitted is None else self.submitted)

    @property
    def namespace(self) -> str:
        return self.context.namespace or (self.obj.get("metadata") or {}).get("namespace") or ""

    @property
    def labels(self) -> dict[str, str]:
        """Labels the group's pods will carry (template labels and the controller's)."""
        return pod_labels(self.template, self.group.selector)

    def path(self, *steps: Any) -> str:
        """Field path below this template, as users read it: ``spec.x.y[0]``."""
        full = (*self.group.path, *steps)
        return format_path(full) if full else "(object)"

    @property
    def placement_owner(self) -> str:
        """The annotation by which JobSet or Kueue already decide this group's topology, or ""."""
        for meta in (self.obj.get("metadata") or {}, self.template.get("metadata") or {}):
            ann = meta.get("annotations") or {}
            for key in PLACEMENT_OWNER_ANNOTATIONS:
                if key in ann:
                    return f"{key}={ann[key]}"
        return ""

    @property
    def multi(self) -> bool:
        """The group has more than one replica (known at admission)."""
        return self.group.replicas is not None and self.group.replicas > 1

    @property
    def describe(self) -> str:
        n = self.group.replicas
        if n is None:
            return f"group {self.group.name}"
        return f"group {self.group.name} ({n} replica{'s' if n != 1 else ''})"


@dataclass(frozen=True)
class Finding:
    """A rule's verdict on one field: where and why (the message says why it matters and the fix).

    ``advisory``: a warning whatever the rule's action (the rule says when: e.g. weak-spread against a
    policy constraint that is itself only a preference)."""

    path: str
    message: str
    advisory: bool = False
