"""The install: ``manifests/`` (kustomize base and overlays), the Dockerfile and the docs that go with them.

Everything is rendered with the real ``kubectl kustomize`` and checked as the API server would see it: every
built-in object against the Kubernetes 1.32 OpenAPI schema (``kubernetes-validate``, strict); the webhook
configurations against what docs/install.md promises (where they point, what they exclude, how they fail); RBAC
for least privilege; spreadguard's own Deployment through spreadguard's own engine and policies.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FIXTURES_DIR, REPO

from webhook.cli import build_parser
from webhook.engine import workloads
from webhook.engine.policy import load_policies, parse_policy_text

MANIFESTS = REPO / "manifests"
RENDERS = {
    "manifests": MANIFESTS,
    "base": MANIFESTS / "base",
    "dryrun": MANIFESTS / "overlays" / "dryrun",
    "cert-manager": MANIFESTS / "overlays" / "cert-manager",
    "two-hooks": MANIFESTS / "overlays" / "two-hooks",
    "two-hooks-cert-manager": MANIFESTS / "overlays" / "two-hooks-cert-manager",
}
# The installs with the validating configuration (the opt-in two-hook install); the others have one call per object.
TWO_HOOKS = ("two-hooks", "two-hooks-cert-manager")
K8S_VERSION = "1.32"
NAMESPACE = "spreadguard"
SYSTEM_NAMESPACES = {"kube-system", "kube-node-lease", NAMESPACE}
IGNORE_LABEL = "spreadguard.io/ignore"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate", "*"}
READ_VERBS = {"get", "list", "watch"}
# What docs/install.md promises (section "Webhook configurations"); asserted below, hook by hook.
FAILURE_POLICY = "Ignore"
TIMEOUT_SECONDS = 5
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
DOCS = REPO / "docs" / "install.md"

sys.path.insert(0, str(MANIFESTS))
import sync_policies  # noqa: E402  (manifests/sync_policies.py: the copies of policies/ that kustomize reads)

# --- rendering ----------------------------------------------------------------------------------------------------


@functools.cache
def _render(name: str) -> tuple[dict, ...]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: cannot render the kustomizations")
    done = subprocess.run(["kubectl", "kustomize", str(RENDERS[name])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {RENDERS[name]} failed:\n{done.stderr}"
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def render(name: str = "manifests") -> list[dict]:
    """The objects ``kubectl kustomize`` renders for ``name`` (a fresh copy each call)."""
    return copy.deepcopy(list(_render(name)))


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def all_of(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def hooks(objects: list[dict]) -> list[tuple[str, dict]]:
    """``(configuration kind, webhook)`` for every webhook of every webhook configuration rendered."""
    return [(cfg["kind"], h) for kind in WEBHOOK_KINDS for cfg in all_of(objects, kind) for h in cfg["webhooks"]]


def path_of(hook: dict) -> str:
    return str(hook["clientConfig"]["service"]["path"])


def judges(hook: dict) -> bool:
    """Whether the hook's answer can deny: /admit (the base) and /validate (two-hook install), not /mutate."""
    return path_of(hook) in ("/admit", "/validate")


def pod_spec(objects: list[dict]) -> dict:
    return one(objects, "Deployment", "spreadguard")["spec"]["template"]["spec"]


def container(objects: list[dict], name: str, init: bool = False) -> dict:
    items = pod_spec(objects).get("initContainers" if init else "containers") or []
    found = [c for c in items if c["name"] == name]
    assert found, f"no {'init ' if init else ''}container {name}"
    return found[0]


def cli_args(c: dict) -> Any:
    """The container's command line, parsed by the real CLI parser (``$(VAR)`` left as is)."""
    args = [*(c.get("command") or [])[1:], *(c.get("args") or [])] if c.get("command") else c.get("args") or []
    return build_parser().parse_args(args)


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


# --- every object is valid --------------------------------------------------------------------------------------


def _validation_cases() -> list[Any]:
    cases = []
    for name in RENDERS:
        try:
            objects = _render(name)
        except BaseException:  # kubectl missing or broken: the render tests below say so
            cases.append(pytest.param(name, -1, id=f"{name}-render"))
            continue
        for i, obj in enumerate(objects):
            cases.append(pytest.param(name, i, id=f"{name}-{obj['kind']}-{obj['metadata']['name']}"))
    return cases


@pytest.mark.parametrize("name", list(RENDERS))
def test_renders(name: str) -> None:
    objects = render(name)
    assert objects
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind") and obj["metadata"].get("name")


def test_manifests_root_is_the_base() -> None:
    assert render("manifests") == render("base")


@pytest.mark.parametrize(("name", "index"), _validation_cases())
def test_object_validates_against_the_kubernetes_schema(name: str, index: int) -> None:
    import kubernetes_validate

    objects = render(name)
    assert index >= 0, "rendering failed (see test_renders)"
    obj = objects[index]
    if obj["apiVersion"].startswith("cert-manager.io/"):
        pytest.skip(f"{obj['kind']} is a cert-manager CRD: no schema in the Kubernetes OpenAPI (checked by hand below)")
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_every_namespaced_object_is_in_spreadguards_namespace() -> None:
    cluster_scoped = {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        *WEBHOOK_KINDS,
    }
    for name in RENDERS:
        for obj in render(name):
            if obj["kind"] not in cluster_scoped:
                assert obj["metadata"].get("namespace") == NAMESPACE, f"{name}: {obj['kind']} {obj['metadata']}"


# --- webhook configurations -------------------------------------------------------------------------------------


def test_webhooks_point_at_the_service() -> None:
    objects = render()
    service = one(objects, "Service", "spreadguard")
    port = next(p for p in service["spec"]["ports"] if p["port"] == 443)
    server = container(objects, "webhook")
    target = port["targetPort"]
    container_port = next(p["containerPort"] for p in server["ports"] if target in (p["name"], p["containerPort"]))
    assert container_port == 8443
    pod_labels = one(objects, "Deployment", "spreadguard")["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    for name, paths in (
        ("manifests", {"MutatingWebhookConfiguration": "/admit"}),
        ("two-hooks", {"MutatingWebhookConfiguration": "/mutate", "ValidatingWebhookConfiguration": "/validate"}),
    ):
        assert [kind for kind, _hook in hooks(render(name))] == [k for k in paths for _ in range(2)], name
        for kind, hook in hooks(render(name)):
            assert hook["clientConfig"] == {
                "service": {
                    "namespace": NAMESPACE,
                    "name": service["metadata"]["name"],
                    "path": paths[kind],
                    "port": 443,
                }
            }, "no caBundle in the manifests: bootstrap (or cert-manager) owns it, and apply leaves it alone"


def test_base_calls_spreadguard_once_per_object() -> None:
    """The base: one MutatingWebhookConfiguration, no validating one; both hooks on /admit; the pods hook on
    CREATE and on the Pod UPDATEs that change tolerations (judged as /validate judged them)."""
    objects = render()
    assert not all_of(objects, "ValidatingWebhookConfiguration")
    mutating = one(objects, "MutatingWebhookConfiguration", "spreadguard")
    assert [(h["name"], path_of(h)) for h in mutating["webhooks"]] == [
        ("workloads.spreadguard.io", "/admit"),
        ("pods.spreadguard.io", "/admit"),
    ]
    pods = mutating["webhooks"][1]
    assert [(r["resources"], r["operations"]) for r in pods["rules"]] == [(["pods"], ["CREATE", "UPDATE"])]
    assert [c["name"] for c in pods["matchConditions"]] == [
        "not-control-plane-user",
        "not-daemonset-pod",
        "pod-update-changes-tolerations",
    ]
    for name in RENDERS:
        if name not in TWO_HOOKS:
            assert not all_of(render(name), "ValidatingWebhookConfiguration"), name


def test_two_hooks_overlay_is_the_base_split_in_two() -> None:
    """manifests/overlays/two-hooks is the install as it was before the single hook became the base: everything
    but the webhook configurations as in the base; mutating hooks on /mutate, the pods hook on CREATE only; the
    validating hooks on /validate with the base's settings, conditions and rules, but for the scale subresources
    (a Scale only ever gets warnings, which the mutating hook gives)."""
    base, two = render(), render("two-hooks")
    configs = set(WEBHOOK_KINDS)
    assert [o for o in two if o["kind"] not in configs] == [o for o in base if o["kind"] not in configs]
    mutating = copy.deepcopy(one(base, "MutatingWebhookConfiguration"))
    expected_validating = copy.deepcopy(mutating)
    for hook in mutating["webhooks"]:
        hook["clientConfig"]["service"]["path"] = "/mutate"
    pods = mutating["webhooks"][1]
    pods["rules"][0]["operations"] = ["CREATE"]
    pods["matchConditions"] = [c for c in pods["matchConditions"] if c["name"] != "pod-update-changes-tolerations"]
    assert one(two, "MutatingWebhookConfiguration") == mutating
    expected_validating["kind"] = "ValidatingWebhookConfiguration"
    for hook in expected_validating["webhooks"]:
        hook["clientConfig"]["service"]["path"] = "/validate"
        del hook["reinvocationPolicy"]
        hook["rules"] = [r for r in hook["rules"] if not all(x.endswith("/scale") for x in r["resources"])]
    assert one(two, "ValidatingWebhookConfiguration") == expected_validating


@pytest.mark.parametrize("overlay", ["dryrun", "production"])
def test_two_hook_component_composes_with_the_other_overlays(overlay: str, tmp_path: Path) -> None:
    """An overlay of your own (docs/install.md): another overlay plus components/validate-after-mutation gives
    that overlay with the two-hook webhook configurations."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    up = Path(os.path.relpath(MANIFESTS, tmp_path))  # kustomize takes no absolute path to a kustomization
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(up / "overlays" / overlay)],
                "components": [str(up / "components" / "validate-after-mutation")],
            }
        )
    )
    done = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    objects = [d for d in yaml.safe_load_all(done.stdout) if d]
    plain = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert plain.returncode == 0, plain.stderr
    configs = set(WEBHOOK_KINDS)
    expected = [d for d in yaml.safe_load_all(plain.stdout) if d and d["kind"] not in configs]
    assert [o for o in objects if o["kind"] not in configs] == expected
    assert [o for o in objects if o["kind"] in configs] == [o for o in render("two-hooks") if o["kind"] in configs]


@pytest.mark.parametrize("name", ["manifests", "dryrun", "cert-manager", *TWO_HOOKS])
def test_webhooks_carry_every_exclusion_and_setting(name: str) -> None:
    objects = render(name)
    assert {cfg["metadata"]["name"] for kind in WEBHOOK_KINDS for cfg in all_of(objects, kind)} == {"spreadguard"}
    for kind, hook in hooks(objects):
        where = f"{name}: {kind} {hook['name']}"
        assert hook["sideEffects"] == "None", where
        assert hook["admissionReviewVersions"] == ["v1"], where
        assert hook["timeoutSeconds"] == TIMEOUT_SECONDS, where
        assert hook["failurePolicy"] == FAILURE_POLICY, where
        if kind == "MutatingWebhookConfiguration":
            assert hook["reinvocationPolicy"] == "IfNeeded", where
        exprs = hook["namespaceSelector"]["matchExpressions"]
        by_name = [e for e in exprs if e["key"] == "kubernetes.io/metadata.name"]
        assert len(by_name) == 1 and by_name[0]["operator"] == "NotIn", where
        for excluded in SYSTEM_NAMESPACES:
            assert excluded in by_name[0]["values"], f"{where}: {excluded} not excluded"
        assert {"key": IGNORE_LABEL, "operator": "DoesNotExist"} in exprs, where
        assert not hook["namespaceSelector"].get("matchLabels"), where
        conditions = {c["name"]: c["expression"] for c in hook.get("matchConditions") or []}
        users = conditions.get("not-control-plane-user", "")
        assert "'system:apiserver'" in users and "startsWith('system:node:')" in users, where
        assert "serviceaccount" not in users, f"{where}: controllers must reach the Pod backstop"
        resources = {r for rule in hook["rules"] for r in rule["resources"]}
        if "pods" in resources:
            assert "DaemonSet" in conditions.get("not-daemonset-pod", ""), where
        for rule in hook["rules"]:
            assert rule["scope"] == "Namespaced", where
            assert "*" not in rule["resources"] and "*" not in rule["apiGroups"], where
            pod_update = judges(hook)  # /admit and /validate judge tolerations added to existing pods
            wanted = {"CREATE"} if rule["resources"] == ["pods"] and not pod_update else {"CREATE", "UPDATE"}
            if all(r.endswith("/scale") for r in rule["resources"]):
                wanted = {"UPDATE"}  # a scale subresource is only ever updated
            assert set(rule["operations"]) == wanted, where


def _covered(hook_list: list[dict], group: str, resource: str, operation: str) -> bool:
    for hook in hook_list:
        for rule in hook["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"] and operation in rule["operations"]:
                return True
    return False


def _plural(kind: workloads.Kind) -> str:
    return kind.kind.lower() + "s"


@pytest.mark.parametrize("name", ["manifests", "two-hooks"])
def test_webhooks_cover_every_kind_spreadguard_understands(name: str) -> None:
    objects = render(name)
    assert hooks(objects)
    for config_kind in {k for k, _hook in hooks(objects)}:
        hook_list = [h for k, h in hooks(objects) if k == config_kind]
        for kind in workloads.KINDS.values():
            assert _covered(hook_list, kind.group, _plural(kind), "CREATE"), f"{config_kind}: {kind}"
            if kind.kind != "Pod":
                assert _covered(hook_list, kind.group, _plural(kind), "UPDATE"), f"{config_kind}: {kind}"


def _cel() -> Any:
    return pytest.importorskip("celpy", reason="cel-python is not installed: CEL conditions not evaluated")


def _condition_programs(hook: dict) -> dict[str, Any]:
    celpy = _cel()
    env = celpy.Environment()
    return {c["name"]: env.program(env.compile(c["expression"])) for c in hook.get("matchConditions") or []}


def _sent(programs: dict[str, Any], request: dict) -> bool:
    """Whether every match condition holds for ``request`` (a CEL error fails the test)."""
    celpy = _cel()
    activation = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(request.get("object")),
        "oldObject": celpy.json_to_cel(request.get("oldObject")),
    }
    return all(bool(p.evaluate(activation)) for p in programs.values())


def _pod_request(**changes: Any) -> dict:
    request = {
        "uid": "1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "ml",
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:daemon-set-controller"},
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "agent-x",
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": True}
                ],
            },
            "spec": {"containers": [{"name": "a", "image": "a"}]},
        },
        "oldObject": None,
    }
    request.update(changes)
    return request


@pytest.mark.parametrize("name", ["manifests", "two-hooks"])
def test_match_conditions_skip_daemonset_pods_and_system_users_only(name: str) -> None:
    """Evaluated with cel-python: every captured request reaches spreadguard; DaemonSet pods, the API server's
    loopback user and kubelets do not; a DELETE (object null) evaluates without error."""
    objects = render(name)
    assert hooks(objects)
    captured = [json.loads(p.read_text())["request"] for p in sorted(FIXTURES_DIR.glob("*.json"))]
    assert captured, f"no captured requests in {FIXTURES_DIR}"
    for kind, hook in hooks(objects):
        programs = _condition_programs(hook)
        for request in captured:
            assert _sent(programs, request), f"{kind} {hook['name']} would skip {request['uid']}"
        for user in ("system:apiserver", "system:node:gpu-node-1"):
            request = _pod_request(userInfo={"username": user})
            request["object"]["metadata"].pop("ownerReferences")
            assert not _sent(programs, request), f"{kind} {hook['name']}: {user} not skipped"
        assert _sent(
            programs,
            _pod_request(userInfo={"username": "system:kube-controller-manager"}, object={"metadata": {"name": "p"}}),
        )
        deleting = _pod_request(operation="DELETE", object=None, oldObject=_pod_request()["object"])
        assert _sent(programs, deleting) or "not-daemonset-pod" not in programs
        if any("pods" in rule["resources"] for rule in hook["rules"]):
            assert not _sent(programs, _pod_request()), f"{kind} {hook['name']}: DaemonSet pod not skipped"
            owned_by_rs = _pod_request()
            owned_by_rs["object"]["metadata"]["ownerReferences"][0]["kind"] = "ReplicaSet"
            assert _sent(programs, owned_by_rs)
            for forger in ("mallory", "system:serviceaccount:kube-system:job-controller"):  # an owner anyone can write
                forged = _pod_request(userInfo={"username": forger})
                assert _sent(programs, forged), f"{kind} {hook['name']}: a DaemonSet owner claimed by {forger} skipped"


def _pod_update(old_tolerations: list | None, new_tolerations: list | None, **meta: Any) -> dict:
    old = _pod_request(userInfo={"username": "mallory"})["object"]
    old["metadata"].pop("ownerReferences")
    new = json.loads(json.dumps(old))
    new["metadata"].update(meta)
    for pod, tolerations in ((old, old_tolerations), (new, new_tolerations)):
        if tolerations is not None:
            pod["spec"]["tolerations"] = tolerations
    return _pod_request(operation="UPDATE", userInfo={"username": "mallory"}, object=new, oldObject=old)


FOREIGN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "nlp", "effect": "NoSchedule"}
OWN = {"key": "spreadguard.io/team", "operator": "Equal", "value": "vision", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("old", "new", "meta", "sent"),
    [
        (None, [FOREIGN], {}, True),  # tolerations added to a pod that had none
        ([OWN], [OWN, FOREIGN], {}, True),  # one more
        ([OWN], [OWN], {"labels": {"a": "b"}}, False),  # a label change: not sent
        (None, None, {"finalizers": ["x"]}, False),  # neither has tolerations
    ],
    ids=["added-to-none", "appended", "label-only", "finalizer-only"],
)
@pytest.mark.parametrize("name", ["manifests", "two-hooks"])
def test_pod_updates_reach_the_judging_hook_only_when_tolerations_change(
    name: str, old: Any, new: Any, meta: dict, sent: bool
) -> None:
    """cel-python: the pods hook that judges (/admit in the base, /validate in the two-hook install) gets a pod
    UPDATE exactly when the tolerations differ; a /mutate hook never gets pod UPDATEs (it adds nothing to an
    existing pod). Exactly one pods hook judges in each install."""
    request = _pod_update(old, new, **meta)
    judging = 0
    for kind, hook in hooks(render(name)):
        if not any("pods" in rule["resources"] for rule in hook["rules"]):
            continue
        covered = any("UPDATE" in rule["operations"] for rule in hook["rules"])
        if not judges(hook):
            assert not covered, f"{kind} {hook['name']}"
        else:
            judging += 1
            assert covered and _sent(_condition_programs(hook), request) is sent, f"{kind} {hook['name']}"
    assert judging == 1


def test_own_namespace_is_excluded_twice() -> None:
    namespace = one(render(), "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"][IGNORE_LABEL] == "true"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- RBAC -----------------------------------------------------------------------------------------------------------


def _rules(objects: list[dict]) -> list[tuple[dict, dict]]:
    roles = all_of(objects, "ClusterRole") + all_of(objects, "Role")
    return [(role, rule) for role in roles for rule in role["rules"]]


@pytest.mark.parametrize("name", ["manifests", "cert-manager", *TWO_HOOKS])
def test_rbac_has_no_wildcards_and_writes_only_its_own_objects(name: str) -> None:
    objects = render(name)
    webhook_names = {cfg["metadata"]["name"] for kind in WEBHOOK_KINDS for cfg in all_of(objects, kind)}
    tls_secret = next(v["secret"]["secretName"] for v in pod_spec(objects)["volumes"] if v["name"] == "tls")
    for role, rule in _rules(objects):
        where = f"{role['kind']} {role['metadata']['name']}: {rule}"
        for field in ("verbs", "resources", "apiGroups"):
            assert "*" not in rule.get(field, []), where
        assert not rule.get("nonResourceURLs"), where
        writes = set(rule["verbs"]) & WRITE_VERBS
        assert set(rule["verbs"]) <= READ_VERBS | WRITE_VERBS, where
        if "secrets" in rule["resources"]:
            assert role["kind"] == "Role" and role["metadata"]["namespace"] == NAMESPACE, f"secrets: {where}"
            assert rule["resources"] == ["secrets"] and rule["apiGroups"] == [""], where
            if rule.get("resourceNames"):
                assert rule["resourceNames"] == [tls_secret] and set(rule["verbs"]) <= {"get", "update", "patch"}
            else:
                # RBAC cannot restrict create by name (documented in rbac.yaml): create alone, this namespace only
                assert rule["verbs"] == ["create"], where
            continue
        if not writes:
            continue
        assert rule["apiGroups"] == ["admissionregistration.k8s.io"], f"write outside its webhooks: {where}"
        assert set(rule["resources"]) <= {"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}
        assert set(rule["resourceNames"]) == webhook_names and writes == {"patch"}, where


def test_rbac_reads_what_spreadguard_audits() -> None:
    objects = render()
    reads = {
        (g, r)
        for role, rule in _rules(objects)
        if role["kind"] == "ClusterRole" and not rule.get("resourceNames")
        for g in rule["apiGroups"]
        for r in rule["resources"]
        if READ_VERBS <= set(rule["verbs"])
    }
    for kind in workloads.KINDS.values():
        assert (kind.group, _plural(kind)) in reads, f"cannot read {kind}"
    for extra in (("", "namespaces"), ("", "nodes"), ("policy", "poddisruptionbudgets")):
        assert extra in reads


def test_rbac_binds_spreadguards_service_account_only() -> None:
    objects = render()
    roles = {(r["kind"], r["metadata"]["name"]) for r in all_of(objects, "ClusterRole") + all_of(objects, "Role")}
    for binding in all_of(objects, "ClusterRoleBinding") + all_of(objects, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "spreadguard", "namespace": NAMESPACE}]
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
    assert pod_spec(objects)["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]


# --- the Deployment and its companions ------------------------------------------------------------------------------


def test_deployment_is_highly_available() -> None:
    objects = render()
    deployment = one(objects, "Deployment", "spreadguard")
    spec, pod = deployment["spec"], pod_spec(objects)
    own = spec["selector"]
    labels = spec["template"]["metadata"]["labels"]
    assert selects(own, labels)
    assert spec["replicas"] == 3
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    terms = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert any(t["topologyKey"] == "kubernetes.io/hostname" and t["labelSelector"] == own for t in terms)
    spread = pod["topologySpreadConstraints"]
    assert any(c["topologyKey"] == "topology.kubernetes.io/zone" and c["labelSelector"] == own for c in spread)
    assert pod["priorityClassName"] == "system-cluster-critical"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and selects(pdb["spec"]["selector"], labels)
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "spreadguard"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert hpa["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    ]
    quota = one(objects, "ResourceQuota")
    assert quota["spec"]["scopeSelector"]["matchExpressions"][0]["values"] == ["system-cluster-critical"]
    assert int(quota["spec"]["hard"]["pods"]) > hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("name", ["manifests", "cert-manager"])
def test_every_container_is_locked_down(name: str) -> None:
    objects = render(name)
    pods = [pod_spec(objects)] + [
        c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in all_of(objects, "CronJob")
    ]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 1000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is True
        for c in (pod.get("initContainers") or []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True, c["name"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
            for which in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][which]), f"{c['name']} {which}"
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{c['name']}: no writable /tmp"


def test_probes_and_server_command_line() -> None:
    objects = render()
    server = container(objects, "webhook")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        get = server[probe]["httpGet"]
        assert (get["path"], get["scheme"], get["port"]) == (path, "HTTPS", "https"), probe
    args = cli_args(server)
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    assert args.command == "serve" and args.bind == "0.0.0.0:8443"
    assert args.tls_cert == f"{mounts['tls']}/tls.crt" and args.tls_key == f"{mounts['tls']}/tls.key"
    assert args.policies == mounts["policies"] == "/etc/spreadguard/policies"
    assert mounts["tls"] == "/etc/spreadguard/tls"
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    config_map = one(objects, "ConfigMap")
    assert volumes["policies"]["configMap"]["name"] == config_map["metadata"]["name"]
    items = {i["key"] for i in volumes["tls"]["secret"]["items"]}
    assert items == {"tls.crt", "tls.key", "ca.crt"}, "the server gets no ca.key"


@pytest.mark.parametrize("name", ["manifests", "dryrun", "cert-manager"])
def test_grant_key_is_a_secret_only_the_server_reads(name: str) -> None:
    objects = render(name)
    server = container(objects, "webhook")
    args = cli_args(server)
    mounts = {m["name"]: m for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    mount = mounts["grant-key"]
    secret = volumes["grant-key"]["secret"]
    assert mount["readOnly"] is True and args.grant_key == f"{mount['mountPath']}/key"
    assert secret["secretName"] == "spreadguard-grant-key" and secret["optional"] is True
    assert secret["items"] == [{"key": "key", "path": "key"}]
    assert not any(secret["secretName"] == o["metadata"]["name"] for o in all_of(objects, "Secret")), "no key shipped"
    for role, rule in _rules(objects):
        if "secrets" in rule["resources"] and set(rule["verbs"]) & {"get", "list", "watch"}:
            names = rule.get("resourceNames") or []
            assert names and "spreadguard-grant-key" not in names, f"{role['metadata']['name']} can read the key"


@pytest.mark.parametrize("name", ["manifests", "two-hooks"])
@pytest.mark.parametrize("where", ["init", "cronjob"])
def test_bootstrap_command_matches_the_objects_it_manages(where: str, name: str) -> None:
    """The same command line serves both installs: bootstrap sets the caBundle of every configuration of the
    given name that exists (the validating one only in the two-hook install)."""
    objects = render(name)
    if where == "init":
        c = container(objects, "certs-bootstrap", init=True)
    else:
        c = one(objects, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    args = cli_args(c)
    assert (args.command, args.certs_command) == ("certs", "bootstrap")
    assert args.namespace == "$(POD_NAMESPACE)"
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert args.service == one(objects, "Service")["metadata"]["name"]
    tls = next(v for v in pod_spec(objects)["volumes"] if v["name"] == "tls")["secret"]
    assert args.secret == tls["secretName"] and tls["optional"] is True
    names = {cfg["metadata"]["name"] for kind in WEBHOOK_KINDS for cfg in all_of(objects, kind)}
    assert set(args.webhook) == names
    role_names = {n for role, rule in _rules(objects) for n in rule.get("resourceNames") or []}
    assert {args.secret, *args.webhook} <= role_names


# --- policies ConfigMap -------------------------------------------------------------------------------------------


def test_policy_copies_are_in_sync() -> None:
    problems = sync_policies.stale()
    assert not problems, "run `python3 manifests/sync_policies.py`:\n" + "\n".join(problems)


def _config_map_files(objects: list[dict]) -> dict[str, str]:
    return one(objects, "ConfigMap")["data"]


def test_config_map_holds_exactly_the_policies() -> None:
    data = _config_map_files(render())
    sources = {p.name: p.read_text(encoding="utf-8") for p in sync_policies.policy_files()}
    assert data == sources, "manifests/base/kustomization.yaml configMapGenerator files != policies/*.yaml"


def test_config_map_loads_as_a_policy_directory(tmp_path: Path) -> None:
    for name in ("manifests", "dryrun"):
        directory = tmp_path / name
        directory.mkdir()
        for file, text in _config_map_files(render(name)).items():
            (directory / file).write_text(text, encoding="utf-8")
        assert load_policies(directory)


def test_dryrun_overlay_puts_every_policy_in_dryrun() -> None:
    base = {p.name: p for f, text in _config_map_files(render()).items() for p in parse_policy_text(text, f)[0]}
    dryrun = {
        p.name: p for f, text in _config_map_files(render("dryrun")).items() for p in parse_policy_text(text, f)[0]
    }
    assert set(dryrun) == set(base)
    for name, policy in dryrun.items():
        assert policy.spec.mode == "dryrun", name
        assert all(m.mode == "dryrun" for m in policy.spec.namespaceModes), name
        a, b = policy.model_dump(), base[name].model_dump()
        for dump in (a, b):
            dump["spec"].pop("mode")
            for entry in dump["spec"]["namespaceModes"]:
                entry.pop("mode")
        assert a == b, f"{name}: the dryrun copy differs in more than its modes"
    objects = render("dryrun")
    volume = next(v for v in pod_spec(objects)["volumes"] if v["name"] == "policies")
    assert volume["configMap"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]
    differ = {"ConfigMap", "Deployment", "ValidatingAdmissionPolicyBinding"}
    assert [o for o in render("dryrun") if o["kind"] not in differ] == [o for o in render() if o["kind"] not in differ]
    # the isolation backstop only records (API server audit log) what it would deny
    bindings = {b["metadata"]["name"]: b["spec"] for b in all_of(render("dryrun"), "ValidatingAdmissionPolicyBinding")}
    base = {b["metadata"]["name"]: b["spec"] for b in all_of(render(), "ValidatingAdmissionPolicyBinding")}
    assert bindings and set(bindings) == set(base)
    for name, spec in bindings.items():
        assert spec == {**base[name], "validationActions": ["Audit"]}, name


def test_dryrun_copies_keep_the_text_and_change_every_mode() -> None:
    text = (
        "# a comment\napiVersion: spreadguard.io/v1alpha1\nkind: HAPolicy\nmetadata: {name: a}\nspec:\n"
        "  namespaceModes:\n    - {namespaces: [research-*], mode: warn}\n    - namespaces: [prod]\n"
        "      mode: enforce  # keep\n  match: {any: [{kinds: [Pod]}]}\n---\napiVersion: spreadguard.io/v1alpha1\n"
        "kind: HAPolicy\nmetadata: {name: b}\nspec:\n  mode: warn\n"
    )
    out = sync_policies.dryrun_text(text)
    assert out.splitlines()[0] == "# a comment" and "mode: enforce  # keep" not in out and "mode: dryrun  # keep" in out
    policies, problems = parse_policy_text(out, "x.yaml")
    assert not problems and [p.spec.mode for p in policies] == ["dryrun", "dryrun"]
    assert [m.mode for m in policies[0].spec.namespaceModes] == ["dryrun", "dryrun"]


def test_dryrun_overlay_lists_every_policy_file() -> None:
    for kustomization in (MANIFESTS / "base" / "kustomization.yaml", RENDERS["dryrun"] / "kustomization.yaml"):
        generator = yaml.safe_load(kustomization.read_text())["configMapGenerator"][0]
        listed = sorted(Path(f).name for f in generator["files"])
        assert listed == sorted(p.name for p in sync_policies.policy_files()), kustomization


# --- eat our own cooking ------------------------------------------------------------------------------------------


def test_spreadguard_passes_its_own_policies() -> None:
    from webhook.engine.decide import evaluate
    from webhook.engine.target import Context

    objects = render()
    deployment = one(objects, "Deployment", "spreadguard")
    assert deployment["spec"]["template"]["metadata"]["labels"]["spreadguard.io/workload"] == "serving"
    policies = load_policies(REPO / "policies")
    decision = evaluate(deployment, Context(operation="CREATE", namespace=NAMESPACE, username="admin"), policies)
    assert decision.allowed, [v.text() for v in decision.violations]
    assert any(p.startswith("serving") for p in decision.policies), decision.policies
    assert decision.patch == [], f"spreadguard would change its own Deployment: {decision.notes}"
    assert not decision.advisories, [v.text() for v in decision.advisories]


# --- cert-manager overlay -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "plain"), [("cert-manager", "manifests"), ("two-hooks-cert-manager", "two-hooks")])
def test_cert_manager_overlay_replaces_bootstrap(name: str, plain: str) -> None:
    objects = render(name)
    certificates = {c["metadata"]["name"]: c for c in objects if c["kind"] == "Certificate"}
    issuers = {i["metadata"]["name"]: i for i in objects if i["kind"] == "Issuer"}
    tls = next(v for v in pod_spec(objects)["volumes"] if v["name"] == "tls")["secret"]
    assert tls["optional"] is False
    serving = next(c for c in certificates.values() if c["spec"]["secretName"] == tls["secretName"])
    service = one(objects, "Service")["metadata"]["name"]
    names = set(serving["spec"]["dnsNames"])
    assert names >= {f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local"}
    assert serving["spec"]["issuerRef"]["name"] in issuers
    ca_issuer = issuers[serving["spec"]["issuerRef"]["name"]]
    ca = next(c for c in certificates.values() if c["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"])
    assert ca["spec"]["isCA"] is True and ca["spec"]["issuerRef"]["name"] in issuers
    configurations = [cfg for kind in WEBHOOK_KINDS for cfg in all_of(objects, kind)]
    assert len(configurations) == (2 if name in TWO_HOOKS else 1)
    for cfg in configurations:  # cert-manager's CA injector writes the caBundle of every configuration
        annotations = cfg["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{serving['metadata']['name']}"
    assert not pod_spec(objects).get("initContainers")
    assert not all_of(objects, "CronJob")
    assert not any(set(rule["verbs"]) & WRITE_VERBS for _role, rule in _rules(objects))
    assert not [b for b in all_of(objects, "RoleBinding")]
    without_cert_manager = [o for o in objects if not o["apiVersion"].startswith("cert-manager.io/")]
    assert {(o["kind"], o["metadata"]["name"]) for o in without_cert_manager} <= {
        (o["kind"], o["metadata"]["name"]) for o in render(plain)
    }
    strip = [o for o in objects if o["kind"] in WEBHOOK_KINDS]
    for cfg in strip:
        del cfg["metadata"]["annotations"]
    assert strip == [o for o in render(plain) if o["kind"] in WEBHOOK_KINDS]


# --- Dockerfile -----------------------------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def _dockerignored(path: str) -> bool:
    ignored = False
    for pattern in (REPO / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerfile_copies_what_exists_and_is_not_ignored() -> None:
    copies = [args for instruction, args in _dockerfile() if instruction == "COPY" and "--from=" not in args]
    assert copies
    for args in copies:
        *sources, _dest = shlex.split(args)
        for source in sources:
            matches = sorted(REPO.glob(source.rstrip("/")))
            assert matches, f"COPY {source}: nothing in the repository matches"
            for match in matches:
                assert not _dockerignored(str(match.relative_to(REPO))), f"COPY {source}: excluded by .dockerignore"
    for needed in ("pyproject.toml", "README.md", "webhook/cli/__init__.py", "policies/training.yaml"):
        assert not _dockerignored(needed), needed
    for dropped in (".git/config", "certs/tls.key", ".venv/bin/python", "tests/test_manifests.py"):
        assert _dockerignored(dropped), dropped


def test_dockerfile_runs_the_cli_as_the_deployment_expects() -> None:
    instructions = _dockerfile()
    froms = [args for instruction, args in instructions if instruction == "FROM"]
    assert froms and all(f.startswith("python:3.11-slim") for f in froms)
    assert any(i == "RUN" and "pip install ." in a for i, a in instructions)
    final = instructions[max(i for i, (ins, _a) in enumerate(instructions) if ins == "FROM") :]
    user = [a for i, a in final if i == "USER"][-1]
    uid = int(user.split(":")[0])
    assert uid != 0
    assert uid == pod_spec(render())["securityContext"]["runAsUser"]
    entrypoint = json.loads([a for i, a in final if i == "ENTRYPOINT"][-1])
    cmd = json.loads([a for i, a in final if i == "CMD"][-1])
    assert entrypoint == ["spreadguard"]
    args = build_parser().parse_args(cmd)
    server = cli_args(container(render(), "webhook"))
    assert args.command == "serve" and args.bind == "0.0.0.0:8443"
    assert (args.policies, args.tls_cert, args.tls_key) == (server.policies, server.tls_cert, server.tls_key)
    assert "8443" in [a for i, a in final if i == "EXPOSE"]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'spreadguard = "webhook.cli:main"' in pyproject, "the image's ENTRYPOINT is this console script"


# --- docs -----------------------------------------------------------------------------------------------------------


def test_install_doc_covers_the_install() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for needle in (
        "kubectl apply -k manifests/",
        "kubectl apply -k manifests/overlays/dryrun",
        "kubectl apply -k manifests/overlays/cert-manager",
        "kubectl apply -k manifests/overlays/two-hooks",
        "manifests/overlays/two-hooks-cert-manager",
        "manifests/components/validate-after-mutation",
        "--dry-run=server",
        "kubectl delete validatingwebhookconfiguration spreadguard",
        "kubectl delete mutatingwebhookconfiguration spreadguard",
        "spreadguard certs bootstrap",
        "cert-manager.io/inject-ca-from",
        f"failurePolicy: {FAILURE_POLICY}",
        f"timeoutSeconds: {TIMEOUT_SECONDS}",
        "python3 manifests/sync_policies.py",
        "docker build",
    ):
        assert needle in text, f"docs/install.md does not mention {needle!r}"
