#!/usr/bin/env python3
"""spreadguard placement-audit benchmark: pods/s and peak memory of ``audit --cluster`` with actual placement.

    python bench/placement_benchmark.py [--pods N] [--nodes N] [--small-pods N --small-nodes N] [--json]

What ``spreadguard audit --cluster -A -o json`` does after the API answers, in a fresh child process per run:
every Node (zone, team taint, 1% with a health taint) into ``Placement.node``; the workloads, owners first,
through ``Auditor.audit`` (engine, blast radius; each workload's groups recorded for the would-be view);
every Pod into ``Placement.pod`` and ``Auditor.audit`` (skipped: owned by an audited workload); then the JSON
report, placement included (every group, every node's and zone's "if it fails"), written to /dev/null.
Objects are generated one at a time, as the scan's pages hand them over; nothing holds them.

The mix (default 100,000 pods on 10,000 nodes in 4 zones), per 100 pods: 30 of Deployments of 10 replicas
(one ReplicaSet each, one replica in ten pending with a scheduler message), 17 of a PyTorchJob gang (1 master +
16 workers), 9 of an elastic PyTorchJob (1 master + 8 workers), 20 of Jobs of parallelism 10, 10 of a
controller spreadguard does not know, 14 lone pods. Pods land on nodes by a deterministic pseudo-random
bin-packing (a group's pods cluster on a few neighbouring nodes). A smaller run (default 10,000 pods on
1,000 nodes) shows how memory grows.

Reported: wall and CPU seconds, pods/s, peak RSS (``ru_maxrss``) above a baseline child that only imports
and loads the policies, and the JSON report's size. Bounded: 3 children; exit 0, or 1 if a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GPU = [{"name": "main", "image": "nvcr.io/nvidia/pytorch:24.05-py3", "resources": {"limits": {"nvidia.com/gpu": 8}}}]
KF = "training.kubeflow.org"
PENDING = "0/10000 nodes are available: 9990 Insufficient nvidia.com/gpu, 10 node(s) had untolerated taint."
ZONES = 4


def _ns(i: int) -> str:
    return f"team-{i % 20}"


def nodes(n: int) -> Iterator[dict]:
    for i in range(n):
        taints = [{"key": "spreadguard.io/team", "value": f"team-{i % 20}", "effect": "NoSchedule"}]
        if i % 100 == 7:
            taints.append({"key": "nvidia.com/gpu-xid-error", "effect": "NoSchedule"})
        yield {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"gpu-{i:05d}",
                "labels": {
                    "kubernetes.io/hostname": f"gpu-{i:05d}",
                    "topology.kubernetes.io/zone": f"zone-{i * ZONES // n}",
                    "pool": "h100",
                },
            },
            "spec": {"taints": taints},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}},
        }


def _meta(name: str, ns: str, uid: str, owner: tuple[str, str, str] | None = None, labels: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": ns, "uid": uid, "labels": labels or {}}
    if owner:
        kind, oname, ouid = owner
        meta["ownerReferences"] = [{"apiVersion": "x/v1", "kind": kind, "name": oname, "uid": ouid, "controller": True}]
    return meta


def _pod(name: str, ns: str, owner: tuple[str, str, str] | None, labels: dict, node: str | None) -> dict:
    spec: dict = {"containers": GPU}
    status: dict = {"phase": "Running"}
    if node:
        spec["nodeName"] = node
    else:
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": PENDING}
        status = {"phase": "Pending", "conditions": [cond]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta(name, ns, f"uid-{name}", owner, labels),
        "spec": spec,
        "status": status,
    }


def _pytorchjob(name: str, ns: str, workers: int, elastic: bool) -> dict:
    spec: dict = {
        "pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "template": {"spec": {"containers": GPU}}},
            "Worker": {"replicas": workers, "template": {"spec": {"containers": GPU}}},
        }
    }
    if elastic:
        spec["elasticPolicy"] = {"minReplicas": 2, "maxReplicas": workers}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": _meta(name, ns, f"uid-{name}"),
        "spec": spec,
    }


def plan(pods: int) -> dict[str, int]:
    """How many of each workload make ``pods`` pods (the proportions of the module docstring)."""
    unit = pods // 100  # per 100 pods: 30 of Deployments, 17 + 9 of PyTorchJobs, 20 of Jobs, 10 foreign, 14 lone
    return {"deployments": 3 * unit, "gangs": unit, "elastic": unit, "jobs": 2 * unit, "foreign": unit}


def objects(pods: int, node_count: int) -> Iterator[dict]:
    """Workloads (owners first, as the scan lists them), then their pods, then the others' pods."""
    rng = random.Random(42)
    p = plan(pods)
    template = {"metadata": {"labels": {}}, "spec": {"containers": GPU}}

    def near(k: int) -> list[str]:  # a bin-packing scheduler: a group's pods on a few neighbouring nodes
        start = rng.randrange(node_count)
        return [f"gpu-{(start + rng.randrange(max(2, k // 3))) % node_count:05d}" for _ in range(k)]

    for i in range(p["deployments"]):
        labels = {"app": f"svc-{i}"}
        t = {**template, "metadata": {"labels": labels}}
        yield {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(f"svc-{i}", _ns(i), f"dep-{i}"),
            "spec": {"replicas": 10, "selector": {"matchLabels": labels}, "template": t},
        }
    for i in range(p["gangs"]):
        yield _pytorchjob(f"gang-{i}", _ns(i), 16, elastic=False)
    for i in range(p["elastic"]):
        yield _pytorchjob(f"elastic-{i}", _ns(i), 8, elastic=True)
    for i in range(p["deployments"]):  # depth 1
        yield {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": _meta(f"svc-{i}-5d4f", _ns(i), f"rs-{i}", ("Deployment", f"svc-{i}", f"dep-{i}")),
            "spec": {"replicas": 10, "selector": {"matchLabels": {"app": f"svc-{i}"}}, "template": template},
        }
    for i in range(p["jobs"]):  # depth 2
        yield {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _meta(f"job-{i}", _ns(i), f"job-{i}"),
            "spec": {"parallelism": 10, "template": template},
        }
    count = 0
    for i in range(p["deployments"]):
        for r, node in enumerate(near(10)):
            labels = {"app": f"svc-{i}", "pod-template-hash": "5d4f"}
            yield _pod(
                f"svc-{i}-5d4f-{r}", _ns(i), ("ReplicaSet", f"svc-{i}-5d4f", f"rs-{i}"), labels, node if r else None
            )
            count += 1
    for kind, n, workers in (("gang", p["gangs"], 16), ("elastic", p["elastic"], 8)):
        for i in range(n):
            owner = ("PyTorchJob", f"{kind}-{i}", f"uid-{kind}-{i}")
            for r, node in enumerate(near(workers + 1)):
                rtype = "master" if r == 0 else "worker"
                labels = {f"{KF}/job-name": f"{kind}-{i}", f"{KF}/replica-type": rtype}
                yield _pod(f"{kind}-{i}-{rtype}-{r}", _ns(i), owner, labels, node)
                count += 1
    for i in range(p["jobs"]):
        for r, node in enumerate(near(10)):
            labels = {"batch.kubernetes.io/job-name": f"job-{i}"}
            yield _pod(f"job-{i}-{r}", _ns(i), ("Job", f"job-{i}", f"job-{i}"), labels, node)
            count += 1
    for i in range(p["foreign"]):
        for r, node in enumerate(near(10)):
            yield _pod(f"wf-{i}-{r}", _ns(i), ("Workflow", f"wf-{i}", f"wf-{i}"), {"wf": f"wf-{i}"}, node)
            count += 1
    i = 0
    while count < pods:  # lone pods up to the total
        yield _pod(f"lone-{i}", _ns(i), None, {}, f"gpu-{rng.randrange(node_count):05d}")
        count += 1
        i += 1


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class _Counting:
    """A /dev/null that counts what is written to it."""

    def __init__(self) -> None:
        self.size = 0
        self._null = open(os.devnull, "w")  # noqa: SIM115 - closed in close()

    def write(self, text: str) -> int:
        self.size += len(text)
        return self._null.write(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._null.close()


def child(mode: str, pods: int, node_count: int) -> dict:
    from webhook.audit import auditor as audit
    from webhook.audit import report
    from webhook.audit.placement import Placement
    from webhook.engine.policy import load_policies

    policies = load_policies(REPO / "policies")
    actual = Placement(policies)
    auditor = audit.Auditor(policies, pdbs_first=True, placement=actual)
    base = _rss_mib()
    if mode == "baseline":
        return {"rssMiB": base}
    t0, c0 = time.perf_counter(), time.process_time()
    out = _Counting()
    writer = report.JsonWriter(out)  # type: ignore[arg-type]
    for ns in range(20):
        auditor.namespace({"metadata": {"name": f"team-{ns}", "labels": {"spreadguard.io/team": f"team-{ns}"}}})
    for node in nodes(node_count):
        actual.node(node)
    seen = 0
    for obj in objects(pods, node_count):
        result = auditor.audit(obj, "cluster")
        if result is not None:
            writer.add(result)
        if obj["kind"] == "Pod":
            actual.pod(obj)
            seen += 1
    listed = time.perf_counter() - t0
    stream_rss = _rss_mib()  # peak so far: everything streamed, counters held, no report built yet
    placed = actual.report()
    writer.placement(placed)
    writer.close(auditor.summary())
    out.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "pods": seen,
        "nodes": node_count,
        "groups": placed.group_count,
        "audited": auditor.totals.resources,
        "streamSeconds": round(listed, 2),
        "wall": round(wall, 2),
        "cpu": round(cpu, 2),
        "reportMiB": round(out.size / 2**20, 1),
        "streamRssMiB": round(stream_rss, 1),
        "rssMiB": round(_rss_mib(), 1),
        "startRssMiB": round(base, 1),
    }


def run_child(mode: str, pods: int, node_count: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--pods", str(pods), "--nodes", str(node_count)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--small-pods", type=int, default=10_000, help="the smaller run (0: skip)")
    ap.add_argument("--small-nodes", type=int, default=1_000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["baseline", "run"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.pods, args.nodes)))
        return 0
    if args.pods < 100 or args.nodes < 10:
        print("--pods must be at least 100 and --nodes at least 10", file=sys.stderr)
        return 2
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"}
    try:
        result["baselineRssMiB"] = round(run_child("baseline", 0, 1)["rssMiB"], 1)
        runs = [(args.small_pods, args.small_nodes)] if args.small_pods else []
        result["runs"] = [run_child("run", p, n) for p, n in [*runs, (args.pods, args.nodes)]]
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"placement benchmark failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"spreadguard placement-audit benchmark ({result['machine']})")
    print(f"baseline RSS (imports + policies): {result['baselineRssMiB']} MiB")
    print(
        f"{'pods':>7} {'nodes':>6} {'groups':>6} {'wall s':>7} {'cpu s':>6} {'pods/s':>7} "
        f"{'report MiB':>10} {'peak RSS MiB':>12}"
    )
    for r in result["runs"]:
        print(
            f"{r['pods']:>7} {r['nodes']:>6} {r['groups']:>6} {r['wall']:>7.1f} {r['cpu']:>6.1f} "
            f"{round(r['pods'] / r['wall']):>7} {r['reportMiB']:>10} {r['rssMiB']:>12.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
