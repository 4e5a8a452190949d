"""YAML written by spreadguard: a repeated object is written out in full every time (no anchors/aliases)."""

from __future__ import annotations

import yaml

from webhook.engine import yamlio


def test_a_shared_object_is_written_in_full_each_time() -> None:
    selector = {"matchLabels": {"app": "x"}}
    obj = {"a": {"labelSelector": selector}, "b": [{"labelSelector": selector}], "c": selector}
    for text, copies in ((yamlio.dump(obj), 3), (yamlio.dump_all([obj, obj]), 6)):
        events = list(yaml.parse(text))
        assert not any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) for e in events), text
        assert text.count("matchLabels:") == copies, text
    assert yaml.safe_load(yamlio.dump(obj)) == obj
    assert list(yaml.safe_load_all(yamlio.dump_all([obj, {"d": 1}]))) == [obj, {"d": 1}]


def test_keys_keep_their_order_and_text_stays_readable() -> None:
    text = yamlio.dump({"z": 1, "a": "ünïcode", "m": [1, 2]})
    assert text == "z: 1\na: ünïcode\nm:\n- 1\n- 2\n"
    assert yamlio.dump({"z": 1, "a": 2}, sort_keys=True) == "a: 2\nz: 1\n"
