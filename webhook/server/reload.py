"""The policy set in force (``State``) and its hot reload from the policy directory.

Each gunicorn worker runs one ``PolicyWatcher``: a daemon thread that every ``interval`` seconds hashes the
contents of the directory's policy files (``fingerprint``: names and bytes, read through symlinks, so the
``..data`` symlink swap by which the kubelet updates a mounted ConfigMap is seen as a change) and, when the
hash differs from the one of the set in force, loads the directory into a new ``State`` and publishes it
with one assignment. A request reads the state once, so it sees either the old set or the new one, never a
mix. A directory that does not load (a broken edit) leaves the last good set in force; the error, with file
and line, goes to the log, to ``spreadguard_policy_last_reload_success`` and to ``/readyz``.

Reload safety: a reload must not silently drop protection. A policy file that yields no policy (empty,
only comments, only other kinds of document) is refused like a broken file, at start and on reload; and a
reload that would remove a policy in force is refused while the file that defined it is still in the
directory (an edit that emptied or renamed the policy inside it): only deleting the file removes its
policies. A refused reload keeps the last good set, shows ``lastReload.ok: false`` with the reason on
``/readyz`` and sets ``spreadguard_policy_reload_refused`` and ``spreadguard_policy_last_reload_success``.

The hash is taken *before* loading: if a file changes while it is being loaded, the state may hold newer
contents than its hash says, and the next poll simply loads again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from webhook.engine.policy import Policy, PolicyError, load_policies, parse_policy_text
from webhook.server import metrics

log = logging.getLogger("spreadguard.reload")

DEFAULT_INTERVAL_SECONDS = 2.0
POLICY_SUFFIXES = (".yaml", ".yml")  # what load_policies reads


@dataclass(frozen=True)
class ReloadStatus:
    """The outcome of the last reload attempt (``at``: Unix time)."""

    ok: bool
    at: float
    errors: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": list(self.errors), "at": round(self.at, 3)}


@dataclass(frozen=True)
class State:
    """What the routes serve from; replaced as a whole, never mutated."""

    policies: tuple[Policy, ...] = ()
    source: str = ""
    ready: bool = False
    names: tuple[str, ...] = ()
    digest: str = ""  # fingerprint() of the directory taken before these policies were loaded
    files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (file name, names of the policies it defines)
    last_reload: ReloadStatus | None = field(default=None, compare=False)  # None until a change was seen


def fingerprint(directory: str | Path) -> str:
    """A hash of the names and contents of the policy files in ``directory`` (symlinks followed).

    A file that cannot be read is hashed as its error, so it still counts as a change and the load that
    follows reports it.
    """
    root = Path(directory)
    digest = hashlib.sha256()
    try:
        entries = sorted(p for p in root.iterdir() if p.suffix in POLICY_SUFFIXES)
    except OSError as exc:
        digest.update(f"unreadable directory: {exc}".encode())
        return digest.hexdigest()
    for path in entries:
        try:
            if not path.is_file():
                continue
            data = path.read_bytes()
        except OSError as exc:
            data = f"unreadable: {exc}".encode()
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def policy_files(directory: str | Path) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each policy file of ``directory`` (sorted) with the names of the policies it defines.

    Raises ``PolicyError`` for every file that defines none: an empty or comment-only file is a mistake
    (a truncated ConfigMap key, a botched edit), never a way to switch policies off.
    """
    root = Path(directory)
    files: list[tuple[str, tuple[str, ...]]] = []
    problems: list[str] = []
    for path in sorted(p for p in root.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file()):
        try:
            found, _errors = parse_policy_text(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError):
            continue  # load_policies reports it
        if not found:
            problems.append(
                f"{path}:1: defines no HAPolicy (empty, only comments, or no policy document); "
                "delete the file to remove its policies"
            )
        files.append((path.name, tuple(p.name for p in found)))
    if problems:
        raise PolicyError(problems)
    return tuple(files)


def load_state(policies_dir: str | Path) -> State:
    """Load the policy directory into a ready ``State``; raises ``PolicyError`` listing every problem."""
    digest = fingerprint(policies_dir)
    policies = tuple(load_policies(policies_dir))
    return State(
        policies=policies,
        source=str(policies_dir),
        ready=True,
        names=tuple(p.name for p in policies),
        digest=digest,
        files=policy_files(policies_dir),
    )


def removals(current: State, files: tuple[tuple[str, tuple[str, ...]], ...]) -> list[str]:
    """Why loading ``files`` over ``current`` must be refused: a policy in force disappears from a file
    that is still there (its removal is only accepted by deleting the file)."""
    now = {name for _file, names in files for name in names}
    present = {file for file, _names in files}
    problems = []
    for file, names in current.files:
        for name in names:
            if name not in now and file in present:
                path = Path(current.source) / file
                problems.append(
                    f"{path}:1: the reload would remove policy {name!r}, which this file defined and which is in "
                    "force; delete the file to remove its policies"
                )
    return problems


def reload_once(get: Callable[[], State], put: Callable[[State], None], observe: bool = True) -> ReloadStatus | None:
    """Reload the directory of the current state if its files changed; None when nothing changed.

    On success the new policies are published; on failure the current ones stay, with the error recorded.
    ``observe``: count the result in the metrics (not in the gunicorn master, which serves nothing).
    """
    current = get()
    if not current.source:
        return None
    digest = fingerprint(current.source)
    if digest == current.digest:
        return None
    now = time.time()
    try:
        policies = tuple(load_policies(current.source))
        files = policy_files(current.source)
        refused = removals(current, files)
        if refused:
            raise PolicyError(refused)
    except PolicyError as exc:
        status = ReloadStatus(ok=False, at=now, errors=tuple(exc.problems))
        # remember the digest so one broken edit is reported once, not on every poll
        put(replace(current, digest=digest, last_reload=status))
        log.error(
            "policy reload failed: keeping the %d policies in force (%s)",
            len(current.policies),
            ", ".join(current.names),
            extra={"fields": {"directory": current.source, "errors": list(exc.problems)}},
        )
        if observe:
            metrics.reload_result(False)
        return status
    except Exception as exc:  # a bug, not the author's: the last good set stays as well
        status = ReloadStatus(ok=False, at=now, errors=(f"{current.source}: {type(exc).__name__}: {exc}",))
        put(replace(current, digest=digest, last_reload=status))
        log.exception(
            "policy reload failed with an internal error: keeping the policies in force",
            extra={"fields": {"directory": current.source}},
        )
        if observe:
            metrics.reload_result(False)
        return status
    status = ReloadStatus(ok=True, at=now)
    names = tuple(p.name for p in policies)
    put(
        State(
            policies=policies,
            source=current.source,
            ready=True,
            names=names,
            digest=digest,
            files=files,
            last_reload=status,
        )
    )
    log.info(
        "policies reloaded: %s",
        ", ".join(names),
        extra={"fields": {"directory": current.source, "policies": list(names)}},
    )
    if observe:
        metrics.reload_result(True, len(policies))
    return status


class PolicyWatcher:
    """Polls the policy directory of a state every ``interval`` seconds in a daemon thread."""

    def __init__(
        self, get: Callable[[], State], put: Callable[[State], None], interval: float = DEFAULT_INTERVAL_SECONDS
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._get = get
        self._put = put
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reload at a time (the thread and a direct check())

    def check(self) -> ReloadStatus | None:
        """One poll, now, in the calling thread."""
        with self._lock:
            return reload_once(self._get, self._put)

    def start(self) -> PolicyWatcher:
        self._thread = threading.Thread(target=self._run, name="spreadguard-policy-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # never let the watcher die: the next poll tries again
                log.exception("policy watcher: unexpected error")
