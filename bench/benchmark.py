#!/usr/bin/env python3
"""spreadguard benchmark: engine time, fixed-rate latency, peak throughput and memory of the real server.

    python bench/benchmark.py [--duration S] [--workers N] [--threads N] [--json]

1. Engine: ``evaluate`` in a loop on a captured training Pod and PyTorchJob (mean/p99 microseconds per call,
   and CPU time per call, which other processes on a shared machine inflate less than wall time).
2. Starts the real server (``python -m webhook.cli serve``, gunicorn gthread, TLS) with certificates generated
   into a temporary directory, on a free port of 127.0.0.1, and waits for ``/readyz`` and every worker.
3. Fixed rate: POST /admit with the Pod at a fixed rate (default 300/s) from client processes, each with one
   persistent TLS keep-alive connection; open loop, latency measured from each request's *scheduled* send
   time so that queueing is not hidden (no coordinated omission).
4. Peak: closed loop, N keep-alive clients sending as fast as they can.
5. Memory: RSS (and PSS) of the gunicorn master and of each worker, read from /proc after the load.
6. When a goal is missed (or with --diagnose): where the time goes: cProfile of the engine plus direct timings
   of the library calls it makes, the Flask app called in-process (no socket, TLS or gunicorn), one request at a
   time over HTTPS for /admit and /healthz, and a GET /healthz peak run (HTTP+TLS+gunicorn without the engine);
   from these, the server's CPU per /admit request is split into engine, admission+Flask and HTTP+TLS+gunicorn.

Before each phase the script waits (--quiet-wait, default 20 s) for the machine to be under 10% busy, and it
reports the CPU other processes used during each phase, with a warning when that distorts the figures.

The load generator runs on the same machine as the server and competes with it for CPU; the report shows
the CPU time each side used so that server cost per request can be read independently of the client.
Only 127.0.0.1 traffic; every loop is time-bounded; the server is always stopped. Exit status: 0, or 1 if any
request failed (transport error, non-200 or a response that is not the AdmissionReview answer), 2 if the
benchmark could not run (fixtures missing, server did not start).
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import io
import json
import multiprocessing
import os
import platform
import pstats
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_FIXTURES = REPO / "tests" / "data" / "admission"  # captured from a real kube-apiserver
POD_FIXTURE = "128-Pod-bert-worker-0-CREATE-mutate.json"
JOB_FIXTURE = "100-PyTorchJob-bert-CREATE-mutate.json"

GOAL_ENGINE_US = 200.0  # mean evaluate() time per Pod
GOAL_P99_MS = 5.0  # p99 latency at the fixed rate
GOAL_PEAK_RPS = 1000.0  # closed-loop throughput

CLK_TCK = os.sysconf("SC_CLK_TCK")
REQUEST_TIMEOUT_S = 10.0  # per socket operation
START_TIMEOUT_S = 60.0  # server start, /readyz and all workers up
PHASE_GRACE_S = 60.0  # how long a load phase may overrun its duration before it is abandoned
CLIENT_WARMUP_REQUESTS = 20
PROFILE_CALLS = 1000


class BenchError(Exception):
    """The benchmark cannot run (exit 2)."""


# --------------------------------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


def summarize(values: list[float], scale: float) -> dict[str, float]:
    """mean/p50/p90/p99/max of ``values`` multiplied by ``scale`` (e.g. seconds -> ms)."""
    v = sorted(values)
    if not v:
        return {"n": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    return {
        "n": len(v),
        "mean": sum(v) / len(v) * scale,
        "p50": percentile(v, 50) * scale,
        "p90": percentile(v, 90) * scale,
        "p99": percentile(v, 99) * scale,
        "max": v[-1] * scale,
    }


# --------------------------------------------------------------------------------------------------- /proc


def proc_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of one process (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is the state
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over CPUs, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in first[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / CLK_TCK, sum(ticks) / CLK_TCK


def wait_for_quiet(max_wait: float, threshold_pct: float = 10.0) -> float | None:
    """Wait (at most ``max_wait`` s) for a 1 s sample in which the machine is under ``threshold_pct`` busy.

    Returns the busy percentage of the last sample, or None when ``max_wait`` is 0. On a shared machine this
    keeps other people's test runs out of the figures when they pause.
    """
    if max_wait <= 0:
        return None
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = machine_busy_seconds()
        time.sleep(1.0)
        busy1, total1 = machine_busy_seconds()
        pct = (busy1 - busy0) / max(1e-9, total1 - total0) * 100
        if pct < threshold_pct or time.monotonic() >= deadline:
            return pct


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` from /proc/<pid>/task/*/children."""
    out: set[int] = set()
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            out.update(int(x) for x in (task / "children").read_text().split())
        except OSError:
            continue
    return sorted(out)


def memory_of(pid: int) -> dict[str, float | None]:
    """VmRSS and, when readable, PSS (shared pages divided among the sharers) in MiB."""
    rss = pss = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return {"pid": pid, "rss_mib": rss, "pss_mib": pss}


# --------------------------------------------------------------------------------------------------- engine


def load_fixture(fixtures: Path, name: str) -> tuple[bytes, dict]:
    path = fixtures / name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"fixture {path}: {exc.strerror or exc} (use --fixtures DIR)") from None
    return raw, json.loads(raw)


def time_calls(fn, iterations: int, time_limit: float) -> dict[str, float]:
    """Call ``fn`` ``iterations`` times (at most ``time_limit`` s) after a warm-up; per-call perf_counter_ns.

    Besides the wall-time statistics, ``cpu_us`` is the process CPU time per call over the whole loop: other
    processes on a shared machine inflate wall time (the process waits for a CPU) but not CPU time.
    """
    for _ in range(max(100, iterations // 10)):
        fn()
    times: list[int] = []
    clock = time.perf_counter_ns
    stop = time.monotonic() + time_limit
    cpu0 = time.process_time_ns()
    for i in range(iterations):
        start = clock()
        fn()
        times.append(clock() - start)
        if i % 256 == 0 and time.monotonic() > stop:
            break
    cpu = time.process_time_ns() - cpu0
    stats = summarize(times, 1e-3)  # ns -> us
    out = {f"{k}_us": v for k, v in stats.items() if k != "n"}
    out["iterations"] = stats["n"]
    out["cpu_us"] = cpu / max(1, len(times)) / 1e3
    return out


def _object_and_context(review: dict) -> tuple[dict, Any]:
    """The object and the engine context of a review, through the server's one typed path."""
    from webhook.server.review import AdmissionRequest

    req = AdmissionRequest.from_body(review)
    return req.object, req.context()


def bench_engine(review: dict, policies: list, iterations: int, time_limit: float) -> dict[str, Any]:
    """Time ``evaluate`` on the review's object."""
    from webhook.engine.decide import evaluate

    obj, ctx = _object_and_context(review)
    decision = evaluate(obj, ctx, policies)
    return {
        "object": f"{obj.get('kind')} {(obj.get('metadata') or {}).get('name')}",
        "patch_ops": len(decision.patch),
        "allowed": decision.allowed,
        **time_calls(lambda: evaluate(obj, ctx, policies), iterations, time_limit),
    }


def profile_engine(review: dict, policies: list, calls: int) -> dict[str, Any]:
    """cProfile ``calls`` evaluations; split evaluate()'s time among its direct callees.

    cProfile charges a fixed cost to every Python call, so it overstates functions made of many small calls
    (``copy.deepcopy`` recursing over every node of the object): the library operations evaluate() calls
    directly are therefore also timed without the profiler (``direct``).
    """
    from webhook.engine.decide import evaluate

    obj, ctx = _object_and_context(review)
    for _ in range(100):
        evaluate(obj, ctx, policies)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        evaluate(obj, ctx, policies)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    root = next(k for k in stats if k[2] == "evaluate" and k[0].endswith(os.path.join("webhook", "engine.py")))
    total = stats[root][3]
    parts = []
    for func, (_cc, _nc, _tt, _ct, callers) in stats.items():
        if root in callers:
            parts.append((callers[root][3], func))
    parts.sort(reverse=True)
    rows = [{"function": _describe(f), "share": ct / total} for ct, f in parts if ct / total >= 0.01]
    rows.append({"function": "evaluate itself (its own lines)", "share": stats[root][2] / total})
    hot = sorted(((v[2], _describe(k)) for k, v in stats.items() if k != root), reverse=True)[:6]

    direct = {}
    callees = {(Path(f[0]).name, f[2]) for _ct, f in parts}
    decision = evaluate(obj, ctx, policies)
    if ("copy.py", "deepcopy") in callees:
        import copy

        direct["copy.deepcopy(object)"] = time_calls(lambda: copy.deepcopy(obj), 2000, 10.0)["cpu_us"]
    if ("jsonpatch.py", "make_patch") in callees and decision.mutated is not None:
        import jsonpatch

        mutated = decision.mutated
        direct["jsonpatch.make_patch(object, mutated)"] = time_calls(
            lambda: jsonpatch.make_patch(obj, mutated), 2000, 10.0
        )["cpu_us"]
    direct["evaluate(object)"] = time_calls(lambda: evaluate(obj, ctx, policies), 2000, 10.0)["cpu_us"]
    meta = obj.get("metadata") or {}
    sizes = {
        "object": len(json.dumps(obj)),
        **{f"metadata.{k}": len(json.dumps(v)) for k, v in meta.items() if k in ("managedFields", "annotations")},
        "spec": len(json.dumps(obj.get("spec"))),
    }
    return {
        "calls": calls,
        "breakdown": rows,
        "hottest_self_time": [{"function": name, "share": tt / total} for tt, name in hot],
        "direct_us": direct,
        "json_bytes": sizes,
    }


def _describe(func: tuple) -> str:
    filename, line, name = func
    if filename == "~":
        return name  # a builtin, e.g. "<built-in method builtins.isinstance>"
    path = Path(filename)
    try:
        where = str(path.resolve().relative_to(REPO))
    except ValueError:
        where = path.name
    return f"{where}:{line} {name}"


def bench_wsgi(policies_dir: Path, body: bytes, iterations: int, time_limit: float) -> dict[str, Any]:
    """The Flask app called in-process (no socket, no TLS, no gunicorn): us per /admit and per /healthz."""
    from webhook.server.app import create_app

    app = create_app(policies_dir)

    def call(method: str, path: str, payload: bytes) -> str:
        status = []
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "443",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(payload)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https",
            "wsgi.input": io.BytesIO(payload),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        result = app(environ, lambda s, h, e=None: status.append(s))
        try:
            b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return status[0]

    out: dict[str, Any] = {}
    for label, method, path, payload in (("mutate", "POST", "/admit", body), ("healthz", "GET", "/healthz", b"")):
        status = call(method, path, payload)
        if not status.startswith("200"):
            raise BenchError(f"in-process {method} {path} answered {status}")
        out[label] = time_calls(lambda m=method, p=path, b=payload: call(m, p, b), iterations, time_limit)
    return out


# --------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m webhook.cli serve`` in a subprocess, with certificates in a temporary directory."""

    def __init__(self, policies: Path, workers: int, threads: int):
        self.policies = policies
        self.workers = workers
        self.threads = threads
        self.tmp = tempfile.TemporaryDirectory(prefix="spreadguard-bench-")
        self.dir = Path(self.tmp.name)
        self.cafile = str(self.dir / "ca.crt")
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "server.log"
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.env.pop("KUBECONFIG", None)  # the benchmark talks to nothing but its own server
        self.extra_args: list[str] = []

    def start(self) -> None:
        gen = subprocess.run(
            [sys.executable, "-m", "webhook.cli", "certs", "generate", "--out", str(self.dir)],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if gen.returncode != 0:
            raise BenchError(f"certs generate failed ({gen.returncode}): {gen.stderr.strip()}")
        usage = subprocess.run(
            [sys.executable, "-m", "webhook.cli", "serve", "--help"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        if "--cluster-cache" in usage:  # no cluster watch: decisions from the spec alone, no traffic off the host
            self.extra_args = ["--cluster-cache", "off"]
        for _attempt in range(3):  # the free port can be taken between probing and binding
            self.port = free_port()
            cmd = [
                sys.executable, "-m", "webhook.cli", "serve",
                "--policies", str(self.policies),
                "--tls-cert", str(self.dir / "tls.crt"),
                "--tls-key", str(self.dir / "tls.key"),
                "--bind", f"127.0.0.1:{self.port}",
                "--workers", str(self.workers),
                "--threads", str(self.threads),
                "--log-level", "warning",
                *self.extra_args,
            ]  # fmt: skip
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            try:
                self._wait_ready()
                return
            except BenchError:
                if self.proc.poll() is None or b"in use" not in self.log_path.read_bytes():
                    raise
        raise BenchError("could not bind a free port after 3 attempts")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        ctx = ssl.create_default_context(cafile=self.cafile)
        ready = False
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if not ready:
                conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=2)
                try:
                    conn.request("GET", "/readyz")
                    resp = conn.getresponse()
                    resp.read()
                    ready = resp.status == 200
                except (OSError, http.client.HTTPException):
                    pass
                finally:
                    conn.close()
            if ready and len(self.worker_pids()) >= self.workers:
                return
            time.sleep(0.1)
        raise BenchError(
            f"server not ready (with {self.workers} workers) within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}"
        )

    @property
    def master_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return children_of(self.master_pid) if self.proc else []

    def cpu(self) -> dict[int, float]:
        """CPU seconds so far of the master and each worker, by pid."""
        pids = [self.master_pid, *self.worker_pids()]
        return {pid: proc_cpu_seconds(pid) for pid in pids}

    def stop(self) -> None:
        """SIGTERM (gunicorn's graceful stop), then SIGKILL of the server's own process group."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
                try:  # workers orphaned by the killed master are still in the session it was started in
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.tmp.cleanup()


# --------------------------------------------------------------------------------------------------- clients


@dataclass
class Target:
    port: int
    cafile: str
    method: str
    path: str
    body: bytes
    expect: bytes  # bytes every good response body contains (the request uid)


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)  # seconds
    send_lags: list[float] = field(default_factory=list)  # seconds the send started after its schedule
    timer_lags: list[float] = field(default_factory=list)  # lateness of sends the client slept for (client delay)
    queued: int = 0  # sends due while this connection still waited for the previous answer
    ok: int = 0
    errors: int = 0
    non_200: int = 0
    bad_body: int = 0
    reconnects: int = 0
    not_sent: int = 0
    cpu_s: float = 0.0  # CPU of the measured loop
    cpu_total_s: float = 0.0  # CPU of the whole client process (connect and warm-up included)
    late_start_s: float = 0.0
    samples: list[str] = field(default_factory=list)


class Client:
    """One persistent TLS keep-alive connection; reconnects only after an error or a server close."""

    def __init__(self, target: Target, result: ClientResult):
        self.t = target
        self.r = result
        self.ctx = ssl.create_default_context(cafile=target.cafile)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.conn: http.client.HTTPSConnection | None = None
        try:
            self._connect()
        except (OSError, http.client.HTTPException) as exc:  # counted as an error by the first send
            self.conn = None
            self._note(f"connect: {type(exc).__name__}: {exc}")

    def _connect(self) -> None:
        self.conn = http.client.HTTPSConnection("127.0.0.1", self.t.port, context=self.ctx, timeout=REQUEST_TIMEOUT_S)
        self.conn.connect()

    def _reconnect(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.r.reconnects += 1
        try:
            self._connect()
        except (OSError, http.client.HTTPException) as exc:
            self.conn = None
            self._note(f"reconnect: {type(exc).__name__}: {exc}")

    def _note(self, text: str) -> None:
        if len(self.r.samples) < 5:
            self.r.samples.append(text)

    def send(self, measure: bool = True) -> bool:
        """One request; counts the outcome when ``measure``. True if it was a good answer."""
        try:
            if self.conn is None:
                self._reconnect()
                if self.conn is None:
                    raise ConnectionError("no connection")
            self.conn.request(self.t.method, self.t.path, body=self.t.body or None, headers=self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            if measure:
                self.r.errors += 1
            self._note(f"{type(exc).__name__}: {exc}")
            self._reconnect()
            return False
        good = resp.status == 200 and self.t.expect in data
        if measure:
            if resp.status != 200:
                self.r.non_200 += 1
                self._note(f"HTTP {resp.status}: {data[:200]!r}")
            elif not good:
                self.r.bad_body += 1
                self._note(f"unexpected body: {data[:200]!r}")
            else:
                self.r.ok += 1
        if resp.will_close:  # the server ended keep-alive: open a new connection (counted)
            self._reconnect()
        return good

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _warm(client: Client) -> None:
    for _ in range(CLIENT_WARMUP_REQUESTS):
        client.send(measure=False)


def fixed_rate_client(target: Target, index: int, nclients: int, rate: float, t0: float, duration: float) -> dict:
    """Open loop: request k of this client is due at t0 + (index + k * nclients) / rate; latency counts from then."""
    r = ClientResult()
    client = Client(target, r)
    _warm(client)
    r.late_start_s = max(0.0, time.monotonic() - t0)
    interval = nclients / rate
    first = t0 + index / rate
    count = max(0, int((t0 + duration - first) / interval + 0.999999))
    hard_stop = t0 + duration + PHASE_GRACE_S / 2
    cpu0 = time.process_time()
    for k in range(count):
        due = first + k * interval
        now = time.monotonic()
        if now > hard_stop:
            r.not_sent = count - k
            break
        if due > now:
            time.sleep(due - now)
            lag = time.monotonic() - due
            r.timer_lags.append(lag)
        else:
            r.queued += 1
            lag = now - due
        r.send_lags.append(lag)
        if client.send():
            r.latencies.append(time.monotonic() - due)
    r.cpu_s = time.process_time() - cpu0
    client.close()
    r.cpu_total_s = time.process_time()
    return asdict(r)


def closed_loop_client(target: Target, t0: float, duration: float) -> dict:
    """Closed loop: send the next request as soon as the previous answer arrived, from t0 to t0 + duration."""
    r = ClientResult()
    client = Client(target, r)
    _warm(client)
    now = time.monotonic()
    r.late_start_s = max(0.0, now - t0)
    if t0 > now:
        time.sleep(t0 - now)
    end = t0 + duration
    cpu0 = time.process_time()
    while True:
        start = time.monotonic()
        if start >= end:
            break
        good = client.send()
        finish = time.monotonic()
        if finish > end:  # finished outside the window: not counted in the rate
            if good:
                r.ok -= 1
            break
        if good:
            r.latencies.append(finish - start)
    r.cpu_s = time.process_time() - cpu0
    client.close()
    r.cpu_total_s = time.process_time()
    return asdict(r)


def _client_init() -> None:
    """Load clients leave Ctrl-C and SIGTERM to the parent, which terminates them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_clients(func, args_list: list[tuple], timeout: float) -> list[ClientResult]:
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(len(args_list), initializer=_client_init)
    try:
        results = pool.starmap_async(func, args_list).get(timeout=timeout)
    except multiprocessing.TimeoutError:
        raise BenchError(f"load clients did not finish within {timeout:.0f} s") from None
    finally:
        pool.terminate()
        pool.join()
    return [ClientResult(**r) for r in results]


def load_phase(
    server: Server, kind: str, target: Target, clients: int, duration: float, rate: float = 0.0, quiet_wait: float = 0.0
) -> dict:
    """Run one load phase ("fixed" rate or "closed" loop) and measure server, client and other CPU around it."""
    quiet_pct = wait_for_quiet(quiet_wait)
    lead = 1.5 + 0.1 * clients  # time for the clients to connect and warm up before t0
    t0 = time.monotonic() + lead
    if kind == "fixed":
        args = [(target, i, clients, rate, t0, duration) for i in range(clients)]
        func = fixed_rate_client
    else:
        args = [(target, t0, duration) for _ in range(clients)]
        func = closed_loop_client
    cpu_before = server.cpu()
    busy_before, total_before = machine_busy_seconds()
    own_before, wall_before = time.process_time(), time.monotonic()
    results = run_clients(func, args, timeout=lead + duration + PHASE_GRACE_S)
    cpu_after = server.cpu()
    busy_after, total_after = machine_busy_seconds()
    own_cpu, wall = time.process_time() - own_before, time.monotonic() - wall_before

    merged = ClientResult()
    for r in results:
        merged.latencies += r.latencies
        merged.send_lags += r.send_lags
        merged.timer_lags += r.timer_lags
        for name in ("ok", "errors", "non_200", "bad_body", "reconnects", "not_sent", "queued"):
            setattr(merged, name, getattr(merged, name) + getattr(r, name))
        merged.cpu_s += r.cpu_s
        merged.cpu_total_s += r.cpu_total_s
        merged.late_start_s = max(merged.late_start_s, r.late_start_s)
        merged.samples += r.samples[: 5 - len(merged.samples)]
    server_delta = {pid: cpu_after.get(pid, 0.0) - cpu_before.get(pid, 0.0) for pid in cpu_after}
    server_cpu = sum(server_delta.values())
    warm_requests = CLIENT_WARMUP_REQUESTS * clients
    served = merged.ok + merged.non_200 + merged.bad_body
    lat = summarize(merged.latencies, 1e3)
    busy = busy_after - busy_before
    other = max(0.0, busy - server_cpu - merged.cpu_total_s - own_cpu)
    out: dict[str, Any] = {
        "path": target.path,
        "clients": clients,
        "duration_s": duration,
        "requests_ok": merged.ok,
        "errors": merged.errors,
        "non_200": merged.non_200,
        "bad_body": merged.bad_body,
        "reconnects": merged.reconnects,
        "not_sent": merged.not_sent,
        "requests_per_s": merged.ok / duration,
        "latency_ms": {k: v for k, v in lat.items() if k != "n"},
        "client_late_start_s": merged.late_start_s,
        "cpu": {
            "cores": os.cpu_count(),
            "server_cpu_s": server_cpu,
            "server_cpu_ms_per_request": server_cpu / max(1, served + warm_requests) * 1e3,
            "workers_cpu_s": {str(p): d for p, d in server_delta.items() if p != server.master_pid},
            "client_cpu_s": merged.cpu_total_s,
            "client_cpu_ms_per_request": merged.cpu_s / max(1, served) * 1e3,
            # CPU of everything else on the machine in the same window (other users, the kernel's own threads)
            "other_cpu_s": other,
            "other_pct_of_machine": other / max(1e-9, (os.cpu_count() or 1) * wall) * 100,
            "busy_pct_before": quiet_pct,
            "machine_busy_pct": busy / max(1e-9, total_after - total_before) * 100,
            "window_s": wall,
        },
        "error_samples": merged.samples,
    }
    if kind == "fixed":
        out["target_rate"] = rate
        out["send_lag_ms"] = {k: v for k, v in summarize(merged.send_lags, 1e3).items() if k in ("p50", "p99", "max")}
        out["client_timer_lag_ms"] = {
            k: v for k, v in summarize(merged.timer_lags, 1e3).items() if k in ("p50", "p99", "max")
        }
        out["queued_sends"] = merged.queued
        out["sends"] = len(merged.send_lags)
    return out


# --------------------------------------------------------------------------------------------------- report


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def failed_requests(phase: dict | None) -> int:
    """Requests that failed in a phase: transport errors, non-200 answers, answers that are not ours."""
    if not phase:
        return 0
    return phase["errors"] + phase["non_200"] + phase["bad_body"]


def _fmt_mib(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "n/a"


def _phase_lines(p: dict) -> list[str]:
    lat, cpu = p["latency_ms"], p["cpu"]
    workers = ", ".join(f"{v:.1f}" for v in cpu["workers_cpu_s"].values())
    lines = [
        f"   ok {p['requests_ok']} ({p['requests_per_s']:.1f}/s), errors {p['errors']}, non-200 {p['non_200']}, "
        f"bad bodies {p['bad_body']}, reconnects {p['reconnects']}, not sent {p['not_sent']}",
        f"   latency ms: p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}",
        f"   CPU seconds in the {cpu['window_s']:.1f} s window: server {cpu['server_cpu_s']:.1f} "
        f"(per worker {workers}; {cpu['server_cpu_ms_per_request']:.2f} ms/request), "
        f"clients {cpu['client_cpu_s']:.1f} ({cpu['client_cpu_ms_per_request']:.2f} ms/request), "
        f"other processes {cpu['other_cpu_s']:.1f}; machine {cpu['machine_busy_pct']:.0f}% busy",
    ]
    if cpu["other_pct_of_machine"] >= 5:
        lines.append(
            f"   WARNING: other processes used {cpu['other_pct_of_machine']:.0f}% of the machine during this phase: "
            "the latency and rate figures are pessimistic; re-run on a quiet machine"
        )
    return lines


def render(res: dict[str, Any]) -> str:
    m, g = res["machine"], res["goals"]
    lines = [
        "spreadguard benchmark",
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}, gunicorn {m['gunicorn']}, "
        f"{m['platform']}; load average at start {' '.join(m['loadavg_at_start'])}",
        f"server: gunicorn gthread, {res['server']['workers']} workers x {res['server']['threads']} threads, TLS, "
        f"127.0.0.1 (policies: {res['server']['policies']})",
        "NOTE: the load clients run on the same machine and compete with the server for its CPUs; the CPU lines",
        "      show how much each side used. Latency is wall time seen by the client.",
        "",
        f"1. Engine: evaluate() in-process, {res['engine'][0]['iterations']} calls per object after warm-up",
        f"   {'object':<24}{'mean us':>9}{'p50 us':>9}{'p99 us':>9}{'max us':>9}{'CPU us':>9}{'patch ops':>11}",
    ]
    for e in res["engine"]:
        lines.append(
            f"   {e['object']:<24}{e['mean_us']:>9.0f}{e['p50_us']:>9.0f}{e['p99_us']:>9.0f}{e['max_us']:>9.0f}"
            f"{e['cpu_us']:>9.0f}{e['patch_ops']:>11}"
        )
    lines += [
        "   (CPU us: process CPU time per call; unlike wall time it does not grow when other processes take the CPU)",
        f"   goal: Pod under {GOAL_ENGINE_US:.0f} us mean ............ {mark(g['engine']['pass'])} "
        f"(mean {g['engine']['value']:.0f} us; CPU {res['engine'][0]['cpu_us']:.0f} us per call)",
    ]
    f = res["fixed"]
    lines += [
        "",
        f"2. Fixed rate: POST {f['path']} (Pod) at {f['target_rate']:.0f}/s for {f['duration_s']:.0f} s, "
        f"{f['clients']} client processes x 1 keep-alive TLS connection, open loop",
        "   (latency from each request's scheduled send time: queueing in the client or the server is included)",
        *_phase_lines(f),
        f"   send delay after the scheduled time: p50 {f['send_lag_ms']['p50']:.2f} ms, "
        f"p99 {f['send_lag_ms']['p99']:.2f} ms, max {f['send_lag_ms']['max']:.2f} ms; {f['queued_sends']} of "
        f"{f['sends']} sends were due while their connection still awaited the previous answer",
        f"   goal: p99 under {GOAL_P99_MS:.0f} ms at {f['target_rate']:.0f}/s ....... {mark(g['p99']['pass'])} "
        f"({g['p99']['value']:.2f} ms)",
    ]
    p = res["peak"]
    lines += [
        "",
        f"3. Peak: POST {p['path']} (Pod), closed loop, {p['clients']} client processes x 1 keep-alive TLS connection, "
        f"{p['duration_s']:.0f} s",
        *_phase_lines(p),
        f"   goal: over {GOAL_PEAK_RPS:.0f} requests/s ........... {mark(g['peak']['pass'])} "
        f"({g['peak']['value']:.0f}/s)",
        f"   server alone (estimate): {p['cpu']['cores']} CPUs / {p['cpu']['server_cpu_ms_per_request']:.2f} ms server "
        f"CPU per request = {res['estimates']['server_only_peak_rps']:.0f}/s if the clients used no CPU here",
    ]
    mem = res["memory"]
    lines += ["", "4. Memory after the load, MiB (PSS divides the pages the forked processes share)"]
    for role, entry in [("master", mem["master"])] + [("worker", w) for w in mem["workers"]]:
        lines.append(
            f"   {role:<7} pid {entry['pid']:<8} RSS {_fmt_mib(entry['rss_mib']):>7}   "
            f"PSS {_fmt_mib(entry['pss_mib']):>7}"
        )
    d = res.get("diagnosis")
    if d:
        lines += ["", "5. Where the time goes"]
        prof = d.get("engine_profile")
        if prof:
            lines.append(f"   evaluate() on the Pod under cProfile ({prof['calls']} calls), by direct callee:")
            lines += [f"     {r['share'] * 100:5.1f}%  {r['function']}" for r in prof["breakdown"]]
            lines.append(
                "   the same without the profiler (cProfile overstates many-small-call functions), CPU us per call:"
            )
            lines += [f"     {v:7.0f}  {k}" for k, v in prof["direct_us"].items()]
            sizes = ", ".join(f"{k} {v}" for k, v in prof["json_bytes"].items())
            lines.append(f"   JSON bytes of the Pod: {sizes}")
        w = d["wsgi"]
        mutate_us, healthz_us = w["mutate"]["cpu_us"], w["healthz"]["cpu_us"]
        lines.append(
            f"   Flask app in-process (no socket, TLS or gunicorn), CPU per request: /admit {mutate_us:.0f} us, "
            f"/healthz {healthz_us:.0f} us per request"
        )
        for key, label in (
            ("mutate_serial", "one request at a time, POST /admit"),
            ("healthz_serial", "one request at a time, GET /healthz "),
            ("healthz_peak", f"GET /healthz, {d['healthz_peak']['clients']} closed-loop clients "),
        ):
            h = d[key]
            lat, cpu = h["latency_ms"], h["cpu"]
            lines.append(
                f"   {label}: {h['requests_per_s']:5.0f}/s, p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
                f"server {cpu['server_cpu_ms_per_request']:.2f} ms CPU/req, "
                f"client {cpu['client_cpu_ms_per_request']:.2f} ms CPU/req, errors {failed_requests(h)}"
            )
        s = d["split_ms"]
        lines += [
            "   server CPU per POST /admit (one request at a time), split:",
            f"     engine evaluate()                    {s['engine']:.3f} ms",
            f"     admission JSON + Flask route         {s['app_without_engine']:.3f} ms",
            f"     HTTP + TLS + gunicorn (the rest)     {s['http_tls_gunicorn']:.3f} ms",
            f"     total (measured from /proc)          {s['server_total']:.3f} ms; under peak load "
            f"{res['peak']['cpu']['server_cpu_ms_per_request']:.3f} ms",
        ]
        lines += [f"   - {note}" for note in d["notes"]]
    if res["failed_requests"]:
        lines += ["", f"FAILED REQUESTS: {res['failed_requests']}"]
        for phase in ("fixed", "peak"):
            lines += [f"   {phase}: {sample}" for sample in res[phase]["error_samples"]]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        loadavg = []
    try:
        import gunicorn

        gunicorn_version = gunicorn.__version__
    except ImportError:
        gunicorn_version = "?"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "gunicorn": gunicorn_version,
        "platform": platform.platform(terse=True),
        "loadavg_at_start": loadavg,
    }


def diagnosis_notes(res: dict[str, Any]) -> list[str]:
    """Plain conclusions drawn from the figures."""
    notes = []
    d = res["diagnosis"]
    prof = d.get("engine_profile")
    if prof:
        direct = prof["direct_us"]
        total = direct.get("evaluate(object)") or 0
        for name, us in direct.items():
            if name != "evaluate(object)" and total:
                notes.append(f"{name} alone costs {us:.0f} us, {us / total * 100:.0f}% of evaluate() ({total:.0f} us)")
    s = d["split_ms"]
    if s["server_total"] > 0:
        notes.append(
            f"of the server's {s['server_total']:.2f} ms CPU per /admit: engine "
            f"{s['engine'] / s['server_total'] * 100:.0f}%, admission+Flask "
            f"{s['app_without_engine'] / s['server_total'] * 100:.0f}%, HTTP+TLS+gunicorn "
            f"{s['http_tls_gunicorn'] / s['server_total'] * 100:.0f}%"
        )
    notes.append(
        f"/healthz (no engine) peaks at {d['healthz_peak']['requests_per_s']:.0f}/s with the same clients: the "
        "ceiling of HTTP+TLS+gunicorn plus the clients on this machine, whatever the engine costs"
    )
    peak = res["peak"]["cpu"]
    if peak["client_cpu_s"] > 0.3 * peak["server_cpu_s"]:
        notes.append(
            f"in the peak run the clients used {peak['client_cpu_s']:.1f} s CPU against the server's "
            f"{peak['server_cpu_s']:.1f} s: the server alone would go faster than measured"
        )
    for phase in ("fixed", "peak"):
        per_worker = list(res[phase]["cpu"]["workers_cpu_s"].values())
        if len(per_worker) > 1 and max(per_worker) > 1.5 * max(min(per_worker), 0.05):
            notes.append(
                f"{phase}: the workers did unequal work ({', '.join(f'{v:.1f}' for v in per_worker)} CPU s): "
                "a keep-alive connection stays with the worker that accepted it, and one worker's requests share "
                "one GIL"
            )
    return notes


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench/benchmark.py",
        description="Benchmark spreadguard: engine time, latency at a fixed rate, peak throughput, memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each load phase")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    ap.add_argument("--threads", type=int, default=8, help="threads per worker")
    ap.add_argument("--rate", type=float, default=300.0, help="requests/s of the fixed-rate phase")
    ap.add_argument("--rate-clients", type=int, default=4, help="client processes of the fixed-rate phase")
    ap.add_argument("--peak-clients", type=int, default=8, help="client processes of the peak phase")
    ap.add_argument("--iterations", type=int, default=5000, help="evaluate() calls per object")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="before each phase wait up to this many seconds for the machine to be under 10%% busy (0: no wait)",
    )
    ap.add_argument("--policies", type=Path, default=REPO / "policies", help="policy directory")
    ap.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES, help="captured AdmissionReview directory")
    diag = ap.add_mutually_exclusive_group()
    diag.add_argument("--diagnose", action="store_true", help="profile even when every goal passes")
    diag.add_argument("--no-diagnose", action="store_true", help="never profile")
    ap.add_argument("--json", action="store_true", help="also print a JSON object (on stdout; the report on stderr)")
    args = ap.parse_args(argv)
    if not 0 < args.duration <= 600:
        ap.error("--duration must be in (0, 600]")
    if not 0 <= args.quiet_wait <= 600:
        ap.error("--quiet-wait must be in [0, 600]")
    if min(args.workers, args.threads, args.rate_clients, args.peak_clients, args.iterations) < 1 or args.rate <= 0:
        ap.error("--workers, --threads, --rate, --rate-clients, --peak-clients and --iterations must be positive")
    return args


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from webhook.engine.policy import load_policies

    pod_raw, pod = load_fixture(args.fixtures, POD_FIXTURE)
    _, job = load_fixture(args.fixtures, JOB_FIXTURE)
    policies = list(load_policies(args.policies))
    res: dict[str, Any] = {
        "machine": machine_info(),
        "server": {"workers": args.workers, "threads": args.threads, "policies": str(args.policies)},
        "client_shares_machine": True,
    }

    wait_for_quiet(args.quiet_wait)
    progress(f"engine: {args.iterations} evaluate() calls on each fixture")
    engine_limit = max(30.0, args.duration * 3)
    res["engine"] = [bench_engine(r, policies, args.iterations, engine_limit) for r in (pod, job)]
    res["goals"] = {"engine": {"goal_us": GOAL_ENGINE_US, "value": res["engine"][0]["mean_us"]}}
    res["goals"]["engine"]["pass"] = res["goals"]["engine"]["value"] < GOAL_ENGINE_US

    uid = pod["request"]["uid"].encode()
    quiet = args.quiet_wait
    server = Server(args.policies, args.workers, args.threads)
    try:
        progress("starting the server")
        server.start()
        mutate = Target(server.port, server.cafile, "POST", "/admit", pod_raw, uid)
        healthz = Target(server.port, server.cafile, "GET", "/healthz", b"", b'"ok"')
        progress(f"fixed rate: {args.rate:.0f}/s for {args.duration:.0f} s")
        res["fixed"] = load_phase(server, "fixed", mutate, args.rate_clients, args.duration, args.rate, quiet)
        progress(f"peak: {args.peak_clients} closed-loop clients for {args.duration:.0f} s")
        res["peak"] = load_phase(server, "closed", mutate, args.peak_clients, args.duration, quiet_wait=quiet)
        res["memory"] = {
            "master": memory_of(server.master_pid),
            "workers": [memory_of(pid) for pid in server.worker_pids()],
        }
        g = res["goals"]
        g["p99"] = {"goal_ms": GOAL_P99_MS, "value": res["fixed"]["latency_ms"]["p99"]}
        g["p99"]["pass"] = g["p99"]["value"] < GOAL_P99_MS and failed_requests(res["fixed"]) == 0
        g["peak"] = {"goal_rps": GOAL_PEAK_RPS, "value": res["peak"]["requests_per_s"]}
        g["peak"]["pass"] = g["peak"]["value"] > GOAL_PEAK_RPS
        missed = not all(v["pass"] for v in g.values())

        if (missed or args.diagnose) and not args.no_diagnose:
            short = min(args.duration, 5.0)
            progress(f"diagnosis: one request at a time, then GET /healthz at peak ({short:.0f} s each)")
            res["diagnosis"] = {
                "mutate_serial": load_phase(server, "closed", mutate, 1, short, quiet_wait=quiet),
                "healthz_serial": load_phase(server, "closed", healthz, 1, short, quiet_wait=quiet),
                "healthz_peak": load_phase(server, "closed", healthz, args.peak_clients, short, quiet_wait=quiet),
            }
    finally:
        progress("stopping the server")
        server.stop()

    cores = os.cpu_count() or 1
    res["estimates"] = {
        "server_only_peak_rps": cores / max(1e-9, res["peak"]["cpu"]["server_cpu_ms_per_request"]) * 1e3
    }
    if "diagnosis" in res:
        d = res["diagnosis"]
        progress("diagnosis: cProfile of evaluate() and the Flask app in-process")
        wait_for_quiet(args.quiet_wait)
        d["engine_profile"] = profile_engine(pod, policies, PROFILE_CALLS)
        d["wsgi"] = bench_wsgi(args.policies, pod_raw, 3000, 20.0)
        # evaluate()'s CPU measured right next to the in-process app (same machine conditions)
        engine_ms = d["engine_profile"]["direct_us"]["evaluate(object)"] / 1e3
        app_ms = d["wsgi"]["mutate"]["cpu_us"] / 1e3
        total = d["mutate_serial"]["cpu"]["server_cpu_ms_per_request"]
        d["split_ms"] = {
            "engine": engine_ms,
            "app_without_engine": max(0.0, app_ms - engine_ms),
            "http_tls_gunicorn": max(0.0, total - app_ms),
            "server_total": total,
        }
        d["notes"] = diagnosis_notes(res)
    phases = [res.get("fixed"), res.get("peak"), *res.get("diagnosis", {}).values()]
    res["failed_requests"] = sum(failed_requests(p) for p in phases if isinstance(p, dict) and "errors" in p)
    return res


def _terminated(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the server and the clients


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        res = run(args)
    except BenchError as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    report = render(res)
    if args.json:
        print(report, file=sys.stderr)
        print(json.dumps(res, indent=2, sort_keys=True))
    else:
        print(report)
    return 1 if res["failed_requests"] else 0


if __name__ == "__main__":
    sys.exit(main())
