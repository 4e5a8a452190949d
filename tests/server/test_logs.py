"""The decision log line: written directly (``logs.write_line``) it is the line ``JsonFormatter`` makes.

The direct writer replaces logging's record machinery on the admission path; these tests pin that what a
log reader sees is unchanged: the same keys in the same order with the same values, one line per
admission, and that any other set-up (another handler, a filter, an exception) still goes through logging.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import POLICIES_DIR, admission_review

from webhook.server import logs
from webhook.server.app import create_app

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "trainer-0", "namespace": "ml", "labels": {"app": "trainer"}},
    "spec": {"containers": [{"name": "main", "image": "pytorch", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """``logs.configure("info")`` writing into a StringIO; the spreadguard logger restored afterwards."""
    root = logging.getLogger(logs.ROOT)
    saved = (root.handlers[:], root.level, root.propagate, logs._handler)
    out = io.StringIO()
    logs.configure("info")
    assert logs._handler is not None
    logs._handler.setStream(out)
    yield out
    root.handlers[:], root.level, root.propagate, logs._handler = saved


def only_configured() -> None:
    """Leave ``configure``'s handler alone on the spreadguard logger, as in the server (pytest adds its own)."""
    assert logs._handler is not None
    logging.getLogger(logs.ROOT).handlers[:] = [logs._handler]


def post(path: str, body: Any) -> int:
    client = create_app(POLICIES_DIR).test_client()
    return int(client.post(path, data=body if isinstance(body, bytes) else json.dumps(body)).status_code)


def formatted(name: str, level: int, msg: str, fields: dict[str, Any], created: float, pid: int) -> str:
    record = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    record.created, record.process = created, pid
    record.fields = fields  # type: ignore[attr-defined]
    return logs.JsonFormatter().format(record)


def test_direct_line_is_the_formatter_line(stream: io.StringIO) -> None:
    only_configured()
    fields = {"uid": "u-1", "decision": "mutated", "rules": [], "msg": "ignored", "name": "ü<&>", "n": 1.5}
    assert logs.write_line(logging.getLogger(logs.DECISIONS), logging.INFO, "admission mutated", fields)
    (line,) = stream.getvalue().splitlines()
    written = json.loads(line)
    expected = formatted(logs.DECISIONS, logging.INFO, "admission mutated", fields, 0.0, written["pid"])
    assert json.loads(expected).keys() == written.keys()  # the same keys in the same order
    assert line == expected.replace('"1970-01-01T00:00:00.000Z"', json.dumps(written["time"]))
    assert list(written)[:5] == ["time", "level", "logger", "pid", "msg"] and written["msg"] == "admission mutated"
    assert TIME.match(written["time"]) and "ü<&>" in line


@pytest.mark.parametrize(
    "created, text",
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1_764_500_000.0015, "2025-11-30T10:53:20.001Z"),
        (1_764_500_000.9999, "2025-11-30T10:53:20.999Z"),
        (1_764_500_001.0, "2025-11-30T10:53:21.000Z"),
    ],
)
def test_time_is_utc_milliseconds_and_the_cache_follows_the_clock(created: float, text: str) -> None:
    assert logs.format_time(created) == text
    assert logs.format_time(created) == text  # from the cache
    assert logs.format_time(created + 0.001) != text


def test_each_admission_writes_one_line_with_its_decision(stream: io.StringIO) -> None:
    only_configured()
    assert post("/mutate", admission_review(POD, "log-1")) == 200
    assert post("/mutate", b"{}") == 400
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["logger"] == logs.DECISIONS and first["level"] == "info" and first["uid"] == "log-1"
    assert first["decision"] == "mutated" and first["msg"] == "admission mutated" and first["patch_ops"] > 0
    assert second["decision"] == "error" and second["uid"] is None and "error" in second


def test_another_handler_a_filter_or_formatter_gets_the_record_through_logging(stream: io.StringIO) -> None:
    only_configured()
    decisions = logging.getLogger(logs.DECISIONS)
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Collect()
    decisions.addHandler(extra)
    try:
        assert not logs.write_line(decisions, logging.INFO, "admission allowed", {})
        assert post("/validate", admission_review(POD, "log-2")) == 200
    finally:
        decisions.removeHandler(extra)
    assert [r.fields["uid"] for r in seen] == ["log-2"]  # type: ignore[attr-defined]
    assert json.loads(stream.getvalue())["uid"] == "log-2"  # and the configured handler still wrote it once

    root = logging.getLogger(logs.ROOT)
    drop = logging.Filter("nothing-matches")
    root.addFilter(drop)
    try:
        assert not logs.write_line(decisions, logging.INFO, "admission allowed", {})
    finally:
        root.removeFilter(drop)
    assert logs.write_line(decisions, logging.INFO, "admission allowed", {})

    assert logs._handler is not None
    logs._handler.setFormatter(logging.Formatter("%(message)s"))  # someone re-formatted the handler
    assert not logs.write_line(decisions, logging.INFO, "admission allowed", {})
