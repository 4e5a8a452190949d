"""The policy model (``HAPolicy``), loading from YAML with file/line errors, and matching.

Policies are plain YAML under ``policies/``; the pydantic model below is the single source of
their JSON Schema (``policies/schema.json``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webhook.engine import labels as labelsel
from webhook.engine.ids import RULE_IDS
from webhook.engine.workloads import Kind

API_VERSION = "spreadguard.io/v1alpha1"
Mode = Literal["enforce", "warn", "dryrun"]
RuleId = Literal[tuple(RULE_IDS)]  # type: ignore[valid-type]  # built from the id list at import
MODE_STRICTNESS = {"dryrun": 0, "warn": 1, "enforce": 2}
MODE_LABEL = "spreadguard.io/mode"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LabelSelectorRequirement(_Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(_Strict):
    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class Selector(_Strict):
    """One way to select objects; every field given must hold (AND)."""

    kinds: list[str] = Field(
        default_factory=lambda: ["*"],
        description='Kind names ("PyTorchJob") or group/Kind ("batch.volcano.sh/Job"); "*" for all.',
    )
    namespaces: list[str] = Field(default_factory=lambda: ["*"], description="Namespace globs.")
    labelSelector: LabelSelector | None = Field(
        None, description="Matches the labels of the object or of any of its pod templates."
    )
    workloadClass: Literal["training", "serving", "any"] = "any"
    gpu: bool | None = Field(None, description="true: only objects requesting GPUs; false: only without.")
    minGroupSize: int = Field(0, ge=0, description="Only objects with a group of at least this many replicas.")


class MatchBlock(_Strict):
    any: list[Selector] = Field(default_factory=list, description="The object matches if any selector holds.")


class AntiAffinity(_Strict):
    enabled: bool = True
    mode: Literal["required", "preferred"] = "required"
    onShortage: Literal["preferred", "deny"] = Field(
        "preferred",
        description="When the cluster view shows fewer eligible nodes than replicas: inject preferred "
        "anti-affinity instead of required (and warn), or deny (rule unschedulable-spread).",
    )
    weight: int = Field(100, ge=1, le=100, description="Weight of the preferred term.")
    topologyKey: str = "kubernetes.io/hostname"
    minReplicas: int = Field(2, ge=1, description="Groups smaller than this are left alone.")


class SpreadConstraint(_Strict):
    topologyKey: str
    maxSkew: int = Field(1, ge=1)
    whenUnsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = "ScheduleAnyway"
    minReplicas: int = Field(2, ge=1)


class TeamTolerations(_Strict):
    enabled: bool = True
    taintKey: str = "spreadguard.io/team"
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"
    namespaceTeams: dict[str, str] = Field(
        default_factory=dict, description="Namespace to team, used when the workload has no team label."
    )
    borrowingPriorityClasses: list[str] = Field(
        default_factory=list,
        description="Pods of these priority classes tolerate every team's taint (borrow idle capacity), in the "
        "namespaces of borrowingNamespaces.",
    )
    borrowingNamespaces: list[str] = Field(
        default_factory=list,
        description="Namespace globs whose pods may borrow (use a borrowing priority class); elsewhere a borrowing "
        "priority class gets the own team's toleration only. Empty: nobody borrows.",
    )


class GangAffinity(_Strict):
    """Keep a synchronous gang compact (placement class gang): its pods on the fewest nodes, in one
    zone, preferably one rack/block. Every node a gang uses is one more failure that restarts it."""

    enabled: bool = True
    zoneKey: str = Field("topology.kubernetes.io/zone", description="Node label naming the zone.")
    zone: Literal["required", "preferred", "off"] = Field(
        "required",
        description="Pod affinity of the gang to one zone. required is injected only when the cluster view "
        "shows every zone the gang could start in can hold all of it; otherwise preferred, with the reason.",
    )
    blockKeys: list[str] = Field(
        default_factory=list,
        description="Rack/block labels to keep the gang in (preferred), e.g. cloud.google.com/gce-topology-block.",
    )
    compactHosts: bool = Field(
        True, description="Preferred pod affinity on kubernetes.io/hostname, so pods that fit together share nodes."
    )
    weight: int = Field(50, ge=1, le=100, description="Weight of each preferred term.")


class NodeLabelAvoid(_Strict):
    key: str
    values: list[str] = Field(min_length=1)


class Health(_Strict):
    """Nodes that GPU health checks flagged."""

    avoidTaints: list[str] = Field(
        default_factory=list, description="Taint keys never to tolerate (rule health-taint-toleration)."
    )
    avoidNodeLabels: list[NodeLabelAvoid] = Field(
        default_factory=list, description="Node labels to keep away from, with required node affinity NotIn."
    )


class JobFailurePolicy(_Strict):
    """A Job podFailurePolicy so drains and preemptions do not count as failures."""

    enabled: bool = True
    # the API's limits on onExitCodes values (pkg/apis/batch/validation): 1..255 values, none 0 with In
    deviceFailureExitCodes: list[Annotated[int, Field(ge=1, le=255)]] = Field(
        default_factory=list,
        max_length=255,
        description="Exit codes that mean a device failed: retried without counting.",
    )


PlacementClass = Literal["replicas", "elastic", "gang", "singleton"]


class PlacementOverride(_Strict):
    """Set the placement class of matching groups (first matching override wins)."""

    kinds: list[str] = Field(default_factory=lambda: ["*"], description='Kind names or group/Kind; "*" for all.')
    groups: list[str] = Field(
        default_factory=lambda: ["*"], description="Group name globs (Worker, workers, gpu-workers...)."
    )
    placement: PlacementClass


class Placement(_Strict):
    """How groups are classified (design.md, placement doctrine) and what that changes."""

    overrides: list[PlacementOverride] = Field(default_factory=list)
    workloadLabel: Literal["any", "spreadOnly", "ignore"] = Field(
        "spreadOnly",
        description="The label spreadguard.io/placement on a workload or pod template: any honours every value; "
        "spreadOnly honours only replicas/elastic (a label must not opt a group out of spreading); ignore.",
    )
    spreadGangs: bool = Field(
        False,
        description="Spread gangs over hosts like replicas (hostname anti-affinity) instead of compacting them.",
    )


class Mutations(_Strict):
    antiAffinity: AntiAffinity | None = None
    topologySpread: list[SpreadConstraint] = Field(default_factory=list)
    teamTolerations: TeamTolerations | None = None
    gangAffinity: GangAffinity | None = None
    health: Health | None = None
    jobFailurePolicy: JobFailurePolicy | None = None


class RuleConfig(_Strict):
    action: Literal["deny", "warn", "off"] = "deny"


class Exemptions(_Strict):
    """Who may skip rules or mutations with the annotation ``spreadguard.io/exempt: "<id>[,<id>...]"``."""

    allowedGroups: list[str] = Field(default_factory=list, description="Request groups that may grant exemptions.")
    allowedUsers: list[str] = Field(default_factory=list, description="Request users that may grant exemptions.")
    controllers: list[str] = Field(
        default_factory=lambda: ["system:serviceaccount:kube-system:*"],
        description="Username globs of controllers whose objects (with a controller ownerReference) inherit an "
        "exemption when the grant they carry (spreadguard.io/exempt-grant) verifies for that owner; add your "
        "operators, e.g. system:serviceaccount:kubeflow:*.",
    )
    requireReason: bool = Field(True, description="An exemption needs spreadguard.io/exempt-reason.")


class NamespaceMode(_Strict):
    namespaces: list[str] = Field(description="Namespace globs.")
    mode: Mode


class PolicySpec(_Strict):
    mode: Mode = "enforce"
    namespaceModes: list[NamespaceMode] = Field(
        default_factory=list, description="Mode for these namespaces instead of spec.mode (first match wins)."
    )
    allowNamespaceOverride: bool = Field(
        False,
        description="Let the namespace label spreadguard.io/mode loosen this policy; otherwise the label can "
        "only make it stricter.",
    )
    match: MatchBlock = Field(default_factory=MatchBlock)
    exclude: MatchBlock = Field(default_factory=MatchBlock)
    gpuResources: list[str] = Field(default_factory=lambda: ["nvidia.com/gpu", "amd.com/gpu"])
    mutate: Mutations = Field(default_factory=Mutations)
    placement: Placement = Field(default_factory=Placement)  # type: ignore[arg-type]
    rules: dict[RuleId, RuleConfig] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="Per rule id: its action."
    )
    onlyListedRules: bool = Field(
        False,
        description="Run only the rules listed in rules (a policy for one concern, e.g. team isolation); "
        "otherwise every rule runs with its default action unless listed.",
    )
    exemptions: Exemptions = Field(default_factory=Exemptions)  # type: ignore[arg-type]


class Metadata(_Strict):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    description: str = ""


class Policy(_Strict):
    apiVersion: Literal["spreadguard.io/v1alpha1"]
    kind: Literal["HAPolicy"]
    metadata: Metadata
    spec: PolicySpec

    @property
    def name(self) -> str:
        return self.metadata.name


# ------------------------------------------------------------------------------ loading


class PolicyError(Exception):
    """Every problem found in a policy directory, each as ``file:line: field: what is wrong``."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and sequence item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = LineDict()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = key_node.start_mark.line + 1
    mapping.line = node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> list[Any]:
    seq = LineList(loader.construct_object(child, deep=True) for child in node.value)
    seq.lines = [child.start_mark.line + 1 for child in node.value]
    seq.line = node.start_mark.line + 1
    return seq


class LineDict(dict[Any, Any]):
    line = 1

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.lines: dict[Any, int] = {}


class LineList(list[Any]):
    line = 1
    lines: list[int] = []


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def _line_of(doc: Any, loc: tuple[Any, ...]) -> int:
    """The line of the deepest node of ``loc`` present in ``doc``."""
    line = getattr(doc, "line", 1)
    cur = doc
    for step in loc:
        if isinstance(cur, LineDict) and step in cur:
            line = cur.lines.get(step, line)
            cur = cur[step]
        elif isinstance(cur, LineList) and isinstance(step, int) and step < len(cur):
            line = cur.lines[step]
            cur = cur[step]
        else:
            break
    return line


def _describe(err: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "literal_error":
        return f"{got!r} is not one of {ctx.get('expected', '').replace(' or ', ', ').replace(chr(39), '')}"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'].lower()} (got {got!r})" if not isinstance(got, dict | list) else err["msg"].lower()


def _type_name(value: Any) -> str:
    for base in (dict, list, str, bool, int, float):
        if isinstance(value, base):
            return base.__name__
    return "null" if value is None else type(value).__name__


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for step in loc:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def parse_policy_text(text: str, source: str) -> tuple[list[Policy], list[str]]:
    """Parse every HAPolicy document in ``text``; returns the policies and the problems found."""
    policies: list[Policy] = []
    problems: list[str] = []
    try:
        docs = list(yaml.load_all(text, Loader=_LineLoader))  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        return [], [f"{source}:{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            problems.append(f"{source}:{getattr(doc, 'line', 1)}: a policy must be a mapping, got {_type_name(doc)}")
            continue
        try:
            policies.append(Policy.model_validate(doc))
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(
                    s for s in err["loc"] if not (isinstance(s, str) and (s.startswith("function-") or s == "[key]"))
                )
                problems.append(f"{source}:{_line_of(doc, loc)}: {_loc(loc)}: {_describe(dict(err))}")
    return policies, problems


def load_policies(directory: str | Path) -> list[Policy]:
    """Load every ``*.yaml``/``*.yml`` policy in ``directory`` (not ``tests/``), sorted by name.

    Raises ``PolicyError`` listing every problem of every file, or when no policy is found.
    """
    root = Path(directory)
    if not root.is_dir():
        raise PolicyError([f"{root}: not a directory"])
    policies: list[Policy] = []
    problems: list[str] = []
    where: dict[str, list[str]] = {}  # policy name -> the files that define it
    files = sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}:1: cannot read: {exc}")
            continue
        found, errs = parse_policy_text(text, str(path))
        policies.extend(found)
        problems.extend(errs)
        for p in found:
            where.setdefault(p.name, []).append(str(path))
    for name, defined_in in where.items():
        if len(defined_in) > 1:  # name every file that defines it: the user has to pick one
            listed = ", ".join(
                f"{f} ({defined_in.count(f)} times)" if defined_in.count(f) > 1 else f
                for f in dict.fromkeys(defined_in)
            )
            problems.append(f"{defined_in[0]}: policy name {name!r} is used {len(defined_in)} times, in {listed}")
    if not problems and not policies:
        problems.append(f"{root}: no policy files (*.yaml) found")
    if problems:
        raise PolicyError(problems)
    return sorted(policies, key=lambda p: p.name)


# ----------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class Facts:
    """What matching needs to know about an object, computed once per evaluation."""

    kind: Kind
    namespace: str
    labels: list[dict[str, str]]  # the object's labels, then each pod template's
    workload_class: str
    gpu: bool
    largest_group: int


def _kind_matches(patterns: list[str], kind: Kind) -> bool:
    for pat in patterns:
        if pat == "*" or pat == kind.kind or pat == f"{kind.group}/{kind.kind}":
            return True
        if pat == f"core/{kind.kind}" and kind.group == "":
            return True
    return False


def _selector_holds(sel: Selector, facts: Facts) -> bool:
    if not _kind_matches(sel.kinds, facts.kind):
        return False
    if not any(fnmatch.fnmatchcase(facts.namespace, pat) for pat in sel.namespaces):
        return False
    if sel.workloadClass != "any" and sel.workloadClass != facts.workload_class:
        return False
    if sel.gpu is not None and sel.gpu != facts.gpu:
        return False
    if facts.largest_group < sel.minGroupSize:
        return False
    if sel.labelSelector is not None:
        selector = sel.labelSelector.model_dump()
        if not any(labelsel.matches(selector, labels) for labels in facts.labels):
            return False
    return True


def effective_mode(policy: Policy, namespace: str, namespace_labels: dict[str, str]) -> str:
    """The policy's mode in ``namespace``: its own namespaceModes first; then the namespace label
    ``spreadguard.io/mode``, which only makes the policy stricter unless allowNamespaceOverride."""
    spec = policy.spec
    for entry in spec.namespaceModes:
        if any(fnmatch.fnmatchcase(namespace, pat) for pat in entry.namespaces):
            return entry.mode
    label = namespace_labels.get(MODE_LABEL)
    if label not in MODE_STRICTNESS:
        return spec.mode
    if spec.allowNamespaceOverride:
        return label
    return max(spec.mode, label, key=MODE_STRICTNESS.__getitem__)


def matches(policy: Policy, facts: Facts) -> bool:
    """Whether ``policy`` applies: some ``match`` selector holds and no ``exclude`` selector does."""
    spec = policy.spec
    if not any(_selector_holds(s, facts) for s in spec.match.any):
        return False
    return not any(_selector_holds(s, facts) for s in spec.exclude.any)


def schema() -> dict[str, Any]:
    """JSON Schema of a policy file, for ``policies/schema.json`` and editors."""
    out = Policy.model_json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "spreadguard HAPolicy"
    return out
