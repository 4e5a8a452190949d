"""Reading manifests: YAML (multi-document) and JSON streams, List objects, files, directories and stdin.

One bad document never hides the ones after it; every object comes out as a ``Document`` with its source.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

SUFFIXES = (".yaml", ".yml", ".json")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Document:
    """One object read from input (``obj``), or why a document could not be read (``error``)."""

    source: str  # "path#doc N" (documents count from 1), "path#doc N items[i]" for List items; stdin is "stdin"
    obj: dict[str, Any] | None = None
    error: str | None = None


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loader that keeps timestamps as the strings Kubernetes sends (JSON-serialisable)."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def _marker(line: str, mark: str) -> bool:
    return line.startswith(mark) and (len(line) == 3 or line[3] in " \t\r\n")


def _yaml_chunks(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Split a YAML stream at document markers without parsing it: ``(first line, text)`` per chunk.

    A ``---`` or ``...`` at column 0 always ends a document in YAML (even a block scalar), so one bad
    document never hides the ones after it.
    """
    buf: list[str] = []
    start = 1
    for n, line in enumerate(lines, 1):
        if _marker(line, "---"):
            if buf:
                yield start, "".join(buf)
            buf, start = [line], n
        elif _marker(line, "..."):
            buf.append(line)
            yield start, "".join(buf)
            buf, start = [], n + 1
        else:
            buf.append(line)
    if buf:
        yield start, "".join(buf)


def _yaml_error(exc: yaml.YAMLError, start: int, chunk: str) -> str:
    """What is wrong, at which line of the file, and the lines around it with a caret (kept as lines)."""
    if isinstance(exc, yaml.reader.ReaderError):
        return f"not a text file (control character {exc.character!r} at offset {exc.position} of the document)"
    mark = getattr(exc, "problem_mark", None)
    what = (
        "; ".join(str(x) for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        or str(exc).splitlines()[0]
    )
    if mark is None:
        return f"not valid YAML: {what}"
    lines = chunk.splitlines()
    excerpt = []
    for i in range(max(mark.line - 2, 0), min(mark.line, len(lines) - 1) + 1):
        excerpt.append(f"  {start + i:>5} | {lines[i][:160]}")
    if mark.line < len(lines):
        excerpt.append(f"  {'':>5} | {' ' * min(mark.column, 160)}^")
    return f"not valid YAML at line {start + mark.line}, column {mark.column + 1}: {what}\n" + "\n".join(excerpt)


def _expand(doc: Any, source: str) -> Iterator[Document]:
    """A parsed document as objects: ``List`` items one by one, anything not an object as an error."""
    if not isinstance(doc, dict):
        yield Document(source, error=f"a {type(doc).__name__}, not a Kubernetes object")
        return
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
        item_kind = kind[: -len("List")] if kind != "List" else None
        for i, item in enumerate(doc["items"]):
            if isinstance(item, dict) and item_kind and "kind" not in item:
                item = {"apiVersion": doc.get("apiVersion"), "kind": item_kind, **item}  # typed lists omit them
            yield from _expand(item, f"{source} items[{i}]")
        return
    if not isinstance(doc.get("apiVersion"), str) or not isinstance(kind, str):
        yield Document(source, error="not a Kubernetes object: apiVersion and kind are required")
        return
    yield Document(source, obj=doc)


def parse_stream(lines: Iterable[str], name: str) -> Iterator[Document]:
    """Every object in a YAML (multi-document) or JSON stream; documents are numbered from 1, empty
    ones (only comments) not counted. A document that does not parse yields an error and reading goes on."""
    it = iter(lines)
    head: list[str] = []
    for line in it:
        head.append(line)
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
    first = "".join(head).lstrip()[:1]
    if first in ("{", "["):
        text = "".join(head) + "".join(it)
        done = yield from _json_stream(text, name)
        if done:
            return
        it, head = iter(text.splitlines(keepends=True)), []
    doc_no = 0
    for start, chunk in _yaml_chunks(_chain(head, it)):
        try:
            doc = yaml.load(chunk, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as exc:
            doc_no += 1
            yield Document(f"{name}#doc {doc_no}", error=_yaml_error(exc, start, chunk))
            continue
        if doc is None:
            continue
        doc_no += 1
        yield from _expand(doc, f"{name}#doc {doc_no}")


def _chain(head: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from head
    yield from rest


def _json_stream(text: str, name: str) -> Generator[Document, None, bool]:
    """Concatenated JSON values; returns False (nothing yielded) when the first is not JSON (try YAML)."""
    decoder = json.JSONDecoder()
    pos, doc_no = 0, 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return True
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            if doc_no == 0:
                return False
            yield Document(
                f"{name}#doc {doc_no + 1}",
                error=f"not valid JSON: {exc.msg} (line {exc.lineno}, column "
                f"{exc.colno}); the rest of the file is not read",
            )
            return True
        doc_no += 1
        yield from _expand(doc, f"{name}#doc {doc_no}")


def _files(path: Path, recursive: bool) -> list[Path]:
    found = path.rglob("*") if recursive else path.iterdir()
    return sorted(f for f in found if f.suffix in SUFFIXES and f.is_file())


STDIN = "stdin"  # how ``-f -`` is named in every message


def read_documents(paths: Sequence[str], recursive: bool = False, stdin: TextIO | None = None) -> Iterator[Document]:
    """Objects from files, directories (``recursive``: their subdirectories too) and ``-`` (stdin).

    An argument that holds no document at all (an empty file, empty stdin) is an error, as in kubectl.
    """
    for arg in paths:
        seen = 0
        if arg == "-":
            stream = stdin if stdin is not None else _stdin()
            for doc in _decoded(parse_stream(stream, STDIN), STDIN):
                seen += 1
                yield doc
            if not seen:
                yield Document(STDIN, error="no objects: the input is empty")
            continue
        path = Path(arg)
        if path.is_dir():
            files = _files(path, recursive)
            if not files:
                hint = "" if recursive else " (use -R to read subdirectories)"
                yield Document(arg, error=f"no {', '.join('*' + s for s in SUFFIXES)} files in the directory{hint}")
                continue
            for f in files:
                for doc in _read_file(f):
                    seen += 1
                    yield doc
            if not seen:
                count = _n(len(files), "file")
                yield Document(arg, error=f"no objects: every file in the directory is empty ({count})")
        elif path.exists():
            for doc in _read_file(path):
                seen += 1
                yield doc
            if not seen:
                yield Document(arg, error="no objects: the file is empty")
        else:
            yield Document(arg, error="no such file or directory")


def _stdin() -> TextIO:
    """Standard input read as UTF-8 whatever the locale says (manifests are UTF-8)."""
    buffer = getattr(sys.stdin, "buffer", None)
    return io.TextIOWrapper(buffer, encoding="utf-8") if buffer is not None else sys.stdin


def _decoded(docs: Iterator[Document], name: str) -> Iterator[Document]:
    """``docs``, ending with an error (not an exception) when the input turns out not to be UTF-8 text."""
    try:
        yield from docs
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start : exc.start + 1].hex()
        yield Document(name, error=f"not a text file (byte 0x{byte} is not UTF-8): spreadguard reads YAML or JSON")


def _read_file(path: Path) -> Iterator[Document]:
    try:
        with path.open(encoding="utf-8") as fh:
            yield from _decoded(parse_stream(fh, str(path)), str(path))
    except OSError as exc:
        yield Document(str(path), error=f"cannot read: {exc.strerror or exc}")
