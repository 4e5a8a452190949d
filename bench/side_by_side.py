#!/usr/bin/env python3
"""spreadguard next to a do-nothing Flask+gunicorn webhook, in one run: what one admission costs each.

    python bench/side_by_side.py [--seconds S] [--object FIXTURE] [--json]

Starts both servers on 127.0.0.1 with the same TLS certificate, 2 workers x 8 threads each
(``spreadguard serve`` with its own worker; ``bench/noop_webhook.py`` under plain gunicorn gthread), and
sends them the same admission over TLS keep-alive connections, as the API server does:

- spreadguard as installed (``manifests/base``: one mutating configuration): ``POST /admit`` with the object;
- spreadguard with two hooks (``manifests/overlays/two-hooks``): ``POST /mutate`` with the object, then
  ``POST /validate`` with the object after spreadguard's patch (what the API server sends the validating hook);
- the do-nothing webhook: one call per admission (one webhook), and also the same pair of calls.

Bodies are written as the API server writes them (compact JSON, HTML characters escaped, a newline at the
end: ``review.api_server_bytes``, which reproduces every captured fixture byte for byte).

Each measurement runs for ``--seconds`` per server, interleaved (A, B, A, B) to share the machine's noise,
sequentially (one client) and with 8 concurrent clients (separate processes, one keep-alive connection
each: client threads would queue on one GIL). Reported per admission: client-side wall time
(mean, p50, p99) and the CPU the server's processes used (utime+stime of the gunicorn master and workers
from /proc, divided by the admissions answered), and the ratios spreadguard / do-nothing. Server CPU is the
steadier figure on a shared machine: the client runs on the same cores.
"""

from __future__ import annotations

import argparse
import base64
import copy
import http.client
import json
import multiprocessing
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonpatch

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "data" / "admission"
DEFAULT_OBJECT = "128-Pod-bert-worker-0-CREATE-mutate.json"
TICK = os.sysconf("SC_CLK_TCK")
NICE = int(os.environ.get("SIDE_BY_SIDE_NICE", "0"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user+system) of ``pid`` and its children, from /proc."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        if int(entry) == pid or ppid == pid:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


class Server:
    def __init__(self, name: str, argv: list[str], port: int, cafile: Path, cwd: Path) -> None:
        self.name, self.port, self.cafile = name, port, str(cafile)
        context = ssl.create_default_context(cafile=self.cafile)
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    conn.close()
                    time.sleep(1.0)  # every worker up
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{name} did not start; log: {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _client(port: int, cafile: str, calls: list[tuple[str, bytes]], seconds: float, out: Any) -> None:
    """One client process: one keep-alive TLS connection, ``calls`` (one admission) repeated for ``seconds``."""
    os.nice(NICE)
    context = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    try:
        while time.monotonic() < stop:
            started = time.perf_counter()
            for path, body in calls:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200 or b'"allowed"' not in data:
                    out.send(("error", f"{path}: {resp.status} {data[:200]!r}"))
                    return
            latencies.append(time.perf_counter() - started)
        out.send(("ok", latencies))
    except Exception as exc:  # reported to the parent
        out.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
        out.close()


def run_clients(
    server: Server, calls: list[tuple[str, bytes]], clients: int, seconds: float
) -> tuple[list[float], float, int]:
    """``clients`` processes each repeating ``calls`` (one admission) for ``seconds``: latencies, server CPU, count.

    Processes, not threads: the API server sends concurrently from Go, and client threads in one Python
    process would queue on its GIL and show that queueing as the server's latency.
    """
    ctx = multiprocessing.get_context("fork")
    pipes = [ctx.Pipe(duplex=False) for _ in range(clients)]
    procs = [
        ctx.Process(target=_client, args=(server.port, server.cafile, calls, seconds, send), daemon=True)
        for _recv, send in pipes
    ]
    cpu0 = tree_cpu(server.proc.pid)
    for proc in procs:
        proc.start()
    flat: list[float] = []
    errors: list[str] = []
    for (recv, _send), proc in zip(pipes, procs, strict=True):
        if recv.poll(seconds + 30):
            status, payload = recv.recv()
            if status == "ok":
                flat += payload
            else:
                errors.append(f"{server.name} {payload}")
        else:
            errors.append(f"{server.name}: a client did not finish")
        proc.join(5)
    cpu = tree_cpu(server.proc.pid) - cpu0
    if errors:
        raise SystemExit(errors[0])
    return flat, cpu, len(flat)


def summary(latencies: list[float], cpu: float, count: int) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "admissions": count,
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "server_cpu_ms": cpu / max(1, count) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement and server (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--object", default=DEFAULT_OBJECT, help=f"captured -mutate fixture (default {DEFAULT_OBJECT})")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="spreadguard's --log-level (default info, as installed: one decision line per call)",
    )
    parser.add_argument("--no-admit", action="store_true", help="skip /admit (to measure a version without it)")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from webhook.engine.policy import load_policies
    from webhook.server.review import api_server_bytes, review

    review_body = json.loads((FIXTURES / args.object).read_text())
    answer = review(review_body, load_policies(REPO / "policies"), "mutate")["response"]
    patch = json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []
    validate_body = copy.deepcopy(review_body)
    validate_body["request"]["object"] = jsonpatch.apply_patch(review_body["request"]["object"], patch)
    mutate_raw, validate_raw = api_server_bytes(review_body), api_server_bytes(validate_body)

    tmp = Path(tempfile.mkdtemp(prefix="side-by-side-"))
    py = [sys.executable]
    subprocess.run(
        [*py, "-m", "webhook.cli", "certs", "generate", "--out", str(tmp)], cwd=REPO, check=True, capture_output=True
    )
    sg_port, noop_port = free_port(), free_port()
    spreadguard = Server(
        "spreadguard",
        [*py, "-m", "webhook.cli", "serve", "--policies", "policies", "--tls-cert", str(tmp / "tls.crt"),
         "--tls-key", str(tmp / "tls.key"), "--bind", f"127.0.0.1:{sg_port}", "--workers", "2", "--threads", "8",
         "--cluster-cache", "off", "--log-level", args.log_level],
        sg_port, tmp / "ca.crt", REPO,
    )  # fmt: skip
    noop = Server(
        "noop",
        [*py, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "2", "--threads", "8", "--keep-alive",
         "120", "--certfile", str(tmp / "tls.crt"), "--keyfile", str(tmp / "tls.key"), "--bind",
         f"127.0.0.1:{noop_port}", "--log-level", "warning", "noop_webhook:app"],
        noop_port, tmp / "ca.crt", REPO / "bench",
    )  # fmt: skip
    pair = [("/mutate", mutate_raw), ("/validate", validate_raw)]
    cases = {
        "spreadguard as installed (admit)": (spreadguard, [("/admit", mutate_raw)]),
        "spreadguard two hooks (mut+val)": (spreadguard, pair),
        "do-nothing (one call)": (noop, [("/mutate", mutate_raw)]),
        "do-nothing (mutate+validate)": (noop, pair),
    }
    if args.no_admit:
        del cases["spreadguard as installed (admit)"]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        for clients in (1, 8):
            raw: dict[str, tuple[list[float], float, int]] = {name: ([], 0.0, 0) for name in cases}
            for _round in range(args.rounds):
                for name, (server, calls) in cases.items():
                    lat, cpu, count = run_clients(server, calls, clients, args.seconds)
                    old = raw[name]
                    raw[name] = (old[0] + lat, old[1] + cpu, old[2] + count)
            results[f"{clients} client(s)"] = {name: summary(*v) for name, v in raw.items()}
    finally:
        spreadguard.stop()
        noop.stop()

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"object: {args.object} ({len(mutate_raw)} bytes), {args.rounds} x {args.seconds:.0f} s per figure")
    for load, by_case in results.items():
        print(f"\n{load}")
        print(f"  {'':32} {'admissions':>10} {'mean ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms':>14}")
        for name, s in by_case.items():
            print(
                f"  {name:32} {s['admissions']:>10} {s['mean_ms']:>8.2f} {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} "
                f"{s['server_cpu_ms']:>14.2f}"
            )
        one, two = by_case["do-nothing (one call)"], by_case["do-nothing (mutate+validate)"]
        for name in ("spreadguard as installed (admit)", "spreadguard two hooks (mut+val)"):
            if name not in by_case:
                continue
            sg = by_case[name]
            print(
                f"  {name} / do-nothing one call: time {sg['mean_ms'] / one['mean_ms']:.2f}, "
                f"CPU {sg['server_cpu_ms'] / one['server_cpu_ms']:.2f}; / do-nothing pair: time "
                f"{sg['mean_ms'] / two['mean_ms']:.2f}, CPU {sg['server_cpu_ms'] / two['server_cpu_ms']:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
