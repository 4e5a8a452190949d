"""Properties every decision must have, over every object we know of and over generated ones.

* the patch is the decision: applied to the input it gives ``decision.mutated``, and evaluating
  that again adds nothing (the API server may call the webhook twice: reinvocation, Pod backstop);
* spreadguard only adds: nothing the user wrote is removed, replaced or moved;
* what it produces is still a valid Kubernetes object (or pod template, inside the training CRDs).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from typing import Any
from unittest import mock

import jsonpatch
import kubernetes_validate
import pytest
import yaml
from conftest import FIXTURES_DIR, REPO
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from webhook.engine.cases import case_context, load_resource
from webhook.engine.decide import Decision, evaluate
from webhook.engine.ids import ISOLATION_RULE_IDS
from webhook.engine.policy import load_policies
from webhook.engine.target import Context

POLICIES = load_policies(REPO / "policies")
K8S_VERSION = "1.32" if "1.32.0" in kubernetes_validate.utils.all_versions() else kubernetes_validate.latest_version()
BUILTIN = {
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "ReplicaSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
}
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


# ------------------------------------------------------------------------------------ all cases


@dataclass(frozen=True)
class Case:
    id: str
    obj: dict
    ctx: Context
    fixture: bool = False


def _examples() -> list[Case]:
    out = []
    for path in sorted((REPO / "examples").glob("*.yaml")) + sorted((REPO / "examples" / "denied").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for i, doc in enumerate(docs):
            name = str(path.relative_to(REPO)) + (f"#{i}" if len(docs) > 1 else "")
            out.append(Case(name, doc, Context(operation="CREATE", namespace=doc["metadata"].get("namespace", ""))))
    return out


def _policy_cases() -> list[Case]:
    out = []
    for path in sorted((REPO / "policies" / "tests").glob("*.yaml")):
        for case in yaml.safe_load(path.read_text()):
            obj = load_resource(case["resource"], path.parent)
            out.append(Case(f"{path.name}: {case['name']}", obj, case_context(case, obj, path.parent)))
    return out


def _fixtures() -> list[Case]:
    out = []
    for path in sorted(FIXTURES_DIR.glob("*.json")):
        req = json.loads(path.read_text())["request"]
        ctx = Context(
            operation=req["operation"],
            namespace=req.get("namespace", ""),
            username=(req.get("userInfo") or {}).get("username", ""),
            groups=tuple((req.get("userInfo") or {}).get("groups") or ()),
            dry_run=bool(req.get("dryRun")),
            old_object=req.get("oldObject"),
        )
        out.append(Case(f"fixture {path.stem}", req["object"], ctx, fixture=True))
    return out


ALL_CASES = _examples() + _policy_cases() + _fixtures()


def _params(cases: list[Case]) -> list:
    return [pytest.param(c, id=c.id) for c in cases]


def test_all_cases_are_collected() -> None:
    """The collection is not silently empty: every example, every policy case, every fixture."""
    ids = [c.id for c in ALL_CASES]
    assert "examples/pytorchjob.yaml" in ids
    assert "examples/denied/single-node-pinning.yaml" in ids
    assert sum(i.startswith("kinds.yaml: ") for i in ids) >= 15
    assert sum(i.startswith("rules.yaml: ") for i in ids) >= 10
    assert sum(c.fixture for c in ALL_CASES) == len(list(FIXTURES_DIR.glob("*.json"))) >= 60
    assert len(ids) == len(set(ids)), "case ids must be unique"


# ------------------------------------------------------------------------------------- helpers


def only_adds_problems(before: Any, after: Any, path: str = "") -> list[str]:
    """Where ``after`` lost or changed something of ``before``: every dict key still there, every list
    element still at its index, every leaf equal. Additions (new keys, appended elements) are fine."""
    if isinstance(before, dict):
        if not isinstance(after, dict):
            return [f"{path or '/'}: was a mapping, now {json.dumps(after)}"]
        out = []
        for key, value in before.items():
            sub = f"{path}/{key}"
            if key not in after:
                out.append(f"{sub}: removed")
            else:
                out.extend(only_adds_problems(value, after[key], sub))
        return out
    if isinstance(before, list):
        if not isinstance(after, list) or len(after) < len(before):
            return [f"{path}: list {json.dumps(before)} became {json.dumps(after)}"]
        return [p for i, item in enumerate(before) for p in only_adds_problems(item, after[i], f"{path}/{i}")]
    if type(before) is not type(after) or before != after:
        return [f"{path}: {json.dumps(before)} changed to {json.dumps(after)}"]
    return []


def check_patch(obj: dict, ctx: Context, decision: Decision) -> None:
    """(a) the patch gives ``mutated`` and a second evaluation adds nothing; (b) it only adds."""
    assert decision.mutated is not None, "decision.mutated is None: callers cannot show what was admitted"
    applied = jsonpatch.apply_patch(obj, decision.patch)
    assert applied == decision.mutated, "applying decision.patch does not give decision.mutated"
    again = evaluate(decision.mutated, ctx, POLICIES)
    assert again.patch == [], f"not idempotent: second evaluation adds {json.dumps(again.patch)}"
    assert again.allowed == decision.allowed, "the verdict changed after mutation"
    # the one value spreadguard may replace is its own: the signed grant list (a child adds its own grant)
    ops = sorted({op["op"] for op in decision.patch if not op["path"].endswith("/spreadguard.io~1exempt-grant")})
    assert set(ops) <= {"add", "copy"}, f"patch uses {ops}; spreadguard must only add"
    problems = [p for p in only_adds_problems(obj, decision.mutated) if "/spreadguard.io/exempt-grant: " not in p]
    assert not problems, "the patch rewrites what the user wrote:\n" + "\n".join(problems)


def pod_templates(node: Any, path: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every pod template (a mapping whose ``spec`` has ``containers``) below the object's root."""
    out: list[tuple[tuple, dict]] = []
    if isinstance(node, dict):
        spec = node.get("spec")
        if path and isinstance(spec, dict) and isinstance(spec.get("containers"), list):
            return [(path, node)]
        for key, value in node.items():
            out.extend(pod_templates(value, (*path, key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(pod_templates(value, (*path, i)))
    return out


# kubernetes_validate re-reads its (large) schema files on every call; caching them makes validation ~20x faster
_schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


def k8s_errors(obj: dict) -> str | None:
    """The first schema error of ``obj`` (strict: unknown fields are errors too), or None."""
    with mock.patch.object(kubernetes_validate.utils, "schema_contents", _schema_contents):
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            return f"{'.'.join(map(str, exc.path))}: {exc.message}"
    return None


def as_pod_template(template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"}, "template": template}


def as_cronjob(job_template: dict) -> dict:
    """A batch/v1 JobTemplateSpec wrapped into the one object that holds one."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "x"},
        "spec": {"schedule": "@daily", "jobTemplate": job_template},
    }


# ---------------------------------------------------------------------------- over every case


@pytest.mark.parametrize("case", _params(ALL_CASES))
def test_patch_is_idempotent_and_only_adds(case: Case) -> None:
    before = copy.deepcopy(case.obj)
    decision = evaluate(case.obj, case.ctx, POLICIES)
    assert case.obj == before, "evaluate modified its input"
    check_patch(case.obj, case.ctx, decision)


BUILTIN_CASES = [c for c in ALL_CASES if (c.obj["apiVersion"], c.obj["kind"]) in BUILTIN]


@pytest.mark.parametrize("case", _params(BUILTIN_CASES))
def test_mutated_builtin_objects_are_valid_kubernetes(case: Case) -> None:
    decision = evaluate(case.obj, case.ctx, POLICIES)
    mutated = copy.deepcopy(decision.mutated)
    if case.fixture:
        # status is server-set and spreadguard never writes it; the v1.36 apiserver that recorded the fixtures
        # fills in status.terminatingReplicas (new in 1.33), which the 1.32 schema rejects in strict mode.
        mutated.pop("status", None)
    assert k8s_errors(mutated) is None, f"{case.id}: mutated object is not valid {K8S_VERSION}: {k8s_errors(mutated)}"


CRD_CASES = [c for c in ALL_CASES if (c.obj["apiVersion"], c.obj["kind"]) not in BUILTIN]


TEMPLATE_CASES = [c for c in CRD_CASES if c.obj["kind"] not in ("Widget", "TrainJob", "Scale")]  # Scale: no template


@pytest.mark.parametrize("case", _params(TEMPLATE_CASES))
def test_pod_templates_in_training_crds_are_valid(case: Case) -> None:
    decision = evaluate(case.obj, case.ctx, POLICIES)
    templates = pod_templates(decision.mutated)
    assert templates, f"{case.id}: no pod template found"
    for path, template in templates:
        err = k8s_errors(as_pod_template(template))
        assert err is None, f"{case.id}: pod template at {'.'.join(map(str, path))} is not valid: {err}"
    if case.obj["kind"] == "JobSet":  # each replicated job is a batch/v1 JobTemplateSpec (podFailurePolicy, ...)
        for i, rj in enumerate(decision.mutated["spec"]["replicatedJobs"]):
            err = k8s_errors(as_cronjob(rj["template"]))
            assert err is None, f"{case.id}: spec.replicatedJobs[{i}].template is not a valid Job template: {err}"


def test_the_validation_can_fail() -> None:
    """Guard for the two tests above: a malformed injected term is caught by the schema."""
    obj = yaml.safe_load((REPO / "examples" / "deployment.yaml").read_text())
    obj["spec"]["template"]["spec"]["affinity"] = {
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "topologyKey": "x"}]}
    }
    assert k8s_errors(obj) is not None
    assert k8s_errors(as_pod_template(obj["spec"]["template"])) is not None


def test_only_adds_detects_rewrites() -> None:
    before = {"spec": {"tolerations": [{"key": "a"}], "x": 1}}
    assert only_adds_problems(before, {"spec": {"tolerations": [{"key": "a"}, {"key": "b"}], "x": 1, "y": 2}}) == []
    assert only_adds_problems(before, {"spec": {"tolerations": [{"key": "b"}, {"key": "a"}], "x": 1}})
    assert only_adds_problems(before, {"spec": {"tolerations": [{"key": "a"}], "x": "1"}})
    assert only_adds_problems(before, {"spec": {"x": 1}})


# -------------------------------------------------------------------------- generated workloads

NAME = "llm"
TEAM = "vision"
TEAM_KEY = "spreadguard.io/team"
WORKLOAD_KEY = "spreadguard.io/workload"
PT_JOB, PT_TYPE = "training.kubeflow.org/job-name", "training.kubeflow.org/replica-type"


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics for the selectors the strategy writes (None selects nothing)."""
    if not selector:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        present = e["key"] in labels
        ok = {
            "In": present and labels.get(e["key"]) in e.get("values", []),
            "NotIn": not (present and labels.get(e["key"]) in e.get("values", [])),
            "Exists": present,
            "DoesNotExist": not present,
        }[e["operator"]]
        if not ok:
            return False
    return True


@dataclass
class Generated:
    obj: dict
    kind: str
    replicas: int
    pod_labels: dict[str, str]  # the labels the group's pods carry (template + controller)
    workload_class: str
    gpu: bool

    @property
    def template_path(self) -> tuple:
        if self.kind in ("Deployment", "DaemonSet"):
            return ("spec", "template")
        return ("spec", "pytorchReplicaSpecs", "Worker", "template")

    def template(self, obj: dict) -> dict:
        for step in self.template_path:
            obj = obj[step]
        return obj


def _selector_strategy(own: dict[str, str], team: bool) -> st.SearchStrategy[dict]:
    """Selectors that select the group (by labels or expressions) and ones that do not."""
    key, value = sorted(own.items())[-1]
    options = [
        st.just({"matchLabels": dict(own)}),
        st.just({"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in own.items()]}),
        st.just(
            {
                "matchLabels": {key: value},
                "matchExpressions": [{"key": "track", "operator": "NotIn", "values": ["canary"]}],
            }
        ),
        st.just({"matchLabels": {"app": "other"}}),
        st.just({"matchLabels": {key: "other"}}),
        st.just({"matchExpressions": [{"key": "track", "operator": "Exists"}]}),
    ]
    if team:
        options.append(st.just({"matchLabels": {TEAM_KEY: TEAM}}))
    return st.one_of(options)


def _pod_affinity_term(own: dict[str, str], team: bool) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"labelSelector": _selector_strategy(own, team), "topologyKey": st.sampled_from([HOSTNAME, HOSTNAME, ZONE])}
    )


def _weighted(term: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"weight": st.integers(1, 100), "podAffinityTerm": term})


NODE_AFFINITY = st.sampled_from(
    [
        {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "node.kubernetes.io/instance-type",
                                "operator": "In",
                                "values": ["p5.48xlarge", "p4d.24xlarge"],
                            }
                        ]
                    }
                ]
            }
        },
        {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 50,
                    "preference": {
                        "matchExpressions": [{"key": "gpu.health", "operator": "NotIn", "values": ["failing"]}]
                    },
                }
            ]
        },
        {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": HOSTNAME, "operator": "In", "values": ["gpu-node-1", "gpu-node-2"]}]}
                ]
            }
        },
    ]
)

TOLERATIONS = [
    {"key": TEAM_KEY, "operator": "Equal", "value": TEAM, "effect": "NoSchedule"},
    {"key": TEAM_KEY, "operator": "Equal", "value": TEAM},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 300},
]


@st.composite
def workloads(draw: st.DrawFn) -> Generated:
    kind = draw(st.sampled_from(["Deployment", "PyTorchJob", "DaemonSet"]))
    replicas = draw(st.integers(1, 8))
    gpu = draw(st.booleans())
    team = draw(st.booleans())
    workload = draw(st.sampled_from([None, "serving", "training"]))
    workload_on = draw(st.sampled_from(["object", "template", "both"]))
    extra = draw(st.dictionaries(st.sampled_from(["track", "tier"]), st.sampled_from(["stable", "canary"]), max_size=2))

    template_labels = dict(extra)
    object_labels = {"app.kubernetes.io/name": NAME}
    if kind in ("Deployment", "DaemonSet"):
        template_labels["app"] = NAME
    if team:
        template_labels[TEAM_KEY] = TEAM
    if workload and workload_on in ("template", "both"):
        template_labels[WORKLOAD_KEY] = workload
    if workload and workload_on in ("object", "both"):
        object_labels[WORKLOAD_KEY] = workload
    own = {"app": NAME} if kind in ("Deployment", "DaemonSet") else {PT_JOB: NAME, PT_TYPE: "worker"}
    pod_labels = {**template_labels, **own}

    term = _pod_affinity_term(own, team)
    affinity: dict[str, Any] = {}
    if draw(st.booleans()):
        affinity["nodeAffinity"] = draw(NODE_AFFINITY)
    if draw(st.booleans()):  # keep replicas close: affinity to the group on the zone, or preferred to others
        affinity["podAffinity"] = draw(
            st.sampled_from(
                [
                    {
                        "requiredDuringSchedulingIgnoredDuringExecution": [
                            {"labelSelector": {"matchLabels": own}, "topologyKey": ZONE}
                        ]
                    },
                    {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 10,
                                "podAffinityTerm": {
                                    "labelSelector": {"matchLabels": {"app": "cache"}},
                                    "topologyKey": HOSTNAME,
                                },
                            }
                        ]
                    },
                ]
            )
        )
    if draw(st.booleans()):
        anti: dict[str, Any] = {}
        required = draw(st.lists(term, max_size=2))
        preferred = draw(st.lists(_weighted(term), max_size=2))
        if required or draw(st.booleans()):
            anti["requiredDuringSchedulingIgnoredDuringExecution"] = required
        if preferred or draw(st.booleans()):
            anti["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
        affinity["podAntiAffinity"] = anti

    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "main",
                "image": "nvcr.io/nvidia/pytorch:24.05-py3",
                "resources": {"limits": {"nvidia.com/gpu": draw(st.sampled_from([1, 8, "8"]))}}
                if gpu
                else {"requests": {"cpu": "4"}},
            }
        ],
    }
    if affinity or draw(st.booleans()):
        spec["affinity"] = affinity
    tolerations = draw(st.lists(st.sampled_from(TOLERATIONS), max_size=3, unique_by=lambda t: json.dumps(t)))
    if tolerations or draw(st.booleans()):
        spec["tolerations"] = tolerations
    constraints = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "maxSkew": st.integers(1, 3),
                    "topologyKey": st.sampled_from([ZONE, HOSTNAME, "topology.kubernetes.io/rack"]),
                    "whenUnsatisfiable": st.sampled_from(["DoNotSchedule", "ScheduleAnyway"]),
                    "labelSelector": _selector_strategy(own, team),
                }
            ),
            max_size=2,
            unique_by=lambda c: (c["topologyKey"], c["whenUnsatisfiable"]),
        )
    )
    if constraints:
        spec["topologySpreadConstraints"] = constraints

    template = {"metadata": {"labels": template_labels}, "spec": spec}
    if kind == "Deployment":
        obj = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": "ml", "labels": object_labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": NAME}}, "template": template},
        }
    elif kind == "DaemonSet":  # one pod per node: no replica count
        obj = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": NAME, "namespace": "ml", "labels": object_labels},
            "spec": {"selector": {"matchLabels": {"app": NAME}}, "template": template},
        }
    else:
        specs: dict[str, Any] = {"Worker": {"replicas": replicas, "restartPolicy": "OnFailure", "template": template}}
        if draw(st.booleans()):
            specs["Master"] = {
                "replicas": 1,
                "restartPolicy": "OnFailure",
                "template": {
                    "metadata": {"labels": {TEAM_KEY: TEAM} if team else {}},
                    "spec": {"containers": [{"name": "main", "image": "nvcr.io/nvidia/pytorch:24.05-py3"}]},
                },
            }
        obj = {
            "apiVersion": "kubeflow.org/v1",
            "kind": "PyTorchJob",
            "metadata": {"name": NAME, "namespace": "ml", "labels": object_labels},
            "spec": {"pytorchReplicaSpecs": specs},
        }
    default_class = "training" if kind == "PyTorchJob" else "serving"
    return Generated(obj, kind, replicas, pod_labels, workload or default_class, gpu)


def _anti_terms(template: dict) -> list[tuple[str, dict]]:
    """(required|preferred, term) for every pod anti-affinity term of a template."""
    anti = ((template.get("spec") or {}).get("affinity") or {}).get("podAntiAffinity") or {}
    out = [("required", t) for t in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []]
    out += [
        ("preferred", w["podAffinityTerm"]) for w in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []
    ]
    return out


def _spreading(template: dict, labels: dict[str, str], key: str) -> list[tuple[str, dict]]:
    return [
        (m, t)
        for m, t in _anti_terms(template)
        if t.get("topologyKey") == key and selects(t.get("labelSelector"), labels)
    ]


def _zone_constraints(template: dict, labels: dict[str, str]) -> list[dict]:
    return [
        c
        for c in (template.get("spec") or {}).get("topologySpreadConstraints") or []
        if c.get("topologyKey") == ZONE and selects(c.get("labelSelector"), labels)
    ]


def _zone_pair(c: dict) -> bool:
    """The (topologyKey, whenUnsatisfiable) pair the serving policy's zone constraint needs: the API allows one
    constraint per pair (validateTopologySpreadConstraints: Duplicate value)."""
    return c.get("topologyKey") == ZONE and c.get("whenUnsatisfiable") == "ScheduleAnyway"


USER_LISTS = [
    ("affinity", "podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"),
    ("affinity", "podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution"),
    ("affinity", "podAffinity", "requiredDuringSchedulingIgnoredDuringExecution"),
    ("affinity", "podAffinity", "preferredDuringSchedulingIgnoredDuringExecution"),
    ("affinity", "nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution"),
    ("tolerations",),
    ("topologySpreadConstraints",),
]
NODE_TERMS = ("affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms")


def _at(spec: dict, path: tuple) -> Any:
    for step in path:
        if not isinstance(spec, dict) or step not in spec:
            return None
        spec = spec[step]
    return spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads())
def test_generated_workloads(g: Generated) -> None:
    ctx = Context(operation="CREATE", namespace="ml")
    original = copy.deepcopy(g.obj)
    decision = evaluate(g.obj, ctx, POLICIES)
    assert g.obj == original, "evaluate modified its input"
    check_patch(g.obj, ctx, decision)  # applies cleanly, idempotent, only adds

    before, after = g.template(g.obj), g.template(decision.mutated)
    for path in USER_LISTS:  # every user-written term, toleration and constraint is still there, unchanged
        mine = _at(before["spec"], path)
        if isinstance(mine, list):
            assert _at(after["spec"], path)[: len(mine)] == mine, f"spec.{'.'.join(path)} was rewritten"
    # required node selector terms are ORed: health avoidance may append an expression to each term, but the
    # user's terms stay in place and keep every expression they had
    mine = _at(before["spec"], NODE_TERMS)
    if mine is not None:
        assert not only_adds_problems(mine, _at(after["spec"], NODE_TERMS)), "node selector terms were rewritten"

    # which default policy applies: training CRDs always; built-in kinds when they request GPUs or say their class;
    # never a DaemonSet (per node by design: isolation only, whatever it requests or says its class is)
    expected_match = g.kind != "DaemonSet" and (
        g.kind == "PyTorchJob"
        or g.gpu
        or WORKLOAD_KEY in {**g.obj["metadata"]["labels"], **before["metadata"]["labels"]}
    )
    # the isolation policy matches every object; only the spreading policies depend on GPUs and class
    assert "isolation" in decision.policies, f"policies matched: {decision.policies}"
    spreading = [p for p in decision.policies if p != "isolation"]
    assert bool(spreading) == expected_match, f"policies matched: {decision.policies}"
    if not spreading:
        assert all("/tolerations" in op["path"] for op in decision.patch), "isolation alone changed placement"
        if g.kind == "DaemonSet":
            judged = {v.rule for v in decision.violations + decision.advisories}
            assert judged <= set(ISOLATION_RULE_IDS), f"a DaemonSet judged by {judged}"  # never by spreading rules
            assert k8s_errors(decision.mutated) is None, k8s_errors(decision.mutated)
        return
    assert spreading == [g.workload_class]

    # a PyTorchJob without elasticPolicy is a gang (design.md, placement doctrine): kept compact, never
    # spread over hosts or zones; Deployments are replicas
    spreads = g.kind != "PyTorchJob"
    had = _spreading(before, g.pod_labels, HOSTNAME)
    now = _spreading(after, g.pod_labels, HOSTNAME)
    event(
        f"{g.workload_class}, {'several replicas' if g.replicas >= 2 else 'one replica'}, "
        f"{'already spread by the user' if had else 'not spread by the user'}"
    )
    # only the user's required terms keep replicas apart: a preferred one (any weight) does not, and spreadguard adds
    # its own beside it; when its own choice is preferred too (serving without a cluster view), nothing is added
    want = "required" if g.workload_class == "training" else "preferred"
    kinds_before = [m for m, _ in had]
    if g.replicas >= 2 and spreads and "required" not in kinds_before and want not in kinds_before:
        added = [m for m, _ in now]
        for m in kinds_before:
            added.remove(m)
        assert added == [want], f"{g.workload_class} workloads get one {want} term beside {kinds_before}, got {now}"
    else:
        assert now == had, "anti-affinity added although the group is single or already spread"

    # serving: zones spread by the policy's (zone, ScheduleAnyway, maxSkew 1) unless the user's own constraint selecting
    # the group is as strict (maxSkew 1, either mode); one holding that pair otherwise (looser, or for other pods) is
    # never rewritten and leaves no room (validateTopologySpreadConstraints: Duplicate value): weak-spread warns of
    # it (the policy's constraint is ScheduleAnyway, a preference: weak_spread.py)
    zones_before, zones_after = _zone_constraints(before, g.pod_labels), _zone_constraints(after, g.pod_labels)
    pair = [c for c in before["spec"].get("topologySpreadConstraints") or [] if _zone_pair(c)]
    assert "weak-spread" not in {v.rule for v in decision.violations}
    weak = [v.rule for v in decision.advisories if v.rule == "weak-spread"]
    if g.workload_class == "training":  # all-reduce wants one zone: training is never spread across zones
        assert after["spec"].get("topologySpreadConstraints") == before["spec"].get("topologySpreadConstraints"), (
            "a training workload got a topology spread constraint"
        )
        assert not weak
    elif g.replicas < 2 or not spreads or any(c["maxSkew"] <= 1 for c in zones_before):
        assert zones_after == zones_before and not weak
    elif pair:
        assert zones_after == zones_before and weak == ["weak-spread"], (pair, decision.violations)
    else:
        assert len(zones_after) == len(zones_before) + 1, f"serving group not spread over zones: {zones_after}"
        assert _zone_pair(zones_after[-1]) and zones_after[-1]["maxSkew"] == 1 and not weak

    if g.kind == "Deployment":
        assert k8s_errors(decision.mutated) is None, k8s_errors(decision.mutated)
    else:
        for _path, template in pod_templates(decision.mutated):
            assert k8s_errors(as_pod_template(template)) is None, k8s_errors(as_pod_template(template))


# -------------------------------------------------------------------------- known engine gaps


def _pytorchjob() -> dict:
    return yaml.safe_load((REPO / "examples" / "pytorchjob.yaml").read_text())


NULLABLE = [
    ("pytorchjob", ("spec", "tolerations")),
    ("pytorchjob", ("spec", "affinity")),
    ("pytorchjob", ("spec", "affinity", "podAffinity")),  # the gang's workers get pod affinity to one zone
    ("pytorchjob", ("spec", "affinity", "podAffinity", "preferredDuringSchedulingIgnoredDuringExecution")),
    ("deployment", ("spec", "topologySpreadConstraints")),
    ("cronjob", ("metadata", "labels")),
]
TEMPLATE_OF = {
    "pytorchjob": ("spec", "pytorchReplicaSpecs", "Worker", "template"),
    "deployment": ("spec", "template"),
    "cronjob": ("spec", "jobTemplate", "spec", "template"),
}


@pytest.mark.parametrize(("example", "field"), NULLABLE, ids=[f"{e}: {'.'.join(f)}" for e, f in NULLABLE])
def test_null_fields_in_a_template_count_as_absent(example: str, field: tuple) -> None:
    """``tolerations:`` written with no value is null in YAML (and CRDs that preserve unknown fields keep
    it): spreadguard must treat it like an absent field, not crash."""
    with_null = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())
    node = with_null
    for step in TEMPLATE_OF[example] + field[:-1]:
        node = node.setdefault(step, {})
    node[field[-1]] = None
    without = copy.deepcopy(with_null)
    node = without
    for step in TEMPLATE_OF[example] + field[:-1]:
        node = node[step]
    del node[field[-1]]
    ctx = Context(operation="CREATE", namespace="ml")
    expected = evaluate(without, ctx, POLICIES)
    assert expected.patch, "the example must get something added for this test to mean anything"
    decision = evaluate(with_null, ctx, POLICIES)
    assert decision.allowed == expected.allowed
    assert decision.mutated == expected.mutated


def test_anti_affinity_to_another_namespace_does_not_count_as_spread() -> None:
    """A hostname anti-affinity term limited to another namespace does not repel the group's own pods,
    so spreadguard must still add one."""
    obj = _pytorchjob()
    obj["spec"]["elasticPolicy"] = {"minReplicas": 2, "maxReplicas": 4}  # elastic workers spread (a gang would not)
    worker = obj["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    other_ns = {
        "labelSelector": {"matchLabels": {PT_TYPE: "worker"}},
        "topologyKey": HOSTNAME,
        "namespaces": ["team-b"],
    }
    worker["spec"]["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [other_ns]}}
    decision = evaluate(obj, Context(operation="CREATE", namespace="ml"), POLICIES)
    terms = decision.mutated["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["affinity"][
        "podAntiAffinity"
    ]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0] == other_ns
    assert len(terms) == 2, "the group's own hostname anti-affinity was not added"
    assert terms[1]["topologyKey"] == HOSTNAME and "namespaces" not in terms[1]
