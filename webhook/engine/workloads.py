"""What each workload kind looks like: where its pod templates are, how many replicas each
group has, and which labels identify one group's pods.

This is the only module that knows kinds. Everything is data (``KINDS``, ``POD_GROUP_LABELS``);
``groups_of(obj)`` turns an object into its replica groups for the mutators and rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str | int, ...]

# Placement classes (design.md, "Placement doctrine"): what one node failure does to a group.
REPLICAS = "replicas"  # takes the share of the group on that node; the rest keeps working
ELASTIC = "elastic"  # the job shrinks and continues if enough workers remain
GANG = "gang"  # synchronous: the whole gang restarts, whichever node failed
SINGLETON = "singleton"  # a sole coordinator: the whole job stops
PLACEMENT_CLASSES = (REPLICAS, ELASTIC, GANG, SINGLETON)
PLACEMENT_LABEL = "spreadguard.io/placement"

GROUP_LABEL = "spreadguard.io/group"
TEAM_LABEL = "spreadguard.io/team"
WORKLOAD_LABEL = "spreadguard.io/workload"


@dataclass(frozen=True)
class Group:
    """One set of interchangeable pods: the replicas that must not share a node."""

    name: str  # group name inside the workload: "Worker", "workers", "gpu-workers", "pods"
    path: Path  # JSON path of the pod template (or of the Pod itself: metadata + spec)
    replicas: int | None  # None: not knowable at admission (a Pod of a controller)
    selector: dict[str, Any]  # LabelSelector matching this group's pods
    add_labels: dict[str, str] = field(default_factory=dict)  # labels spreadguard must add
    role: str = ""  # "head", "launcher", "master", "chief" ... or "" for plain replicas
    job_path: Path | None = None  # the batch JobSpec holding this template (Job, CronJob, JobSet)
    gang_selector: dict[str, Any] = field(default_factory=dict)  # every pod of the job, when it is a gang
    placement: str = REPLICAS  # the placement class (PLACEMENT_CLASSES): what one node failure does to it
    # pod label keys whose value (unknown at admission) splits ``gang_selector`` into one gang each
    # (LeaderWorkerSet: every group of leader + workers is its own gang): ``matchLabelKeys``
    gang_keys: tuple[str, ...] = ()
    surge: int = 0  # extra pods of this group during a rolling update (Deployment maxSurge)

    @property
    def path_str(self) -> str:
        return format_path(self.path)


@dataclass(frozen=True)
class TemplateSet:
    """A family of pod templates inside one kind.

    ``each`` yields ``(group_name, path, node)`` for every template in the object, where
    ``node`` is the dict holding ``replicas``-like fields; ``replicas(obj, node)`` counts pods;
    ``selector(obj, group_name, node)`` gives the LabelSelector of the pods the controller makes.
    """

    each: Callable[[dict[str, Any]], Iterator[tuple[str, Path, dict[str, Any]]]]
    replicas: Callable[[dict[str, Any], dict[str, Any]], int | None]  # None: not knowable at admission
    selector: Callable[[dict[str, Any], str, dict[str, Any]], dict[str, Any]]
    add_group_label: bool = False  # pod names unknown at admission: spreadguard labels the group
    role: Callable[[str], str] = lambda name: ""
    job_spec: bool = False  # each template sits directly in a batch JobSpec (``path[:-1]``)
    gang: Callable[[dict[str, Any]], dict[str, str]] | None = None  # labels of every pod of a training gang
    # the placement class of one group: (object, group name, node holding its replicas) -> class
    placement: Callable[[dict[str, Any], str, dict[str, Any]], str] = lambda _o, _g, _n: REPLICAS
    gang_keys: tuple[str, ...] = ()  # see Group.gang_keys
    # extra pods a rolling update runs beside the replicas (Deployment maxSurge): (object, replicas) -> pods
    surge: Callable[[dict[str, Any], int], int] = lambda _o, _r: 0


# What the API server lets change on UPDATE (read in its validation code; see UPDATE_SCOPES):
UPDATE_TEMPLATE = "template"  # pod templates are mutable (Deployment, StatefulSet, CronJob, CRDs)
UPDATE_JOB = "job"  # batch/v1 Job: template and podFailurePolicy immutable; scheduling directives
# (labels, annotations, nodeSelector, node affinity, tolerations, schedulingGates) only while suspended
# and never started (pkg/apis/batch/validation: validatePodTemplateUpdate, AllowMutableSchedulingDirectives)
UPDATE_JOBSET = "jobset"  # JobSet: replicatedJobs immutable; labels, annotations, nodeSelector, tolerations
# and schedulingGates of the pod templates while suspended (jobset webhook ValidateUpdate)
UPDATE_NONE = "immutable"  # nothing in the templates may change (Volcano Job: only replicas/minAvailable)


@dataclass(frozen=True)
class Kind:
    group: str  # API group, "" for core
    kind: str
    workload_class: str  # "training" or "serving": default when the object does not say
    templates: tuple[TemplateSet, ...]
    note: str = ""  # said in a warning when the kind is handled specially
    plural: str = ""  # REST resource name: what the API path, RBAC and kubectl call it
    versions: tuple[str, ...] = ("v1",)  # versions spreadguard reads, preferred first
    depth: int = 0  # controllers that can sit above it (Deployment 0 > ReplicaSet 1 > Pod 3): owners list first
    # one pod on every node its template lets it use, by design (DaemonSet): never spread, compacted or given a
    # failure policy; only what decides which nodes it may use is judged (decide.PER_NODE_RULES) and added
    # (decide.PER_NODE_MUTATORS: its own team's toleration)
    per_node: bool = False

    @property
    def resource(self) -> str:
        """``pods``, ``deployments.apps``, ``pytorchjobs.kubeflow.org``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    update: str = UPDATE_TEMPLATE  # what may be patched on UPDATE (UPDATE_*)
    revision_label: str = ""  # the pod label naming the controller's revision (for spread matchLabelKeys)


# ---------------------------------------------------------------------------- helpers


def get(obj: Any, path: Path, default: Any = None) -> Any:
    """Follow ``path`` through dicts and lists; ``default`` when any step is missing."""
    cur = obj
    for step in path:
        if isinstance(step, int):
            if not isinstance(cur, list) or step >= len(cur):
                return default
        elif not isinstance(cur, dict) or step not in cur:
            return default
        cur = cur[step]
    return cur


def format_path(path: Path) -> str:
    """``spec.a[0].b``; keys holding dots or slashes go in brackets: ``nodeSelector[kubernetes.io/hostname]``."""
    out = ""
    for step in path:
        if isinstance(step, int) or "." in step or "/" in step:
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return default


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return meta.get("name") or meta.get("generateName") or ""


def _single(path: Path, group: str = "pods") -> Callable[[dict[str, Any]], Iterator[tuple[str, Path, dict[str, Any]]]]:
    def each(obj: dict[str, Any]) -> Iterator[tuple[str, Path, dict[str, Any]]]:
        if isinstance(get(obj, path), dict):
            yield group, path, obj.get("spec") or {}

    return each


def _mapping(base: Path) -> Callable[[dict[str, Any]], Iterator[tuple[str, Path, dict[str, Any]]]]:
    """Kubeflow ``*ReplicaSpecs``: a map of replica type to {replicas, template}."""

    def each(obj: dict[str, Any]) -> Iterator[tuple[str, Path, dict[str, Any]]]:
        specs = get(obj, base)
        if isinstance(specs, dict):
            for rtype, spec in specs.items():
                if isinstance(spec, dict) and isinstance(spec.get("template"), dict):
                    yield rtype, (*base, rtype, "template"), spec

    return each


def _list(base: Path, template: Path, name_key: str = "name") -> Callable[..., Iterator[Any]]:
    """A list of named groups, each with its template at ``template`` below the entry."""

    def each(obj: dict[str, Any]) -> Iterator[tuple[str, Path, dict[str, Any]]]:
        items = get(obj, base)
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict) and isinstance(get(item, template), dict):
                    yield str(item.get(name_key) or i), (*base, i, *template), item

    return each


def _selector_labels(obj: dict[str, Any], _group: str, _node: dict[str, Any]) -> dict[str, str]:
    """Deployment-like kinds: the pods are those of ``spec.selector.matchLabels``."""
    labels = get(obj, ("spec", "selector", "matchLabels"))
    if not (isinstance(labels, dict) and labels) or get(obj, ("spec", "selector", "matchExpressions")):
        labels = get(obj, ("spec", "template", "metadata", "labels")) or {}
    return {k: v for k, v in labels.items() if k not in POD_VOLATILE_LABELS}


def _kubeflow_gang(obj: dict[str, Any]) -> dict[str, str]:
    return {"training.kubeflow.org/job-name": _name(obj)}


def _kubeflow(obj: dict[str, Any], rtype: str, _node: dict[str, Any]) -> dict[str, str]:
    return {"training.kubeflow.org/job-name": _name(obj), "training.kubeflow.org/replica-type": rtype.lower()}


def _match(
    labels: Callable[[dict[str, Any], str, dict[str, Any]], dict[str, str]],
) -> Callable[[dict[str, Any], str, dict[str, Any]], dict[str, Any]]:
    """A selector function from a label function: ``{"matchLabels": labels}`` (empty when none)."""

    def selector(obj: dict[str, Any], group: str, node: dict[str, Any]) -> dict[str, Any]:
        found = labels(obj, group, node)
        return {"matchLabels": found} if found else {}

    return selector


def _group_label(
    prefix: Callable[[dict[str, Any]], str],
) -> Callable[[dict[str, Any], str, dict[str, Any]], dict[str, Any]]:
    return _match(lambda obj, group, _n: {GROUP_LABEL: f"{prefix(obj)}{group}"[:63].rstrip("-_.")})


LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"


def _lws_selector(leader: bool) -> Callable[[dict[str, Any], str, dict[str, Any]], dict[str, Any]]:
    """Leaders are worker-index 0; workers are the rest, or every pod when there is no leaderTemplate."""

    def selector(obj: dict[str, Any], _group: str, _node: dict[str, Any]) -> dict[str, Any]:
        name = {LWS_NAME: _name(obj)}
        if leader:
            return {"matchLabels": {**name, LWS_INDEX: "0"}}
        if not isinstance(get(obj, ("spec", "leaderWorkerTemplate", "leaderTemplate")), dict):
            return {"matchLabels": name}
        return {
            "matchLabels": name,
            "matchExpressions": [{"key": LWS_INDEX, "operator": "NotIn", "values": ["0"]}],
        }

    return selector


def _lws_workers(obj: dict[str, Any], _node: dict[str, Any]) -> int:
    lwt = get(obj, ("spec", "leaderWorkerTemplate")) or {}
    size = _int(lwt.get("size"), 1)
    per_group = size - 1 if isinstance(lwt.get("leaderTemplate"), dict) else size
    return _int(get(obj, ("spec", "replicas")), 1) * max(per_group, 0)


def _ray_replicas(_obj: dict[str, Any], node: dict[str, Any]) -> int:
    if "rayStartParams" in node and "groupName" not in node:  # head group
        return 1
    count = _int(node.get("replicas"), _int(node.get("minReplicas"), 1))
    return count * max(_int(node.get("numOfHosts"), 1), 1)


def _ray_groups(base: Path) -> Callable[[dict[str, Any]], Iterator[tuple[str, Path, dict[str, Any]]]]:
    def each(obj: dict[str, Any]) -> Iterator[tuple[str, Path, dict[str, Any]]]:
        head = get(obj, (*base, "headGroupSpec"))
        if isinstance(head, dict) and isinstance(head.get("template"), dict):
            yield "headgroup", (*base, "headGroupSpec", "template"), head
        yield from _list((*base, "workerGroupSpecs"), ("template",), "groupName")(obj)

    return each


KUBEFLOW_ROLES = {"master": "master", "chief": "chief", "launcher": "launcher", "ps": "ps"}


def _elastic_pytorch(obj: dict[str, Any]) -> bool:
    """PyTorchJob ``elasticPolicy`` with room to shrink: ``minReplicas < maxReplicas``."""
    policy = get(obj, ("spec", "elasticPolicy"))
    if not isinstance(policy, dict):
        return False
    low, high = _int(policy.get("minReplicas"), -1), _int(policy.get("maxReplicas"), -1)
    return 0 <= low < high


def _kubeflow_placement(obj: dict[str, Any], rtype: str, _node: dict[str, Any]) -> str:
    """Kubeflow jobs are synchronous gangs, except: an elastic PyTorchJob's workers (its master is then
    the singleton), MPI launchers (singleton, outside the all-reduce), TFJob parameter servers and
    evaluators (independent replicas)."""
    role = rtype.lower()
    if role in ("ps", "evaluator"):
        return REPLICAS
    if role == "launcher":
        return SINGLETON
    if obj.get("kind") == "PyTorchJob" and _elastic_pytorch(obj):
        return SINGLETON if role == "master" else ELASTIC
    return GANG


def _ray_autoscaling(obj: dict[str, Any]) -> bool:
    """KubeRay scales worker groups only with ``enableInTreeAutoscaling: true`` (RayCluster or RayJob)."""
    for path in (("spec", "enableInTreeAutoscaling"), ("spec", "rayClusterSpec", "enableInTreeAutoscaling")):
        if get(obj, path) is True:
            return True
    return False


def _ray_placement(obj: dict[str, Any], name: str, node: dict[str, Any]) -> str:
    """Ray: the head is a singleton; a worker group is elastic when the autoscaler may shrink it
    (``enableInTreeAutoscaling`` and ``minReplicas < maxReplicas``), else independent replicas."""
    if name == "headgroup":
        return SINGLETON
    low, high = _int(node.get("minReplicas"), -1), _int(node.get("maxReplicas"), -1)
    return ELASTIC if _ray_autoscaling(obj) and 0 <= low < high else REPLICAS


MAX_SURGE_DEFAULT = "25%"


def _percent_or_int(value: Any, total: int, default: int) -> int:
    """An IntOrString like ``maxSurge``: an int, or ``"N%"`` of ``total`` rounded up (as the API does for surge)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit() and len(value) <= 5:
        return -(-total * int(value[:-1]) // 100)
    return default


def _deployment_surge(obj: dict[str, Any], replicas: int) -> int:
    """Pods a Deployment's rolling update adds beside ``replicas`` (``maxSurge``, default 25% rounded up)."""
    strategy = get(obj, ("spec", "strategy")) or {}
    if not isinstance(strategy, dict) or strategy.get("type") == "Recreate":
        return 0
    value = get(strategy, ("rollingUpdate", "maxSurge"), MAX_SURGE_DEFAULT)
    return _percent_or_int(value, replicas, _percent_or_int(MAX_SURGE_DEFAULT, replicas, 0))


def _lws_surge(obj: dict[str, Any], _replicas: int) -> int:
    """LeaderWorkerSet rolls whole groups; ``maxSurge`` (default 0) extra groups, one leader each."""
    value = get(obj, ("spec", "rolloutStrategy", "rollingUpdateConfiguration", "maxSurge"), 0)
    return _percent_or_int(value, _int(get(obj, ("spec", "replicas")), 1), 0)


def _volcano_placement(obj: dict[str, Any], _name: str, _node: dict[str, Any]) -> str:
    """Volcano: a gang when ``minAvailable`` is every pod of every task (the default), else replicas."""
    tasks = get(obj, ("spec", "tasks"))
    total = sum(_int(t.get("replicas"), 1) for t in tasks if isinstance(t, dict)) if isinstance(tasks, list) else 0
    return GANG if _int(get(obj, ("spec", "minAvailable")), total) >= total else REPLICAS


# ----------------------------------------------------------------------------- the table

_DEPLOYMENT_LIKE = TemplateSet(
    each=_single(("spec", "template")),
    replicas=lambda obj, _n: _int(get(obj, ("spec", "replicas")), 1),
    selector=_match(_selector_labels),
)
_DEPLOYMENT = TemplateSet(
    each=_single(("spec", "template")),
    replicas=lambda obj, _n: _int(get(obj, ("spec", "replicas")), 1),
    selector=_match(_selector_labels),
    surge=_deployment_surge,
)


def _kubeflow_kind(kind: str, field_name: str, versions: tuple[str, ...] = ("v1",)) -> Kind:
    return Kind(
        "kubeflow.org",
        kind,
        "training",
        (
            TemplateSet(
                each=_mapping(("spec", field_name)),
                replicas=lambda _o, node: _int(node.get("replicas"), 1),
                selector=_match(_kubeflow),
                role=lambda name: KUBEFLOW_ROLES.get(name.lower(), ""),
                gang=_kubeflow_gang,
                placement=_kubeflow_placement,
            ),
        ),
        plural=f"{kind.lower()}s",
        versions=versions,
    )


_KINDS: list[Kind] = [
    Kind("", "Pod", "training", (), plural="pods", depth=3),  # Pods are matched to their group by POD_GROUP_LABELS
    Kind("apps", "Deployment", "serving", (_DEPLOYMENT,), plural="deployments", revision_label="pod-template-hash"),
    Kind("apps", "StatefulSet", "serving", (_DEPLOYMENT_LIKE,), plural="statefulsets", depth=1),
    Kind("apps", "ReplicaSet", "serving", (_DEPLOYMENT_LIKE,), plural="replicasets", depth=1),
    # one pod per node (how many: the nodes its template tolerates, unknown at admission); its pods come from the
    # DaemonSet controller, which the Pod hooks trust as a per-node owner: the template is judged here instead
    Kind(
        "apps",
        "DaemonSet",
        "serving",
        (
            TemplateSet(
                each=_single(("spec", "template")),
                replicas=lambda _o, _n: None,
                selector=_match(_selector_labels),
            ),
        ),
        plural="daemonsets",
        per_node=True,
    ),
    Kind(
        "batch",
        "Job",
        "training",
        (
            TemplateSet(
                each=_single(("spec", "template")),
                replicas=lambda obj, _n: _int(get(obj, ("spec", "parallelism")), 1),
                selector=_match(lambda obj, _g, _n: {"batch.kubernetes.io/job-name": _name(obj)}),
                job_spec=True,
            ),
        ),
        plural="jobs",
        depth=2,
        update=UPDATE_JOB,
    ),
    Kind(
        "batch",
        "CronJob",
        "training",
        (
            TemplateSet(
                each=_single(("spec", "jobTemplate", "spec", "template")),
                replicas=lambda obj, _n: _int(get(obj, ("spec", "jobTemplate", "spec", "parallelism")), 1),
                selector=_group_label(lambda obj: f"cronjob-{_name(obj)}-"),
                add_group_label=True,
                job_spec=True,
            ),
        ),
        plural="cronjobs",
    ),
    _kubeflow_kind("PyTorchJob", "pytorchReplicaSpecs"),
    _kubeflow_kind("TFJob", "tfReplicaSpecs"),
    _kubeflow_kind("MPIJob", "mpiReplicaSpecs", ("v2beta1", "v1")),
    _kubeflow_kind("XGBoostJob", "xgbReplicaSpecs"),
    Kind(
        "trainer.kubeflow.org",
        "TrainJob",
        "training",
        (),
        note="TrainJob {name}: its pods come from the training runtime, so spreadguard places them "
        "when the runtime's JobSet creates them (Pod backstop, gang jobset.sigs.k8s.io/jobset-name={name}). "
        "Not on the TrainJob itself: which override field it has (podSpecOverrides, later runtimePatches) "
        "depends on the installed Trainer version, which admission cannot see, and a field the CRD does not "
        "know is pruned",
        plural="trainjobs",
        versions=("v1alpha1",),
        update=UPDATE_NONE,
    ),
    Kind(
        "jobset.x-k8s.io",
        "JobSet",
        "training",
        (
            TemplateSet(
                each=_list(("spec", "replicatedJobs"), ("template", "spec", "template")),
                replicas=lambda _o, node: (
                    _int(node.get("replicas"), 1) * _int(get(node, ("template", "spec", "parallelism")), 1)
                ),
                selector=_match(
                    lambda obj, group, _n: {
                        "jobset.sigs.k8s.io/jobset-name": _name(obj),
                        "jobset.sigs.k8s.io/replicatedjob-name": group,
                    }
                ),
                job_spec=True,
                gang=lambda obj: {"jobset.sigs.k8s.io/jobset-name": _name(obj)},
                placement=lambda _o, _g, _n: GANG,
            ),
        ),
        plural="jobsets",
        versions=("v1alpha2",),
        depth=1,
        update=UPDATE_JOBSET,
    ),
    Kind(
        "leaderworkerset.x-k8s.io",
        "LeaderWorkerSet",
        "serving",
        (
            TemplateSet(
                each=_single(("spec", "leaderWorkerTemplate", "leaderTemplate"), "leader"),
                replicas=lambda obj, _n: _int(get(obj, ("spec", "replicas")), 1),
                selector=_lws_selector(leader=True),
                role=lambda _n: "leader",
                surge=_lws_surge,
            ),
            TemplateSet(  # one group (leader + workers) is a gang: compact it, spread the leaders
                each=_single(("spec", "leaderWorkerTemplate", "workerTemplate"), "worker"),
                replicas=_lws_workers,
                selector=_lws_selector(leader=False),
                gang=lambda obj: {LWS_NAME: _name(obj)},
                gang_keys=(LWS_GROUP_INDEX,),
                placement=lambda _o, _g, _n: GANG,
            ),
        ),
        plural="leaderworkersets",
    ),
    Kind(
        "ray.io",
        "RayCluster",
        "training",
        (
            TemplateSet(
                each=_ray_groups(("spec",)),
                replicas=_ray_replicas,
                selector=_match(lambda obj, group, _n: {"ray.io/cluster": _name(obj), "ray.io/group": group}),
                role=lambda name: "head" if name == "headgroup" else "",
                placement=_ray_placement,
            ),
        ),
        plural="rayclusters",
        versions=("v1", "v1alpha1"),
        depth=1,
    ),
    Kind(
        "ray.io",
        "RayJob",
        "training",
        (
            TemplateSet(  # the RayCluster's name gets a random suffix: label the groups ourselves
                each=_ray_groups(("spec", "rayClusterSpec")),
                replicas=_ray_replicas,
                selector=_group_label(lambda obj: f"rayjob-{_name(obj)}-"),
                add_group_label=True,
                role=lambda name: "head" if name == "headgroup" else "",
                placement=_ray_placement,
            ),
        ),
        plural="rayjobs",
        versions=("v1", "v1alpha1"),
    ),
    Kind(
        "batch.volcano.sh",
        "Job",
        "training",
        (
            TemplateSet(
                each=_list(("spec", "tasks"), ("template",)),
                replicas=lambda _o, node: _int(node.get("replicas"), 1),
                selector=_match(
                    lambda obj, group, _n: {"volcano.sh/job-name": _name(obj), "volcano.sh/task-spec": group}
                ),
                role=lambda name: KUBEFLOW_ROLES.get(name.lower(), ""),
                gang=lambda obj: {"volcano.sh/job-name": _name(obj)},
                placement=_volcano_placement,
            ),
        ),
        plural="jobs",
        versions=("v1alpha1",),
        update=UPDATE_NONE,
    ),
]

KINDS: dict[tuple[str, str], Kind] = {(k.group, k.kind): k for k in _KINDS}

# How a Pod on its own is matched to its group: the first row whose label keys the Pod carries.
# (keys that identify the group, label holding the group's role or None, label naming the whole gang or None)
POD_GROUP_LABELS: list[tuple[tuple[str, ...], str | None, str | None]] = [
    (
        ("training.kubeflow.org/job-name", "training.kubeflow.org/replica-type"),
        "training.kubeflow.org/replica-type",
        "training.kubeflow.org/job-name",
    ),
    (
        ("jobset.sigs.k8s.io/jobset-name", "jobset.sigs.k8s.io/replicatedjob-name"),
        None,
        "jobset.sigs.k8s.io/jobset-name",
    ),
    (("ray.io/cluster", "ray.io/group"), "ray.io/group", None),
    (("volcano.sh/job-name", "volcano.sh/task-spec"), "volcano.sh/task-spec", "volcano.sh/job-name"),
    ((GROUP_LABEL,), None, None),
    (("batch.kubernetes.io/job-name",), None, None),
]
# Pods of these owners are grouped by their labels minus the per-pod / per-revision ones.
POD_OWNER_KINDS = {"ReplicaSet", "StatefulSet"}
POD_VOLATILE_LABELS = {
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
}
POD_SKIP_OWNER_KINDS = {"DaemonSet", "Node"}  # per-node by design: never spread or judged as groups
# ... but only when the request comes from the controller that owns such pods (``per_node_owner`` and the
# engine's ``owners.trusted_per_node``): an ownerReference is written by whoever creates the pod.

# Placement already decided by another controller: spreadguard leaves zone/rack placement to it.
PLACEMENT_OWNER_ANNOTATIONS = (
    "alpha.jobset.sigs.k8s.io/exclusive-topology",
    "leaderworkerset.sigs.k8s.io/exclusive-topology",
    "kueue.x-k8s.io/podset-required-topology",
    "kueue.x-k8s.io/podset-preferred-topology",
)

# ------------------------------------------------------------------------------ public API


def kind_of(obj: dict[str, Any]) -> Kind | None:
    """The table entry for ``obj`` (by API group and kind), or None for kinds we do not know."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return None
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return KINDS.get((group, kind))


def _lws_pod_group(labels: dict[str, str]) -> Group:
    """An LWS pod: leader (index 0) or worker. Pods do not say whether a leaderTemplate exists,
    so workers are matched as "not the leader"; a worker template used for leaders too is
    matched by its name alone on the workload."""
    leader = labels.get(LWS_INDEX) == "0"
    obj = {"metadata": {"name": labels[LWS_NAME]}, "spec": {"leaderWorkerTemplate": {"leaderTemplate": {}}}}
    return Group(
        "leader" if leader else "worker",
        (),
        None,
        _lws_selector(leader)(obj, "", {}),
        role="leader" if leader else "",
        gang_selector={} if leader else {"matchLabels": {LWS_NAME: labels[LWS_NAME]}},
        placement=REPLICAS if leader else GANG,
        gang_keys=() if leader else (LWS_GROUP_INDEX,),
    )


def _pod_placement(role: str, gang_key: str | None, name: str) -> str:
    """A Pod's class from its controller's labels alone: pods of a gang job (Kubeflow, JobSet, Volcano)
    are gang members (elasticity is not visible on the pod), coordinators singletons, the rest replicas."""
    if role in ("head", "launcher") or (role in ("master", "chief") and not gang_key):
        return SINGLETON
    if role in ("ps",) or name.lower() == "evaluator":
        return REPLICAS
    return GANG if gang_key else REPLICAS


def per_node_owner(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the first DaemonSet or Node ownerReference a Pod claims, or None."""
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    for o in owners if isinstance(owners, list) else []:
        if isinstance(o, dict) and o.get("kind") in POD_SKIP_OWNER_KINDS:
            return str(o.get("kind")), str(o.get("name") or "")
    return None


def pod_group(pod: dict[str, Any], per_node_trusted: bool = False) -> Group | None:
    """The group a Pod belongs to, from its labels and ownerReferences; None for a lone Pod.

    ``per_node_trusted``: the request came from the controller of the per-node owner the pod claims
    (DaemonSet controller, the node's kubelet); only then is such a pod left out of every group.
    """
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
    if per_node_trusted and per_node_owner(pod) is not None:
        return None
    path: Path = ()
    if LWS_NAME in labels and LWS_INDEX in labels:
        return _lws_pod_group(labels)
    for keys, role_key, gang_key in POD_GROUP_LABELS:
        if all(k in labels for k in keys):
            match = {k: labels[k] for k in keys}
            name = labels[role_key] if role_key else labels[keys[-1]]
            role = KUBEFLOW_ROLES.get(name.lower(), "") if role_key else ""
            if role_key == "ray.io/group" and name == "headgroup":
                role = "head"
            gang = {"matchLabels": {gang_key: labels[gang_key]}} if gang_key else {}
            return Group(
                str(name),
                path,
                None,
                {"matchLabels": match},
                role=role,
                gang_selector=gang,
                placement=_pod_placement(role, gang_key, str(name)),
            )
    if any(o.get("kind") in POD_OWNER_KINDS and o.get("controller") for o in owners):
        match = {k: v for k, v in labels.items() if k not in POD_VOLATILE_LABELS}
        if match:
            return Group("pods", path, None, {"matchLabels": match})
    return None


def groups_of(obj: dict[str, Any], per_node_trusted: bool = True) -> list[Group]:
    """Every replica group of ``obj``: templates of a workload, or the Pod's own group.

    ``per_node_trusted``: whether a DaemonSet/Node ownerReference on a Pod may be believed (the
    admission engine passes whether the request came from that owner's controller; the audit of
    objects already in the cluster keeps believing it).
    """
    kind = kind_of(obj)
    if kind is None:
        return []
    if kind.kind == "Pod" and kind.group == "":
        if per_node_trusted and per_node_owner(obj) is not None:
            return []  # DaemonSet and static pods run per node by design
        group = pod_group(obj, per_node_trusted)
        return [group] if group else [Group("pod", (), 1, {}, placement=SINGLETON)]
    out: list[Group] = []
    for tset in kind.templates:
        for name, path, node in tset.each(obj):
            selector = tset.selector(obj, name, node)
            replicas = tset.replicas(obj, node)
            out.append(
                Group(
                    name=name,
                    path=path,
                    replicas=replicas,
                    selector=selector,
                    add_labels=dict(selector.get("matchLabels", {})) if tset.add_group_label else {},
                    role=tset.role(name),
                    job_path=path[:-1] if tset.job_spec else None,
                    gang_selector={"matchLabels": tset.gang(obj)} if tset.gang else {},
                    placement=tset.placement(obj, name, node),
                    gang_keys=tset.gang_keys,
                    surge=tset.surge(obj, replicas) if replicas is not None else 0,
                )
            )
    return out


def pod_template(obj: dict[str, Any], group: Group) -> dict[str, Any]:
    """The pod template (``{"metadata":..., "spec":...}``) of ``group`` inside ``obj``."""
    return obj if not group.path else get(obj, group.path) or {}


def workload_class(obj: dict[str, Any], kind: Kind, templates: list[dict[str, Any]]) -> str:
    """``training`` or ``serving``: the label ``spreadguard.io/workload`` wins, else the kind's default."""
    for labels in [(obj.get("metadata") or {}).get("labels") or {}] + [
        (t.get("metadata") or {}).get("labels") or {} for t in templates
    ]:
        value = labels.get(WORKLOAD_LABEL)
        if value in ("training", "serving"):
            return str(value)
    if kind.kind == "Pod" and kind.group == "":
        owners = {o.get("kind") for o in (obj.get("metadata") or {}).get("ownerReferences") or []}
        if owners & POD_OWNER_KINDS:
            return "serving"
    return kind.workload_class
