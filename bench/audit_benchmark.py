#!/usr/bin/env python3
"""spreadguard audit benchmark: objects/s and peak memory of the whole audit pipeline.

    python bench/audit_benchmark.py [--objects N] [--small N] [--json]

Objects: N generated (default 100,000), a mix like a real cluster's: 65% Pods (half lone GPU pods, half
made by ReplicaSets that are not in the input, so every one goes through the engine as the Pod
backstop), 10% Deployments, 10% PyTorchJobs, 5% Jobs, 5% StatefulSets, 5% ConfigMaps (counted and
skipped), 2% of the workloads pinned to one node (denied), and a PodDisruptionBudget for one
Deployment in 1,000 (blocking every eviction).

Runs, each in a fresh child process that reports wall and CPU time and its peak RSS (``ru_maxrss``):

1. ``file``: the objects written as one multi-document YAML file, then exactly what
   ``spreadguard audit -f FILE -o json`` does: read and parse (``manifests.read_documents``), audit
   (``audit.Auditor``: the engine with enforce semantics, blast radius, PDB check), JSON report to
   /dev/null. PDBs may come after what they select, so every audited group is indexed (~0.5 KB each).
2. ``cluster``: the same objects as dicts, PDBs first, as ``spreadguard audit --cluster`` receives them
   from the scan (no YAML, no per-object index); ``--small`` objects (default 10,000) too: with memory
   streamed, peak RSS is the same for both sizes.

A baseline child that only imports and loads the policies gives the RSS every run starts from.
Bounded: at most 3 runs; exit status 0, or 1 if a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GPU = {"limits": {"nvidia.com/gpu": 8}, "requests": {"cpu": "8", "memory": "64Gi"}}


def _container(name: str = "main", gpu: bool = True) -> dict:
    return {"name": name, "image": "nvcr.io/nvidia/pytorch:24.05-py3", **({"resources": GPU} if gpu else {})}


def _template(labels: dict, pinned: bool) -> dict:
    spec: dict = {"containers": [_container()]}
    if pinned:
        spec["nodeSelector"] = {"kubernetes.io/hostname": "gpu-node-1"}
    return {"metadata": {"labels": labels}, "spec": spec}


def _pdb(i: int) -> dict:
    """A PDB for the Deployment ``obj-{i}`` (3 replicas) with minAvailable 3: it blocks every eviction."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"pdb-{i}", "namespace": f"team-{i % 20}", "uid": f"pdb-{i}"},
        "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": f"obj-{i}"}}},
    }


def _has_pdb(i: int) -> bool:
    return i % 1000 == 13  # a Deployment slot


def generate(n: int, pdbs_first: bool = False) -> Iterator[dict]:
    """``n`` objects, deterministic: the mix described in the module docstring, plus a PDB for one
    Deployment in 1,000 (after it, as in a manifest; or all first, as the cluster scan lists them)."""
    if pdbs_first:
        yield from (_pdb(i) for i in range(n) if _has_pdb(i))
    for i in range(n):
        if _has_pdb(i) and not pdbs_first:
            yield _pdb(i)
        ns = f"team-{i % 20}"
        team = {"spreadguard.io/team": ns}
        pinned = i % 50 == 7
        slot = i % 20
        name = f"obj-{i}"
        meta = {"name": name, "namespace": ns, "uid": f"uid-{i}", "labels": {"app": name, **team}}
        if slot < 13:  # Pods
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": [_container()]}}
            if slot % 2:
                meta["labels"]["pod-template-hash"] = "5d4f"
                meta["ownerReferences"] = [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"rs-{i}",
                        "uid": f"rs-{i}",
                        "controller": True,
                    }
                ]
            yield pod
        elif slot < 15:
            yield {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": name}},
                    "template": _template({"app": name, **team}, pinned),
                },
            }
        elif slot < 17:
            yield {
                "apiVersion": "kubeflow.org/v1",
                "kind": "PyTorchJob",
                "metadata": meta,
                "spec": {
                    "pytorchReplicaSpecs": {
                        "Master": {"replicas": 1, "template": _template(team, False)},
                        "Worker": {"replicas": 8, "template": _template(team, pinned)},
                    }
                },
            }
        elif slot == 17:
            yield {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": meta,
                "spec": {"parallelism": 4, "template": _template(team, pinned)},
            }
        elif slot == 18:
            yield {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": meta,
                "spec": {
                    "replicas": 2,
                    "serviceName": name,
                    "selector": {"matchLabels": {"app": name}},
                    "template": _template({"app": name, **team}, pinned),
                },
            }
        else:
            yield {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"config.yaml": "lr: 0.001"}}


def write_manifest(path: Path, n: int) -> int:
    import yaml

    dump = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w", encoding="utf-8") as fh:
        for obj in generate(n):
            fh.write("---\n")
            yaml.dump(obj, fh, Dumper=dump, sort_keys=False)
    return path.stat().st_size


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(mode: str, source: str, path: str, n: int) -> dict:
    """One measured run in this (fresh) process."""
    from webhook.audit import auditor as audit
    from webhook.audit import manifests, report
    from webhook.engine.policy import load_policies

    policies = load_policies(REPO / "policies")
    auditor = audit.Auditor(policies, pdbs_first=source == "cluster")
    base = _rss_mib()
    if mode == "baseline":
        return {"rssMiB": base}
    t0, c0 = time.perf_counter(), time.process_time()
    with open(os.devnull, "w") as devnull:
        writer = report.JsonWriter(devnull)
        if source == "file":
            stream = ((d.obj, d.source) for d in manifests.read_documents([path]) if d.obj is not None)
        else:
            stream = ((obj, "cluster") for obj in generate(n, pdbs_first=True))
        for obj, src in stream:
            result = auditor.audit(obj, src)
            if result is not None:
                writer.add(result)
        for result in auditor.finish():
            writer.add(result)
        summary = auditor.summary()
        writer.close(summary)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    objects = (
        summary["resources"]
        + sum(summary["skipped"]["other kinds"].values())
        + sum(v for k, v in summary["skipped"].items() if k != "other kinds")
    )
    return {
        "objects": objects,
        "audited": summary["resources"],
        "denied": summary["denied"],
        "pdbFindings": summary["byRule"].get("pdb-blocks-eviction", 0),
        "wall": wall,
        "cpu": cpu,
        "rssMiB": _rss_mib(),
        "startRssMiB": base,
    }


def run_child(mode: str, source: str, path: Path, n: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--source", source, "--path", str(path), "--objects", str(n)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {mode} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=10_000, help="size of the run that checks memory is flat (0: skip)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=["baseline", "run"], help=argparse.SUPPRESS)
    ap.add_argument("--source", choices=["file", "cluster"], default="file", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.source, args.path or "", args.objects)))
        return 0

    report: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "runs": [],
    }
    plan = [("file", args.objects), ("cluster", args.objects)] + ([("cluster", args.small)] if args.small else [])
    try:
        with tempfile.TemporaryDirectory(prefix="sg-audit-bench-") as tmp:
            report["baselineRssMiB"] = round(run_child("baseline", "file", Path(tmp), 0)["rssMiB"], 1)
            for source, n in plan:
                path = Path(tmp) / f"objects-{n}.yaml"
                size = write_manifest(path, n) if source == "file" else 0
                r = run_child("run", source, path, n)
                r.update(source=source, n=n, fileMiB=round(size / 2**20, 1), perSecond=round(r["objects"] / r["wall"]))
                report["runs"].append(r)
                path.unlink(missing_ok=True)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"audit benchmark failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"spreadguard audit benchmark ({report['machine']})")
    print(f"baseline RSS (imports + policies): {report['baselineRssMiB']} MiB")
    print(
        f"{'source':<8} {'objects':>8} {'file MiB':>8} {'audited':>8} {'denied':>7} {'wall s':>7} {'cpu s':>7} "
        f"{'PDB':>4} {'objects/s':>9} {'peak RSS MiB':>12}"
    )
    for r in report["runs"]:
        print(
            f"{r['source']:<8} {r['objects']:>8} {r['fileMiB']:>8} {r['audited']:>8} {r['denied']:>7} "
            f"{r['wall']:>7.1f} {r['cpu']:>7.1f} {r['pdbFindings']:>4} {r['perSecond']:>9} {r['rssMiB']:>12.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
