"""``evaluate(obj, context, policies) -> Decision``: the one pure function behind the server, the
audit command and the policy tests. No HTTP, no cluster calls.

How several matching policies combine: policies run in name order. Mutations of ``enforce`` and
``warn`` policies apply one after another on the same copy; each mutator skips what is already
there, so a later policy never duplicates or rewrites an earlier one's addition. Each target also
carries its group's template as submitted (``Target.submitted``, the model's, never copied or
written): spreading mutators tell the tenant's own terms (judged for strength: a weak one does not
count) from an earlier policy's additions (what the copy has beyond it: these always count).
Rule findings are collected from every policy; a finding denies when its policy is in ``enforce`` mode and the rule's
action is ``deny``; otherwise it becomes a warning. ``dryrun`` policies change nothing: what they
would add and reject is reported as warnings and audit annotations.
"""

from __future__ import annotations

import json
import marshal
from dataclasses import dataclass, field, replace
from typing import Any

import jsonpatch

from webhook.engine import classes, exemptions, grants, model, owners, podspec, scale, workloads
from webhook.engine.ids import ISOLATION_RULE_IDS
from webhook.engine.model import Workload, WorkloadFacts
from webhook.engine.mutators import FIELDS, MUTATOR_IDS, MUTATORS
from webhook.engine.placement import WorkMeter
from webhook.engine.policy import Policy, effective_mode, matches
from webhook.engine.rules import EXEMPTION_RULES, RULE_IDS, RULES
from webhook.engine.target import Context, Finding, Target
from webhook.engine.workloads import Group, Kind, Path

__all__ = ["Context", "Decision", "Violation", "evaluate"]

ACTING_OPERATIONS = ("CREATE", "UPDATE")
# A per-node kind (``Kind.per_node``: DaemonSet) runs one pod on every node its template lets it use, by design:
# nothing spreads, compacts or adds a failure policy to it. Judged: what decides which nodes it may use (team
# isolation); added: its own team's toleration, so it can run on its team's nodes as every other pod of the
# namespace can (it only ever widens it to nodes the namespace's team owns).
PER_NODE_RULES = frozenset(ISOLATION_RULE_IDS)
PER_NODE_MUTATORS = frozenset({"team-tolerations"})


@dataclass(frozen=True)
class Violation:
    rule: str
    policy: str
    path: str
    message: str

    def text(self) -> str:
        return f"[{self.rule}] {self.path}: {self.message} (policy {self.policy})"


@dataclass
class Decision:
    """What spreadguard decides for one object."""

    patch: list[dict[str, Any]] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)  # the ones that deny
    advisories: list[Violation] = field(default_factory=list)  # findings that did not deny
    notes: list[str] = field(default_factory=list)  # what the patch adds, one line per change
    dryrun: list[str] = field(default_factory=list)  # what dryrun policies would add
    info: list[str] = field(default_factory=list)  # how the kind is handled, when it is special
    policies: list[str] = field(default_factory=list)  # names of the policies that matched
    modes: dict[str, str] = field(default_factory=dict)  # the mode each matched policy ran in
    exemptions: list[str] = field(default_factory=list)  # exemptions granted, with who and why
    dryrun_patch: list[dict[str, Any]] = field(default_factory=list)  # what dryrun policies would add
    mutated: dict[str, Any] | None = None  # the object after the patch

    @property
    def allowed(self) -> bool:
        """Admitted unless a finding denies."""
        return not self.violations

    @property
    def warnings(self) -> list[str]:
        """Everything a user should read besides the denial: findings, dryrun changes, notes."""
        return [v.text() for v in self.advisories] + self.dryrun + self.info


def namespace_team(policy: Policy, ctx: Context) -> tuple[str | None, str]:
    """The team that owns the request's namespace and where that comes from: the policy's namespace
    map, else the namespace's own ``spreadguard.io/team`` label; (None, "") when it has none."""
    cfg = policy.spec.mutate.teamTolerations
    if cfg and ctx.namespace in cfg.namespaceTeams:
        return cfg.namespaceTeams[ctx.namespace], f"policy {policy.name} namespaceTeams"
    label = ctx.namespace_labels.get(workloads.TEAM_LABEL)
    if isinstance(label, str) and label:
        return label, f"namespace label {workloads.TEAM_LABEL}"
    return None, ""


def _team(obj: dict[str, Any], template: dict[str, Any], ns_team: str | None) -> str | None:
    """Team: the namespace's (authoritative); only where the namespace has none, the pod template's
    label, then the object's label."""
    if ns_team:
        return ns_team
    for meta in (template.get("metadata"), obj.get("metadata")):
        labels = meta.get("labels") if isinstance(meta, dict) else None
        if isinstance(labels, dict) and labels.get(workloads.TEAM_LABEL):
            return str(labels[workloads.TEAM_LABEL])
    return None


def _touched(group: Group, obj: dict[str, Any], ctx: Context) -> bool:
    """On UPDATE, whether the user changed this group's template (only then do we act on it).

    Mutating an unchanged template would fail on immutable templates (Job, JobSet) and rewrite
    workloads created before spreadguard; their pods still get the Pod backstop.
    """
    if ctx.operation != "UPDATE" or ctx.old_object is None:
        return True
    if not group.path:  # a Pod's spec is immutable after creation
        return False
    return bool(workloads.get(ctx.old_object, group.path) != workloads.get(obj, group.path))


def _added_tolerations(obj: dict[str, Any], workload: Workload, ctx: Context) -> set[str] | None:
    """On a Pod UPDATE: the paths of tolerations the update adds (Kubernetes lets tolerations be added to an
    existing pod; nothing else about its placement can change). None for anything else."""
    if ctx.operation != "UPDATE" or ctx.old_object is None or workload.kind.kind != "Pod" or workload.kind.group:
        return None
    # compared by canonical JSON in a set: linear, however many tolerations a request carries
    old = {json.dumps(t, sort_keys=True) for t in podspec.tolerations(podspec.spec_of(ctx.old_object))}
    new = podspec.tolerations(podspec.spec_of(obj))
    return {
        workloads.format_path(("spec", "tolerations", i))
        for i, tol in enumerate(new)
        if json.dumps(tol, sort_keys=True) not in old
    }


def _rescaled(workload: Workload, ctx: Context) -> set[Path]:
    """On UPDATE, the groups whose replica count changed (``kubectl scale`` through the object, an
    apply that only raises ``replicas``/``parallelism``): judged against pinning and schedulability
    like a new group, though nothing is added to their (unchanged) templates."""
    if ctx.operation != "UPDATE" or ctx.old_object is None:
        return set()
    old = model.read(ctx.old_object, workload.namespace)
    if old is None:
        return set()
    before = {m.group.path: m.group.replicas for m in old.groups}
    return {
        m.group.path for m in workload.groups if m.group.path in before and before[m.group.path] != m.group.replicas
    }


# Pod template fields the API server lets change on UPDATE, by the kind's update rule:
# batch/v1 Job while suspended and never started (validatePodTemplateUpdate with
# AllowMutableSchedulingDirectives); JobSet while suspended (its webhook's ValidateUpdate).
SCHEDULING_DIRECTIVES = {
    workloads.UPDATE_JOB: frozenset({"labels", "annotations", "nodeSelector", "nodeAffinity", "tolerations"}),
    workloads.UPDATE_JOBSET: frozenset({"labels", "annotations", "nodeSelector", "tolerations"}),
}


def update_scope(kind: Kind, obj: dict[str, Any], ctx: Context) -> frozenset[str] | None:
    """The mutator ids allowed to run on this request; None: all (a CREATE, or templates are mutable).
    A per-node kind (DaemonSet) only ever gets ``PER_NODE_MUTATORS``.

    A Job's template and podFailurePolicy are immutable; while Kueue holds a Job suspended it may
    change the scheduling directives, and so may spreadguard (team tolerations, health avoidance).
    """
    if kind.per_node:
        return PER_NODE_MUTATORS  # templates are mutable (UPDATE_TEMPLATE): the same on CREATE and UPDATE
    if ctx.operation != "UPDATE" or kind.update == workloads.UPDATE_TEMPLATE:
        return None
    old = ctx.old_object or {}
    allowed: frozenset[str] = frozenset()
    if kind.update == workloads.UPDATE_JOB:
        if workloads.get(old, ("spec", "suspend")) is True and not workloads.get(old, ("status", "startTime")):
            allowed = SCHEDULING_DIRECTIVES[kind.update]
    elif kind.update == workloads.UPDATE_JOBSET:
        if workloads.get(old, ("spec", "suspend")) is True or workloads.get(obj, ("spec", "suspend")) is True:
            allowed = SCHEDULING_DIRECTIVES[kind.update]
    return frozenset(m for m, fields in FIELDS.items() if fields <= allowed)


def _clone(value: Any) -> Any:
    """A copy of JSON data; marshal does it in C (several times faster than ``copy.deepcopy``)."""
    try:
        return marshal.loads(marshal.dumps(value))
    except ValueError:  # not plain JSON data (e.g. a YAML timestamp read by the audit): copy by hand
        if isinstance(value, dict):
            return {k: _clone(v) for k, v in value.items()}
        if isinstance(value, list):
            return [_clone(v) for v in value]
        return value


SHARED_METADATA = ("managedFields",)  # never written by a mutator: shared with the original, not copied
# What the mutators write inside a pod template's spec (mutators/*.py); the template's metadata is copied
# whole. Everything else in the object (containers, volumes, status...) is shared with the original: it is
# never written, and shared parts make the copy and the final diff cheap (``==`` on the same object is
# immediate). ``tests/engine/test_properties.py`` checks on every case and captured fixture that evaluating
# leaves the input as it was.
TEMPLATE_SPEC_WRITES = ("affinity", "tolerations", "topologySpreadConstraints")


def _working_copy(obj: dict[str, Any], workload: Workload | None = None) -> dict[str, Any]:
    """What the mutators may edit: the object's metadata and, for each group of ``workload``, the path to its
    pod template, the template's metadata and the parts of its spec they write, copied; the rest shared.
    Without ``workload``: ``spec`` and ``metadata`` copied whole."""
    out = dict(obj)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        # one copy of everything copied (each marshal call has a fixed cost), then the metadata keys in order
        copied = {k: v for k, v in meta.items() if k not in SHARED_METADATA}
        new_meta = _clone(copied)
        out["metadata"] = {k: meta[k] if k in SHARED_METADATA else new_meta[k] for k in meta}
    spec = obj.get("spec")
    if workload is None:
        if isinstance(spec, dict):
            out["spec"] = _clone(spec)
        return out
    fresh = {id(out)}  # containers made here: written freely, never copied twice
    for m in workload.groups:
        template = _own_path(out, m.group.path, fresh)
        if template is None:
            continue
        if m.group.path and isinstance(template.get("metadata"), dict):
            template["metadata"] = _clone(template["metadata"])
        tspec = template.get("spec")
        if isinstance(tspec, dict) and id(tspec) not in fresh:
            tspec = dict(tspec)
            for key in TEMPLATE_SPEC_WRITES:
                if isinstance(tspec.get(key), dict | list):
                    tspec[key] = _clone(tspec[key])
            template["spec"] = tspec
            fresh.add(id(tspec))
    return out


def _own_path(root: dict[str, Any], path: Path, fresh: set[int]) -> dict[str, Any] | None:
    """The dict at ``path`` in ``root``, with every container from ``root`` to it (itself included) a shallow
    copy of the shared one, so that writing to it or replacing its members leaves the original alone."""
    cur: Any = root
    for step in path:
        if isinstance(step, int):
            if not isinstance(cur, list) or not 0 <= step < len(cur):
                return None
        elif not isinstance(cur, dict) or step not in cur:
            return None
        nxt = cur[step]
        if isinstance(nxt, dict | list) and id(nxt) not in fresh:
            nxt = dict(nxt) if isinstance(nxt, dict) else list(nxt)
            fresh.add(id(nxt))
            cur[step] = nxt
        cur = nxt
    return cur if isinstance(cur, dict) else None


def _diff(before: dict[str, Any], after: dict[str, Any], pointer: str = "") -> list[dict[str, Any]]:
    """RFC 6902 patch from ``before`` to ``after``. Walks dicts with C-level ``==`` to the members that
    differ and lets ``jsonpatch`` diff only those, instead of the whole object."""
    ops: list[dict[str, Any]] = []
    for key, value in after.items():
        if key in before and before[key] == value:
            continue
        path = f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}"
        old = before.get(key)
        if key not in before:
            ops.append({"op": "add", "path": path, "value": value})
        elif isinstance(old, dict) and isinstance(value, dict):
            ops.extend(_diff(old, value, path))
        elif isinstance(old, list) and isinstance(value, list) and len(value) >= len(old):
            ops.extend(_diff_list(old, value, path))
        else:
            ops.extend(_jsonpatch(old, value, path))
    ops.extend(
        {"op": "remove", "path": f"{pointer}/{k.replace('~', '~0').replace('/', '~1')}"}
        for k in before
        if k not in after
    )
    return ops


def _diff_list(before: list[Any], after: list[Any], pointer: str) -> list[dict[str, Any]]:
    """A list that kept its length or grew (mutators only add): changed objects are diffed in place, new
    elements appended by index; anything else (a scalar changed in place) goes to ``jsonpatch``."""
    ops: list[dict[str, Any]] = []
    for i, old in enumerate(before):
        new = after[i]
        if old == new:
            continue
        if not (isinstance(old, dict) and isinstance(new, dict)):
            return _jsonpatch(before, after, pointer)
        ops.extend(_diff(old, new, f"{pointer}/{i}"))
    ops.extend({"op": "add", "path": f"{pointer}/{i}", "value": after[i]} for i in range(len(before), len(after)))
    return ops


def _jsonpatch(before: Any, after: Any, pointer: str) -> list[dict[str, Any]]:
    return [
        {**op, "path": pointer + op["path"], **({"from": pointer + op["from"]} if "from" in op else {})}
        for op in jsonpatch.make_patch(before, after).patch
    ]


def _classes(workload: Workload, policy: Policy, info: list[str] | None = None) -> dict[Path, str]:
    """Each group's placement class under ``policy`` (label and overrides applied); none for a per-node kind,
    which is never placed by class (a placement label on it is not read)."""
    out: dict[Path, str] = {}
    if workload.kind.per_node:
        return out
    for m in workload.groups:
        cls, note = classes.resolve(m.group, workload.obj, m.template, workload.kind, policy.spec)
        out[m.group.path] = cls
        if note and info is not None and note not in info:
            info.append(note)
    return out


def _placed(group: Group, placement: dict[Path, str]) -> Group:
    """``group`` with its class under the policy (the same frozen object when that changes nothing)."""
    cls = placement.get(group.path, group.placement)
    return group if cls == group.placement else replace(group, placement=cls)


@dataclass(frozen=True)
class _Pass:
    """One policy's pass over a workload: what its mutate and judge steps share, worked out once."""

    policy: Policy
    ctx: Context
    facts: WorkloadFacts
    exempt: _Exempt
    placement: dict[Path, str]  # each group's class under the policy
    gangs: dict[Path, classes.Gang]  # of the groups as submitted (their templates in ``workload.groups``)
    team: tuple[str | None, str]  # ``namespace_team``: the namespace's team and where that comes from


def _pass(workload: Workload, policy: Policy, ctx: Context, exempt: _Exempt, placement: dict[Path, str]) -> _Pass:
    everyone = [(m.group, m.template) for m in workload.groups]
    gpu_resources = policy.spec.gpuResources
    return _Pass(
        policy=policy,
        ctx=ctx,
        facts=workload.facts(gpu_resources),
        exempt=exempt,
        placement=placement,
        gangs=classes.gangs(everyone, placement, gpu_resources, workload.name),
        team=namespace_team(policy, ctx),
    )


def _targets(copy: dict[str, Any], workload: Workload, only: list[Group] | None, run: _Pass) -> list[Target]:
    """One target per group (``only`` those, when given), bound to its template inside ``copy``;
    each group carries its class under the pass's policy, and gang members their whole gang."""
    ns_team, source = run.team
    policy = run.policy
    return [
        Target(
            obj=copy,
            kind=workload.kind,
            group=_placed(group, run.placement),
            template=template,
            workload_class=workload.workload_class,
            team=_team(copy, template, ns_team),
            gpu=run.facts.gpu_by_group.get(group.path, False),
            policy_name=policy.name,
            policy=policy.spec,
            context=run.ctx,
            exempt=run.exempt.ids,
            exempt_stamp=run.exempt.stamp,
            namespace_team=ns_team,
            namespace_team_source=source,
            gang=run.gangs.get(group.path),
            submitted=submitted if isinstance(submitted, dict) else None,
        )
        for group, template, submitted in workload.templates_in(copy, only)
    ]


def _judged(mutated: dict[str, Any], workload: Workload, touched: list[Group], run: _Pass) -> list[Target]:
    """Targets for the rules: every group as its pods will be. Groups left untouched on UPDATE get what
    the Pod backstop will add to their pods (team tolerations, health avoidance...) in a scratch copy,
    so that e.g. the eligible nodes of a rescaled group count its team's nodes."""
    if len(touched) == len(workload.groups):
        return _targets(mutated, workload, None, run)
    scratch = _working_copy(mutated, workload)
    changed = {g.path for g in touched}
    untouched = [m.group for m in workload.groups if m.group.path not in changed]
    scope = PER_NODE_MUTATORS if workload.kind.per_node else None
    _mutate(_targets(scratch, workload, untouched, run), scope, [])
    return _targets(scratch, workload, None, run)


def _mutate(targets: list[Target], scope: frozenset[str] | None, info: list[str]) -> list[str]:
    """Run the mutators (only those in ``scope`` when given) on each target; returns their notes and
    adds what they chose not to do to ``info``."""
    notes = []
    for t in targets:
        for mutator in MUTATORS:
            if mutator.ID in t.exempt or (scope is not None and mutator.ID not in scope):
                continue
            note = mutator.mutate(t)
            if note:
                notes.append(f"{mutator.ID}: {note}")
        info.extend(i for i in t.info if i not in info)
    return notes


def _action(policy: Policy, rule_id: str, default: str) -> str:
    cfg = policy.spec.rules.get(rule_id)
    if cfg is None and policy.spec.onlyListedRules:
        return "off"
    return cfg.action if cfg else default


# The rules each policy runs, with their actions, by (policy, per-node kind): worked out once per loaded
# policy, not on every request. Keyed by id() with the policy kept in the value (a reloaded set has new
# objects, and an id is only reused once its object is gone); cleared when it grows past a few reloads.
_ACTIVE: dict[tuple[int, bool], tuple[Policy, list[tuple[str, Any, str]]]] = {}
_ACTIVE_MAX = 256


def _active_rules(policy: Policy, per_node: bool) -> list[tuple[str, Any, str]]:
    """(rule id, rule module, action) of the rules ``policy`` runs, in ``RULES`` order; none set to ``off``,
    and on a per-node kind only the isolation rules."""
    key = (id(policy), per_node)
    hit = _ACTIVE.get(key)
    if hit is not None and hit[0] is policy:
        return hit[1]
    active = []
    for rule_id, rule in RULES.items():
        action = _action(policy, rule_id, rule.DEFAULT_ACTION)
        if action != "off" and not (per_node and rule_id not in PER_NODE_RULES):
            active.append((rule_id, rule, action))
    if len(_ACTIVE) >= _ACTIVE_MAX:
        _ACTIVE.clear()
    _ACTIVE[key] = (policy, active)
    return active


def _check(targets: list[Target], policy: Policy, kind: Kind) -> list[tuple[str, str, Target, Finding]]:
    """(rule id, action, target, finding) for every rule that fires; rules set to ``off`` are skipped, and on a
    per-node kind every rule but the isolation rules."""
    out: list[tuple[str, str, Target, Finding]] = []
    for rule_id, rule, action in _active_rules(policy, kind.per_node):
        for t in targets:
            if rule_id not in t.exempt:
                out.extend((rule_id, action, t, f) for f in rule.check(t))
    return out


@dataclass
class _Run:
    """Findings of every policy, keyed by (rule, path): a denying one wins over a warning."""

    findings: dict[tuple[str, str], tuple[bool, Violation]] = field(default_factory=dict)

    def add(self, rule_id: str, policy: str, path: str, message: str, denies: bool) -> None:
        key = (rule_id, path)
        if key not in self.findings or (denies and not self.findings[key][0]):
            self.findings[key] = (denies, Violation(rule_id, policy, path, message))


@dataclass(frozen=True)
class _Exempt:
    """What an object is exempted from under one policy, and the grant to record in its pod templates."""

    ids: frozenset[str] = frozenset()
    stamp: tuple[str, str] | None = None  # (the exempt annotation, its grant) for exemption-inheritance


def _exemption(
    obj: dict[str, Any], workload: Workload, policy: Policy, ctx: Context, mode: str, run: _Run, decision: Decision
) -> _Exempt:
    """The ids this object is exempted from under ``policy``; records grants and refusals."""
    templates = [m.template for m in workload.groups if m.group.path and isinstance(m.template, dict)]
    req = exemptions.requested(obj, templates)
    if req is None:
        return _Exempt()
    unknown = sorted(req.ids - set(RULE_IDS) - set(MUTATOR_IDS))
    if unknown:
        decision.info.append(
            f"{exemptions.EXEMPT} names unknown id(s) {', '.join(unknown)}; known: {', '.join(RULE_IDS + MUTATOR_IDS)}"
        )
    verdict = exemptions.authorize(req, policy, ctx, obj, workload.kind)
    if verdict.granted:
        decision.exemptions.append(
            f"{policy.name}: {','.join(sorted(req.ids))} granted to {verdict.how}"
            + (f" (reason: {req.reason})" if req.reason else "")
        )
        stamp = None
        # a per-node kind's pods are never judged: nothing to pass on (exemption-inheritance does not run on it)
        if verdict.stamp and not workload.kind.per_node and not exemptions.deployment_replicaset(obj, workload.kind):
            name = str((obj.get("metadata") or {}).get("name") or "")
            if ctx.grant_key and name:
                grant = grants.sign(
                    ctx.grant_key, workload.namespace, workload.kind.group, workload.kind.kind, name, req.ids
                )
                stamp = (req.raw, grant)
            else:
                why = "no grant key is configured" if not ctx.grant_key else "the object has no name yet"
                decision.info.append(f"exemption not passed on to the pods of {workload.kind.kind}: {why}")
        return _Exempt(req.ids, stamp)
    for rule_id, rule in EXEMPTION_RULES.items():
        action = _action(policy, rule_id, rule.DEFAULT_ACTION)
        if action != "off" and rule.applies(set(req.ids)):
            msg = exemptions.message(req, verdict, policy)
            denies = mode == "enforce" and action == "deny" and not verdict.advisory
            run.add(rule_id, policy.name, exemptions.PATH, msg, denies)
    return _Exempt()


def evaluate(obj: dict[str, Any], context: Context | None, policies: list[Policy]) -> Decision:
    """Decide what to add to ``obj`` and whether to admit it, under ``policies``.

    Unknown kinds, DELETE and CONNECT pass untouched. ``obj`` is never modified.
    """
    ctx = replace(context or Context(), meter=WorkMeter())  # this evaluation's own budget of label checks
    decision = Decision(mutated=obj)
    if ctx.operation not in ACTING_OPERATIONS:
        return decision
    if scale.is_scale(obj):
        decision.info.extend(scale.judge(obj, ctx))
        return decision
    workload = model.read(obj, ctx.namespace, owners.trusted_per_node(obj, ctx))
    if workload is None:
        return decision
    namespace = workload.namespace
    if workload.kind.note:
        decision.info.append(workload.kind.note.format(name=workload.name))

    view = ctx.cluster
    if view is not None:
        if not ctx.namespace_labels and namespace in view.namespaces:
            ctx = replace(ctx, namespace_labels=view.namespaces[namespace])
        if not view.synced:
            decision.info.append(f"cluster view not synced ({view.error or 'starting'}): decided from the spec alone")

    mutated = _working_copy(obj, workload)
    touched = [m.group for m in workload.groups if _touched(m.group, obj, ctx)]
    added = _added_tolerations(obj, workload, ctx)  # a Pod UPDATE: only the isolation of new tolerations
    judged = {g.path for g in touched} | _rescaled(workload, ctx)  # whose findings may deny
    scope = update_scope(workload.kind, obj, ctx)
    run = _Run()
    placement_owners: set[str] = set()

    for policy in sorted(policies, key=lambda p: p.name):
        facts = workload.facts(policy.spec.gpuResources)
        if not matches(policy, facts.policy):
            continue
        mode = ctx.force_mode or effective_mode(policy, namespace, ctx.namespace_labels)
        decision.policies.append(policy.name)
        decision.modes[policy.name] = mode
        exempt = _exemption(obj, workload, policy, ctx, mode, run, decision)
        this = _pass(workload, policy, ctx, exempt, _classes(workload, policy, decision.info))
        if mode == "dryrun":
            scratch = _working_copy(mutated, workload)
            would = _mutate(_targets(scratch, workload, touched, this), scope, [])
            decision.dryrun.extend(f"dryrun {policy.name}: would add {n}" for n in would)
            decision.dryrun_patch.extend(_diff(mutated, scratch))
        else:
            targets = _targets(mutated, workload, touched, this)
            placement_owners |= {t.placement_owner for t in targets if t.placement_owner}
            decision.notes.extend(_mutate(targets, scope, decision.info))
        for rule_id, action, target, f in _check(_judged(mutated, workload, touched, this), policy, workload.kind):
            if added is None:
                denies = mode == "enforce" and action == "deny" and target.group.path in judged
            elif rule_id in ISOLATION_RULE_IDS:
                denies = mode == "enforce" and action == "deny" and f.path in added
            else:
                continue  # a pod's other fields cannot change after creation: nothing new to judge
            run.add(rule_id, policy.name, f.path, f.message, denies and not f.advisory)

    decision.info.extend(
        f"zone/rack placement left to {o} (no spread or gang affinity added)" for o in sorted(placement_owners)
    )
    if ctx.meter.exhausted:
        decision.info.append(
            "node selection too large to check node by node against the cluster view: nodes were counted by "
            "their taints and GPUs (the choice of required or preferred spreading may be optimistic)"
        )
    for denies, v in run.findings.values():
        (decision.violations if denies else decision.advisories).append(v)
    decision.patch = _diff(obj, mutated)
    decision.mutated = mutated
    return decision
