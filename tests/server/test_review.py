"""Reading a review: the fast path for what the API server sends, the checked parser for everything else.

``review.canonical`` accepts a body only when re-encoding its value gives back the very bytes (so no key
was repeated: decoding keeps one of two); every body a real kube-apiserver sent (tests/data/admission)
takes it. Whatever does not (pretty JSON, duplicate keys, NaN, integers over 64 bits) goes through
``loads_strict``'s checked parser and gets the same value or the same clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import admission_fixture_files, admission_review

from webhook.server import review

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p-0", "namespace": "ml", "annotations": {"note": "a<b && c>d \u2028 é"}},
    "spec": {"containers": [{"name": "c", "image": "pytorch", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
}


@pytest.mark.parametrize("path", admission_fixture_files(), ids=lambda p: p.name)
def test_every_captured_review_takes_the_fast_path(path: Path) -> None:
    raw = path.read_bytes()
    assert review.canonical(raw) == json.loads(raw)
    assert review.api_server_bytes(json.loads(raw)) == raw  # what the tests below send is what it sends


def test_escaped_html_and_line_separators_take_the_fast_path() -> None:
    raw = review.api_server_bytes(admission_review(POD, "esc-1"))
    assert b"\\u003c" in raw and b"\\u0026" in raw and b"\\u2028" in raw
    assert review.canonical(raw) == admission_review(POD, "esc-1")


COMPACT = review.api_server_bytes(admission_review(POD, "dup-1")).decode()
CHECKED = [
    ("pretty", json.dumps(admission_review(POD, "dup-1"), indent=2), None),
    ("duplicate-name", COMPACT.replace('"name":"p-0"', '"name":"p-0","name":"other"'), "duplicate key"),
    ("duplicate-uid", COMPACT.replace('"uid":"dup-1"', '"uid":"dup-1","uid":"dup-2"'), "duplicate key"),
    ("duplicate-same-value", COMPACT.replace('"name":"p-0"', '"name":"p-0","name":"p-0"'), "duplicate key"),
    ("nan", COMPACT.replace('"nvidia.com/gpu":"1"', '"nvidia.com/gpu":NaN'), "NaN"),
    ("infinity", COMPACT.replace('"nvidia.com/gpu":"1"', '"nvidia.com/gpu":Infinity'), "Infinity"),
    ("deep", COMPACT.replace('"annotations":{', '"annotations":' + "[" * 5000 + "]" * 5000 + ',"x":{'), "deep"),
]


@pytest.mark.parametrize("body, error", [c[1:] for c in CHECKED], ids=[c[0] for c in CHECKED])
def test_anything_else_takes_the_checked_parser(body: str, error: str | None) -> None:
    raw = body.encode()
    assert review.canonical(raw) is None
    if error is None:
        assert review.loads_strict(raw) == json.loads(raw)
    else:
        with pytest.raises(review.AdmissionError, match=error):
            review.loads_strict(raw)


def test_integers_beyond_64_bits_are_read_and_answered() -> None:
    """orjson refuses them; the checked parser reads them exactly and answers carry them (stdlib fallback)."""
    big = 2**70
    pod = json.loads(json.dumps(POD))
    pod["spec"]["terminationGracePeriodSeconds"] = big
    raw = review.api_server_bytes(admission_review(pod, "big-1"))
    assert review.canonical(raw) is None
    assert review.loads_strict(raw)["request"]["object"]["spec"]["terminationGracePeriodSeconds"] == big
    assert review.dumps({"n": big}) == b'{"n":1180591620717411303424}'
    assert json.loads(review.dumps({"n": big, "s": "é<"})) == {"n": big, "s": "é<"}


def test_a_lone_surrogate_is_read_and_answered() -> None:
    """Go's decoder turns it into U+FFFD, so the API server never sends one; another client may: its body goes to
    the checked parser, and answers carry it as a \\u escape instead of failing to encode."""
    raw = COMPACT.replace('"name":"p-0"', '"name":"p-\\ud800"').encode()
    assert review.canonical(raw) is None
    body = review.loads_strict(raw)
    assert body["request"]["object"]["metadata"]["name"] == "p-\ud800"
    assert json.loads(review.dumps(body)) == body
