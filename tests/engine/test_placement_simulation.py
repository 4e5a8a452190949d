"""bench/placement_simulation.py computes the figures of the report: from a pod list (nodeName + node
zones) per group class, nodes, zones, share lost per node failure, expected restarts; and from its
bin-packing model, the same with and without spreadguard's constraints."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("placement_simulation", REPO / "bench" / "placement_simulation.py")
assert spec and spec.loader
bench = importlib.util.module_from_spec(spec)
sys.modules["placement_simulation"] = bench
spec.loader.exec_module(bench)

ZONE = "topology.kubernetes.io/zone"


def pod(name: str, node: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ml", "labels": labels}, "spec": {"nodeName": node}}


def test_pod_list_analysis() -> None:
    kf = {"training.kubeflow.org/job-name": "bert"}
    pods = [
        pod("m", "n1", **kf, **{"training.kubeflow.org/replica-type": "master"}),
        *(pod(f"w{i}", f"n{1 + i // 2}", **kf, **{"training.kubeflow.org/replica-type": "worker"}) for i in range(4)),
        *(pod(f"r{i}", "n9", **{"ray.io/cluster": "rl", "ray.io/group": "gpu"}) for i in range(2)),
        pod("r2", "n8", **{"ray.io/cluster": "rl", "ray.io/group": "gpu"}),
        pod("pending", "", **kf),
    ]
    nodes = {"n1": {ZONE: "a"}, "n2": {ZONE: "b"}, "n8": {ZONE: "a"}, "n9": {ZONE: "a"}}
    rows = {r["group"]: r for r in bench.summarize(bench.analyse(pods, nodes), 19.0, 30.0)}
    assert rows["bert/worker"]["gangNodes"] == 2 and rows["bert/worker"]["gangZones"] == 2
    assert rows["bert/worker"]["restarts"] == pytest.approx(1.14)  # 2 nodes x 19/1000 x 30
    assert rows["bert/master"]["restarts"] == pytest.approx(1.14)  # the same gang, counted on its nodes
    ray = rows["rl/gpu"]
    assert (ray["class"], ray["pods"], ray["nodes"], ray["shareLostPerNodeFailure"]) == ("replicas", 3, 2, 0.667)
    assert ray["restarts"] == 0 and ray["partialLosses"] == pytest.approx(1.14)


def test_simulation_compacts_gangs_and_spreads_replicas(capsys: pytest.CaptureFixture) -> None:
    assert (
        bench.main(["--simulate", str(REPO / "bench" / "placement_scenario.yaml"), "--scoring", "least", "--json"]) == 0
    )
    [result] = json.loads(capsys.readouterr().out).values()
    by = {cfg: {r["group"]: r for r in out["groups"]} for cfg, out in result.items()}
    assert by["without"]["bert/worker"]["gangNodes"] == 5  # the default scheduler spreads the gang
    assert by["spreadguard"]["bert/worker"]["gangNodes"] == 2  # 10 GPUs: ceil(10/8) nodes
    assert by["spreadguard"]["bert/worker"]["gangZones"] == 1
    assert by["spreadGangs"]["bert/worker"]["gangNodes"] == 4
    assert by["spreadguard"]["rl/gpu-workers"]["shareLostPerNodeFailure"] == 0.25
    assert result["spreadguard"]["gangRestarts"] < result["without"]["gangRestarts"]
