#!/usr/bin/env python3
"""Where one admission's server CPU goes, in-process: parse, engine, response, record (metrics, log line).

    python bench/admit_breakdown.py [--object FIXTURE] [--endpoint admit] [--calls 2000] [--runs 5] [--json]

No TLS, no HTTP, no gunicorn: the app's WSGI callable is called directly with an environ, and each stage
is timed on its own with ``time.process_time`` (CPU of this process, so other load on the machine
distorts it little) over ``--calls`` calls after a warm-up; each figure is the median of ``--runs`` runs,
in microseconds per call. The stages:

- ``parse strict``: ``review.loads_strict`` (NaN/Infinity and duplicate keys refused) and, for comparison,
  plain ``json.loads``;
- ``typed request``: ``AdmissionRequest.from_body``;
- ``engine``: ``decide.evaluate`` on the request's object;
- ``respond``: the AdmissionReview answer built and encoded (``review.respond`` + ``json.dumps``);
- ``metrics``: ``metrics.observe_admission`` in single-process mode and in multiprocess mode (the mmap files
  gunicorn's workers write);
- ``log line``: one decision log line (``Record.finish`` minus its metrics) to /dev/null at ``info``;
- ``WSGI /<endpoint>``: the whole request through the app's WSGI callable, at ``--log-level warning`` and
  at ``info`` (the default) with multiprocess metrics;
- ``inline /<endpoint>``: ``app.handle_raw``, what spreadguard's worker calls for an admission request it
  answers in its main loop (no WSGI environ), at ``info``;
- ``do-nothing WSGI``: the baseline, measured in the same run: ``bench/noop_webhook.py`` (Flask, parses the
  review and allows it) called the same way. The ratios divide by it.

The servers' figure over TLS is ``bench/side_by_side.py``; this one shows what the Python code costs.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "data" / "admission"
DEFAULT_OBJECT = "128-Pod-bert-worker-0-CREATE-mutate.json"


def per_call_us(fn: Callable[[], Any], calls: int, runs: int) -> float:
    """Median over ``runs`` of the CPU microseconds per call of ``fn`` (after a warm-up)."""
    for _ in range(min(200, calls)):
        fn()
    results = []
    for _ in range(runs):
        start = time.process_time()
        for _ in range(calls):
            fn()
        results.append((time.process_time() - start) / calls * 1e6)
    return statistics.median(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--object", default=DEFAULT_OBJECT, help=f"captured fixture (default {DEFAULT_OBJECT})")
    parser.add_argument("--endpoint", default="admit", choices=("mutate", "validate", "admit"))
    parser.add_argument("--calls", type=int, default=2000, help="calls per run (default 2000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure; the median is shown (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    # multiprocess metrics as under gunicorn: the directory must be set before the metric objects exist
    metrics_dir = tempfile.mkdtemp(prefix="sg-bench-metrics-")
    sys.path.insert(0, str(REPO))
    from webhook.engine import decide
    from webhook.server import app as server_app
    from webhook.server import logs, metrics, review

    raw = (FIXTURES / args.object).read_bytes()
    body = json.loads(raw)
    req = review.parse_review(raw)
    policies_dir = REPO / "policies"
    app = server_app.create_app(policies_dir, budget_seconds=2.5)
    policies = list(server_app.get_state(app).policies)
    ctx = req.context()
    assert req.object is not None
    decision = decide.evaluate(req.object, ctx, policies)
    endpoint = args.endpoint
    calls, runs = args.calls, args.runs
    figures: dict[str, float] = {}

    def measure(name: str, fn: Callable[[], Any]) -> None:
        figures[name] = per_call_us(fn, calls, runs)

    measure("parse strict (loads_strict)", lambda: review.loads_strict(raw))
    measure("parse plain (json.loads)", lambda: json.loads(raw))
    measure("typed request (from_body)", lambda: review.AdmissionRequest.from_body(body))
    measure("engine (decide.evaluate)", lambda: decide.evaluate(req.object or {}, ctx, policies))
    measure(
        "respond (respond + json.dumps)",
        lambda: json.dumps(review.respond(req, decision, endpoint), separators=(",", ":")).encode(),
    )
    finding = [metrics.Finding(v.rule, v.policy, "warn") for v in decision.advisories]
    measure(
        "metrics, single process",
        lambda: metrics.observe_admission(endpoint, "CREATE", "Pod", "mutated", 0.0004, finding),
    )
    metrics.enable_multiprocess(metrics_dir)
    measure(
        "metrics, multiprocess (mmap)",
        lambda: metrics.observe_admission(endpoint, "CREATE", "Pod", "mutated", 0.0004, finding),
    )

    # the decision log line alone: a finished Record, its metrics call excluded
    sink = open(os.devnull, "w")  # noqa: SIM115 - kept open for the whole run
    logs.configure("info")
    for handler in logging.getLogger(logs.ROOT).handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(sink)
    record = server_app.Record(endpoint)
    record.req, record.decision = req, decision
    observe = metrics.observe_admission
    metrics.observe_admission = lambda *a, **k: None  # type: ignore[assignment]
    try:
        measure("log line + record (info)", record.finish)
    finally:
        metrics.observe_admission = observe  # type: ignore[assignment]

    environ_base = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/{endpoint}",
        "CONTENT_LENGTH": str(len(raw)),
        "CONTENT_TYPE": "application/json",
    }
    wsgi = app.wsgi_app
    inline = app.extensions[server_app.INLINE_HANDLER]  # what the worker calls for a small admission request

    def call() -> None:
        environ = dict(environ_base)
        environ["wsgi.input"] = io.BytesIO(raw)
        wsgi(environ, lambda status, headers: None)

    sys.path.insert(0, str(REPO / "bench"))
    from noop_webhook import app as noop_app

    noop_wsgi = noop_app.wsgi_app
    noop_base = dict(environ_base, PATH_INFO="/validate", SERVER_NAME="127.0.0.1", SERVER_PORT="443")
    noop_base.update({"wsgi.url_scheme": "https", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.errors": sys.stderr})

    def call_noop() -> None:
        environ = dict(noop_base)
        environ["wsgi.input"] = io.BytesIO(raw)
        noop_wsgi(environ, lambda status, headers: None)

    measure("do-nothing WSGI (baseline)", call_noop)
    logs.configure("warning")
    measure(f"WSGI /{endpoint}, log warning", call)
    logs.configure("info")
    for handler in logging.getLogger(logs.ROOT).handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(sink)
    measure(f"WSGI /{endpoint}, log info", call)
    measure(f"inline /{endpoint}, log info", lambda: inline(endpoint, raw))
    sink.close()

    base = figures["do-nothing WSGI (baseline)"]
    ratios = {k: v / base for k, v in figures.items() if k.startswith(("WSGI", "inline"))}
    if args.json:
        out = {"object": args.object, "endpoint": endpoint, "us_per_call": figures, "ratio_to_do_nothing": ratios}
        print(json.dumps(out, indent=2))
        return 0
    print(f"object: {args.object} ({len(raw)} bytes), endpoint /{endpoint}, {runs} x {calls} calls, CPU us per call")
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        ratio = f"  ({ratios[name]:.2f}x do-nothing)" if name in ratios else ""
        print(f"  {name:<{width}}  {value:8.1f}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
