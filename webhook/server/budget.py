"""A time budget per admission request, enforced inside the request thread.

The API server waits ``timeoutSeconds`` (5 s) for an answer and then, with ``failurePolicy: Ignore``,
admits the object unchecked and without a trace in spreadguard's metrics. A request that runs over its
budget (below that timeout) is instead interrupted and answered by spreadguard itself: allowed with a
warning, counted and logged. The answer is definite and the thread is free again.

How: one watchdog thread per worker process keeps the deadlines of the requests in progress. When one
passes, it raises ``BudgetExceeded`` in that request's thread with ``PyThreadState_SetAsyncExc`` (the
exception is delivered at the thread's next Python bytecode; a long C call, such as parsing a 32 MiB body,
finishes first, and those are bounded by the body limit). The exception is only ever armed while the
request runs spreadguard's own pure code (parse and engine: ``Budget.guard``); leaving the guard disarms it
and clears an exception that was set but not yet delivered, so it never escapes into Flask, logging or
gunicorn.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

DEFAULT_SECONDS = 2.5  # half the webhook's 5 s timeout: the rest is for TLS, queueing and the network
POLL_SECONDS = 0.1  # the watchdog's longest sleep: a budget ends at most this late


class BudgetExceeded(Exception):
    """Raised inside a request thread whose budget ran out."""


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    if exc is None:
        _set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object())  # NULL: clear a pending one
    else:
        _set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


class _Slot:
    __slots__ = ("thread_id", "deadline", "armed", "fired")

    def __init__(self, thread_id: int, deadline: float) -> None:
        self.thread_id = thread_id
        self.deadline = deadline
        self.armed = True
        self.fired = False


class Budget:
    """The watchdog of one process; ``guard(seconds)`` bounds a block of the calling thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Slot]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def _ensure_thread(self) -> None:
        """Start this process's watchdog (again after a fork: threads do not survive it)."""
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="spreadguard-budget", daemon=True)
            self._thread.start()

    @contextmanager
    def guard(self, seconds: float) -> Iterator[None]:
        """Run the block with at most ``seconds``; ``BudgetExceeded`` is raised in it when they pass."""
        if seconds <= 0:
            yield
            return
        slot = _Slot(threading.get_ident(), time.monotonic() + seconds)
        with self._lock:
            if self._pid != _pid():
                self._ensure_thread()
            # no wake-up: the watchdog looks at least every POLL_SECONDS, and budgets are longer than that
            heapq.heappush(self._heap, (slot.deadline, next(self._order), slot))
        try:
            yield
        finally:
            with self._lock:
                slot.armed = False
                if slot.fired:  # set but maybe not delivered yet: it must not surface after the guard
                    _raise_in(slot.thread_id, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                while self._heap and (not self._heap[0][2].armed or self._heap[0][0] <= now):
                    _deadline, _n, slot = heapq.heappop(self._heap)
                    if slot.armed:
                        slot.fired = True
                        _raise_in(slot.thread_id, BudgetExceeded)
                timeout = min(self._heap[0][0] - now, POLL_SECONDS) if self._heap else POLL_SECONDS
                self._wake.wait(timeout)


def _pid() -> int:
    return os.getpid()


_budget = Budget()


def guard(seconds: float) -> AbstractContextManager[None]:
    """``Budget.guard`` of this process's watchdog."""
    return _budget.guard(seconds)
