"""``spreadguard evaluate``: the engine over manifests, offline, with kubectl's conventions for -f/-R/-o."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from webhook.cli.common import formatter, input_error, load_policies_or_exit

OUTPUTS = ("yaml", "json", "jsonl", "patch", "patch-jsonl", "none")

DESCRIPTION = """\
Run the engine over manifests exactly as the webhook would on CREATE (or UPDATE, with --old), print the
decision of each object on stderr and the mutated objects (or the JSON patches) on stdout.

output (-o), as kubectl prints objects:
  yaml, json      one object as itself; several as one `kind: List` (items in input order)
  jsonl           JSON Lines: one mutated object per line, written as each is decided (streaming)
  patch           one JSON array: per object {apiVersion, kind, namespace, name, patch: [RFC 6902 ops]}
  patch-jsonl     the same entries, one per line, streaming
  none            nothing on stdout (the decision is on stderr)

exit codes: 0 allowed; 1 some object denied; 2 usage error, or some input could not be read or parsed
(every error names the file and the document: FILE#doc N; the rest is still evaluated)."""

EPILOG = """\
examples:
  spreadguard evaluate -f examples/pytorchjob.yaml
  spreadguard evaluate -f examples/ -o json | jq '.items[].metadata.name'
  kubectl kustomize overlays/prod | spreadguard evaluate -f - -o patch
  spreadguard evaluate -f job-v2.yaml --old job-v1.yaml      # as an UPDATE from job-v1.yaml
  spreadguard evaluate -f examples/denied/ -o none            # only the decisions"""


def _label(obj: dict[str, Any], namespace: str) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": str(obj.get("apiVersion") or ""),
        "kind": str(obj.get("kind") or ""),
        "namespace": str(meta.get("namespace") or namespace or ""),
        "name": str(meta.get("name") or meta.get("generateName") or ""),
    }


def _key(label: dict[str, str]) -> tuple[str, str, str, str]:
    """Which old object an input is an update of: API group (not version), kind, namespace, name."""
    group = label["apiVersion"].split("/", 1)[0] if "/" in label["apiVersion"] else ""
    return group, label["kind"], label["namespace"], label["name"]


def _old_objects(path: str, namespace: str) -> dict[tuple[str, str, str, str], dict[str, Any]] | None:
    """The objects of ``--old`` by (group, kind, namespace, name); None (errors printed) when unreadable."""
    from webhook.audit.manifests import read_documents

    old: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    ok = True
    for doc in read_documents([path]):
        if doc.error is not None:
            input_error(f"--old {doc.source}", doc.error)
            ok = False
        elif doc.obj is not None:
            old[_key(_label(doc.obj, namespace))] = doc.obj
    return old if ok else None


class _Output:
    """Where the mutated objects (or patches) go: buffered for one JSON/YAML value, or line by line."""

    def __init__(self, fmt: str, out: TextIO):
        self.fmt, self.out = fmt, out
        self.items: list[Any] = []

    def add(self, label: dict[str, str], mutated: dict[str, Any], patch: list[dict[str, Any]]) -> None:
        if self.fmt == "none":
            return
        item: Any = {**label, "patch": patch} if self.fmt.startswith("patch") else mutated
        if self.fmt.endswith("jsonl"):
            self.out.write(json.dumps(item, separators=(",", ":")) + "\n")
            self.out.flush()
        else:
            self.items.append(item)

    def close(self) -> None:
        from webhook.engine import yamlio

        if self.fmt in ("none", "jsonl", "patch-jsonl"):
            return
        if self.fmt == "patch":
            self.out.write(json.dumps(self.items, indent=2) + "\n")
            return
        if not self.items:
            return
        value = self.items[0] if len(self.items) == 1 else {"apiVersion": "v1", "kind": "List", "items": self.items}
        self.out.write(json.dumps(value, indent=2) + "\n" if self.fmt == "json" else yamlio.dump(value))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from webhook.audit.manifests import read_documents
    from webhook.audit.results import ref_of
    from webhook.engine.decide import evaluate
    from webhook.engine.target import Context

    policies = load_policies_or_exit(args.policies)
    if policies is None:
        return 2
    operation = args.operation or ("UPDATE" if args.old else "CREATE")
    if args.old and operation != "UPDATE":
        input_error("--old", "the object before the change is for --operation UPDATE")
        return 2
    if operation == "UPDATE" and not args.old:
        print(
            "spreadguard: note: UPDATE without --old FILE: every pod template counts as changed, as on CREATE",
            file=sys.stderr,
        )
    old = _old_objects(args.old, args.namespace) if args.old else {}
    if old is None:
        return 2
    errors = denied = 0
    out = _Output(args.output, sys.stdout)
    for doc in read_documents(args.filename, recursive=args.recursive):
        if doc.error is not None:
            input_error(doc.source, doc.error)
            errors += 1
            continue
        obj = doc.obj or {}
        label = _label(obj, args.namespace)
        old_obj = old.get(_key(label)) if args.old else None
        ref = ref_of(obj, args.namespace)
        if args.old and old_obj is None:
            input_error(doc.source, f"{ref}: no object of that kind, namespace and name in --old {args.old}")
            errors += 1
            continue
        ctx = Context(
            operation=operation,
            namespace=label["namespace"],
            username=args.user,
            groups=tuple(args.group),
            old_object=old_obj,
        )
        decision = evaluate(obj, ctx, policies)
        denied += not decision.allowed
        verdict = "allowed" if decision.allowed else "DENIED"
        lines = [f"# {ref}: {verdict}; policies: {', '.join(decision.policies) or 'none matched'}"]
        lines += [f"#   deny  {v.text()}" for v in decision.violations]
        lines += [f"#   warn  {v.text()}" for v in decision.advisories]
        lines += [f"#   warn  {w}" for w in decision.dryrun]
        lines += [f"#   note  {n}" for n in decision.info]
        lines += [f"#   add   {n}" for n in decision.notes]
        sys.stderr.write("\n".join(lines) + "\n")
        out.add(label, decision.mutated if decision.mutated is not None else obj, decision.patch)
    out.close()
    sys.stdout.flush()
    return 2 if errors else 1 if denied else 0


def register(sub: Any) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="show what spreadguard adds to and decides about manifests (offline)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=formatter,
    )
    ev.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="PATH",
        help="file, directory or - (stdin); YAML (multi-document), JSON, List objects; repeatable",
    )
    ev.add_argument("-R", "--recursive", action="store_true", help="read directories recursively")
    ev.add_argument("--policies", default="policies/", help="policy directory (default: policies/)")
    ev.add_argument("-o", "--output", choices=OUTPUTS, default="yaml", help="what to print on stdout (default: yaml)")
    ev.add_argument(
        "--operation",
        choices=["CREATE", "UPDATE"],
        help="as which operation (default: CREATE; UPDATE with --old)",
    )
    ev.add_argument(
        "--old",
        metavar="FILE",
        help="the objects before the change (UPDATE): each input is paired with the one of its kind, "
        "namespace and name; only pod templates that changed are judged",
    )
    ev.add_argument("-n", "--namespace", default="", help="namespace, for objects that have none")
    ev.add_argument("--user", default="", help="request user (for exemptions)")
    ev.add_argument("--group", action="append", default=[], help="request group (repeatable)")
    ev.set_defaults(func=_cmd_evaluate, _parser=ev)
