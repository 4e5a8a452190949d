"""spreadguard's gunicorn worker: gthread, with a non-blocking front stage so no client can hold a thread.

gunicorn's gthread worker does the TLS handshake and reads a request's headers and body in its request
threads, with no deadline: a few dozen clients that send a TLS record slowly, never finish their headers or
trickle a body occupy every thread, and admission stops (the API server then admits everything unchecked).

Here the worker's main loop (one selector, no threads) does everything a client controls the pace of:

- the TLS handshake, non-blocking, within ``HANDSHAKE_SECONDS`` of the accept;
- reading one whole request (request line, headers, body with ``Content-Length`` or chunked) into memory,
  within ``REQUEST_SECONDS`` of its first byte, with the header block capped (``MAX_HEADER_BYTES``: 431;
  a request line over gunicorn's ``limit_request_line``: 414) and the body capped at
  ``review.MAX_BODY_BYTES`` (a larger one is drained, up to ``app.DISCARD_LIMIT``, and answered 400 without
  a thread; larger still: 400 and the connection closed);
- waiting for the next request on a kept-alive connection (gunicorn's ``keepalive`` seconds).

Memory is bounded per worker: a connection may buffer ``SMALL_REQUEST_BYTES`` freely; past that it needs one
of ``LARGE_SLOTS``, held until its answer is written, and without a free slot it is not read from (TCP
pushes back on the client) until one frees or its deadline passes.

An admission request (``POST /mutate``, ``/validate`` or ``/admit`` with a ``Content-Length`` body that fit
in ``SMALL_REQUEST_BYTES``: nearly every Pod and workload) is answered right there in the main loop, once it
is complete in memory: the app's ``handle_raw`` (parse, decide within the budget, record), then the answer
written without blocking (a client that does not read it is cut at ``WRITE_SECONDS``). No thread hand-off,
no WSGI environ, no second HTTP parse: on this path a request costs a few tens of microseconds besides the
decision itself, against about half a millisecond through gthread and Flask (``docs/performance.md``). The
decision is pure CPU under the GIL, so threads would not run two at once anyway; what a thread would add is
that a long decision does not hold up the other connections of this worker, which is why larger requests
(and every other path, and everything at ``--log-level debug``, for gunicorn's access log) still go to a
thread. Within 64 KiB the slowest decision found from the spec alone takes about 50 ms (a RayCluster of
832 empty worker groups); with a cluster view, node checks add at most ``placement.MAX_LABEL_CHECKS``
label comparisons, and the time budget ends any decision. At most ``INLINE_BURST`` pipelined requests of
one connection are answered in a row before the others get their turn.

Any other request that is complete in memory goes to a thread, with gunicorn's own HTTP parser reading it
from that buffer (never from the socket); the thread writes the answer with ``WRITE_SECONDS`` as the socket
timeout. Connections per worker are capped at ``worker_connections``: at the cap a new connection evicts
the oldest one that is not in a thread (an idle keep-alive or a slow client), so a flood of idle
connections cannot lock the API server out.

Every error answer, gunicorn's own included (``handle_error``: bad request line, headers, chunking), is
one line of JSON. Refusals are counted in ``spreadguard_connections_refused_total{reason}``.
"""

from __future__ import annotations

import errno
import logging
import re
import selectors
import socket
import ssl
import time
from collections import OrderedDict
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn.http import errors as herrors
from gunicorn.workers import gthread

from webhook.server import metrics
from webhook.server import review as admission

log = logging.getLogger("spreadguard.worker")

HANDSHAKE_SECONDS = 3.0  # from accept to a finished TLS handshake
REQUEST_SECONDS = 5.0  # from a request's first byte to its last (the webhook timeout is 5 s: later is useless)
WRITE_SECONDS = 5.0  # a request thread writing the answer to a client that does not read
MAX_HEADER_BYTES = 64 * 1024  # request line and headers
# Memory: a connection may buffer up to SMALL_REQUEST_BYTES freely (1,000 connections: 64 MiB at most);
# beyond, it needs one of LARGE_SLOTS per worker, held until its answer is written. Without a free slot
# the worker stops reading from it (TCP pushes back on the client) until one frees, within its deadline.
SMALL_REQUEST_BYTES = 64 * 1024
LARGE_SLOTS = 2
SEND_BUFFER_BYTES = 128 * 1024  # per connection (the kernel doubles it for its bookkeeping)
INLINE_BURST = 16  # pipelined requests of one connection answered in a row before the others' turn
_READ = 256 * 1024
_SWEEP_SECONDS = 0.1
_INLINE_PATHS = {b"/mutate": "mutate", b"/validate": "validate", b"/admit": "admit"}

HANDSHAKE, IDLE, READING, DISCARDING, WRITING = "handshake", "idle", "reading", "discarding", "writing"

_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _Refusal(Exception):
    """A request the front stage answers itself: ``status``, a one-line message, whether to close."""

    def __init__(self, status: int, message: str, reason: str, close: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.close = close


_STATUS_TEXT = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def json_error_response(status: int, message: str, close: bool = True) -> bytes:
    """A complete HTTP/1.1 error answer with a one-line JSON body ``{"error": ...}``."""
    from webhook.server.app import error_body

    body = error_body(f"{status} {_STATUS_TEXT.get(status, 'Error')}: {message}")
    head = (
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class FrontConn(gthread.TConn):
    """A connection with its front-stage state: TLS, the bytes read so far, its deadline."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, context: ssl.SSLContext) -> None:
        super().__init__(cfg, sock, client, server)  # makes the socket non-blocking
        self.sock = context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=True
        )
        self.initialized = True  # gthread's init() (blocking handshake) never runs
        self.data_ready = True
        self.stage = HANDSHAKE
        self.deadline = time.monotonic() + HANDSHAKE_SECONDS
        self.buf = bytearray()
        self.registered = 0
        self.rest = b""  # bytes after the request handed to a thread (a pipelined next one)
        self.large = False  # holds one of the worker's LARGE_SLOTS
        self.paused = False  # waits for a large slot: not read from meanwhile
        self.out: memoryview | None = None  # an inline answer not yet all written
        self.close_after = False  # close once ``out`` is written
        self._reset_request()

    def _reset_request(self) -> None:
        self.head_end = -1  # index just past the blank line ending the headers
        self.content_length = -1
        self.chunked = False
        self.scan = 0  # chunked: where the next chunk-size line starts
        self.body_bytes = 0  # chunked: data bytes seen so far
        self.chunks_done = False
        self.discard_left = 0
        self.discarded = 0  # chunked: data bytes thrown away after the body passed the limit
        self.chunk_discard = False
        self.skip = 0  # chunked, discarding: bytes of the current chunk still to drop
        self.too_large: int | None = None
        self.endpoint = ""
        self.inline = ""  # the admission endpoint this request is answered for in the main loop, if any
        self.keep_alive = True  # the request allows the connection to stay open

    def init(self) -> None:  # the parser is set by the front stage
        return

    def close(self, graceful: bool = False) -> None:
        """Close without lingering in the main loop: drop what already arrived, then close."""
        try:
            self.sock.setblocking(False)
            for _ in range(4):
                if not self.sock.recv(65536):
                    break
        except (OSError, ValueError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class BoundedWorker(gthread.ThreadWorker):
    """gunicorn ``gthread`` with the front stage described in the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = self.cfg.worker_connections
        self.worker_connections = 1 << 30  # gthread's own accept switch; the cap is enforced in accept()
        self.max_keepalived = 1 << 30  # keep-alive is decided here, not by gthread's deque
        self.front: OrderedDict[int, FrontConn] = OrderedDict()
        self.in_threads = 0
        self.large_free = LARGE_SLOTS
        self.large_waiting: OrderedDict[int, FrontConn] = OrderedDict()
        self._next_sweep = 0.0
        self.answer_inline: Any = None  # the app's handle_raw(endpoint, body) -> (status, body), if it has one

    def load_wsgi(self) -> None:
        super().load_wsgi()
        from webhook.server.app import INLINE_HANDLER

        extensions = getattr(self.wsgi, "extensions", None)
        handler = extensions.get(INLINE_HANDLER) if isinstance(extensions, dict) else None
        # gunicorn's access log is written by its request threads: at debug level every request goes there
        self.answer_inline = handler if handler is not None and not self.cfg.accesslog else None

    # ------------------------------------------------------------------ accept and the front stage

    def accept(self, listener: Any) -> None:
        try:
            client_sock, client_addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        if len(self.front) + self.in_threads >= self.max_connections and not self._evict_oldest():
            metrics.refused("too_many_connections")
            client_sock.close()
            return
        try:
            # the kernel memory a client that does not read its answers can hold (autotuning would let it
            # grow to tcp_wmem's maximum, 4 MiB, per connection); answers are a few KiB
            client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            context = gsock.ssl_context(self.cfg)
            conn = FrontConn(self.cfg, client_sock, client_addr, listener.getsockname(), context)
        except (OSError, ssl.SSLError, ValueError):
            log.warning("could not set up TLS for a new connection", exc_info=True)
            client_sock.close()
            return
        self.nr_conns += 1
        self.front[id(conn)] = conn
        self._step(conn)

    def _evict_oldest(self) -> bool:
        """Close the connection that has waited longest in the front stage (never one in a thread)."""
        for conn in self.front.values():
            self._drop(conn, "too_many_connections")
            return True
        return False

    def _watch(self, conn: FrontConn, events: int) -> None:
        if conn.registered == events:
            return
        callback = partial(self._on_event, conn)
        if conn.registered:
            self.poller.modify(conn.sock, events, callback)
        else:
            self.poller.register(conn.sock, events, callback)
        conn.registered = events

    def _unwatch(self, conn: FrontConn) -> None:
        if conn.registered:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
            conn.registered = 0

    def _drop(self, conn: FrontConn, reason: str = "") -> None:
        if reason:
            metrics.refused(reason)
        self._unwatch(conn)
        self.front.pop(id(conn), None)
        self.large_waiting.pop(id(conn), None)
        self._release_large(conn)
        self.nr_conns -= 1
        conn.close()

    def _release_large(self, conn: FrontConn) -> None:
        """Give ``conn``'s large slot to the connection that has waited longest for one."""
        if not conn.large:
            return
        conn.large = False
        self.large_free += 1
        while self.large_waiting and self.large_free:
            _key, waiter = self.large_waiting.popitem(last=False)
            waiter.large, waiter.paused = True, False
            self.large_free -= 1
            self._step(waiter)

    def _needs_slot(self, conn: FrontConn) -> bool:
        """True when ``conn`` must wait for a large slot before reading more (it is then paused)."""
        if conn.large or len(conn.buf) <= SMALL_REQUEST_BYTES or conn.stage == DISCARDING:
            return False
        if self.large_free:
            self.large_free -= 1
            conn.large = True
            return False
        conn.paused = True
        self._unwatch(conn)
        self.large_waiting[id(conn)] = conn
        return True

    def _on_event(self, conn: FrontConn, _fileobj: Any) -> None:
        self._step(conn)

    def _step(self, conn: FrontConn) -> None:
        """Advance ``conn`` as far as its bytes allow, without blocking."""
        try:
            if conn.stage == HANDSHAKE:
                try:
                    conn.sock.do_handshake()
                except ssl.SSLWantReadError:
                    self._watch(conn, selectors.EVENT_READ)
                    return
                except ssl.SSLWantWriteError:
                    self._watch(conn, selectors.EVENT_WRITE)
                    return
                self._idle(conn)
            if conn.stage == WRITING and not self._flush(conn):
                return
            self._read(conn)
        except _Refusal as refusal:
            self._refuse(conn, refusal)
        except (ssl.SSLError, OSError, ValueError) as exc:
            log.debug("front stage: dropping a connection: %s", exc)
            self._drop(conn)

    def _idle(self, conn: FrontConn) -> None:
        conn.stage = IDLE
        conn.deadline = time.monotonic() + (self.cfg.keepalive or REQUEST_SECONDS)
        self.front.move_to_end(id(conn))

    def _read(self, conn: FrontConn) -> None:
        if conn.paused:
            return
        answered = 0
        while True:
            if self._advance(conn):  # a whole request is in the buffer
                if not self._hand_off(conn):
                    return  # in a thread, still writing, or closed
                # Answered here. Its next request waits for the event loop, behind the other connections that
                # are ready (a fast client would otherwise be answered again and again while they wait);
                # only bytes already read (pipelined) are gone on with, up to INLINE_BURST requests in a row.
                if not conn.buf and not conn.sock.pending():
                    return
                answered += 1
                if answered >= INLINE_BURST:
                    self.method_queue.defer(self._resume, conn)
                    return
                continue
            try:
                data = conn.sock.recv(_READ)
            except ssl.SSLWantReadError:
                self._watch(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            if not data:  # the client closed
                self._drop(conn)
                return
            if conn.stage == IDLE:
                conn.stage = READING
                conn.deadline = time.monotonic() + REQUEST_SECONDS
                self.front.move_to_end(id(conn))
            if conn.stage == DISCARDING:
                take = min(len(data), conn.discard_left)
                conn.discard_left -= take
                conn.buf += data[take:]  # a pipelined next request (the API server does not pipeline)
            else:
                conn.buf += data
            if self._needs_slot(conn):
                return

    def _advance(self, conn: FrontConn) -> bool:
        """Parse what is buffered; True when one whole request is there. Raises ``_Refusal``."""
        if conn.stage == DISCARDING:
            if conn.discard_left > 0:
                return False
            size = conn.too_large
            conn.stage = READING
            raise _Refusal(400, self._too_large(conn, size), "too_large", close=False)
        if not conn.buf:
            return False
        buf = conn.buf
        if conn.head_end < 0:
            end = buf.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
            line_end = buf.find(b"\r\n", 0, self.cfg.limit_request_line + 2)
            if line_end < 0 and len(buf) > self.cfg.limit_request_line + 2:
                raise _Refusal(414, f"request line longer than {self.cfg.limit_request_line} bytes", "bad_request")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise _Refusal(431, f"request headers longer than {MAX_HEADER_BYTES} bytes", "bad_request")
                return False
            conn.head_end = end + 4
            self._headers(conn, bytes(buf[: conn.head_end]))
            if conn.too_large is not None:
                return False
        if conn.chunked:
            return self._chunks(conn)
        return len(buf) >= conn.head_end + conn.content_length

    def _headers(self, conn: FrontConn, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        path = parts[1].split(b"?", 1)[0] if len(parts) == 3 else b""  # the API server adds ?timeout=5s
        conn.endpoint = path.decode("latin-1").lstrip("/")
        lengths: list[bytes] = []
        codings: list[bytes] = []
        tokens: list[bytes] = []
        expect = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif name == b"connection":
                tokens += [c.strip().lower() for c in value.split(b",")]
            elif name == b"expect" and value.strip().lower() == b"100-continue":
                expect = True
        version = parts[2] if len(parts) == 3 else b""
        conn.keep_alive = b"keep-alive" in tokens if version == b"HTTP/1.0" else b"close" not in tokens
        if (
            self.answer_inline is not None
            and parts[0] == b"POST"
            and path in _INLINE_PATHS
            and version in (b"HTTP/1.1", b"HTTP/1.0")
            and not codings
        ):
            conn.inline = _INLINE_PATHS[path]
        if codings:
            if lengths or codings[-1] != b"chunked":
                raise _Refusal(400, "Transfer-Encoding must end in chunked, without Content-Length", "bad_request")
            conn.chunked = True
            conn.scan = conn.head_end
        else:
            if len(set(lengths)) > 1 or any(not v.isdigit() or len(v) > 18 for v in lengths):
                raise _Refusal(400, "invalid Content-Length", "bad_request")
            conn.content_length = int(lengths[0]) if lengths else 0
            if conn.content_length > admission.MAX_BODY_BYTES:
                self._start_discard(conn, conn.content_length, conn.content_length)
                return
        if expect:  # the client waits for this before it sends the body; the thread must not send it again
            new_head = re.sub(rb"(?im)^expect:[^\r\n]*\r\n", b"", bytes(conn.buf[: conn.head_end]))
            conn.buf[: conn.head_end] = new_head
            conn.head_end = len(new_head)
            if conn.chunked:
                conn.scan = conn.head_end
            self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")

    def _start_discard(self, conn: FrontConn, size: int | None, remaining: int) -> None:
        from webhook.server.app import DISCARD_LIMIT

        already = len(conn.buf) - conn.head_end
        if size is not None and size > DISCARD_LIMIT:
            raise _Refusal(400, self._too_large(conn, size), "too_large")
        conn.too_large = size
        conn.discard_left = max(0, remaining - already)
        del conn.buf[:]
        conn.stage = DISCARDING

    def _chunks(self, conn: FrontConn) -> bool:
        """Follow the chunked framing from ``conn.scan``; True when the last chunk and trailers are in.

        Past the body limit, the rest of the body is dropped as it arrives (``chunk_discard``) and the 400 is
        sent once it is all in, so the client reads it on a healthy connection.
        """
        buf = conn.buf
        while True:
            if conn.skip:  # discarding: the rest of a chunk's data and its CRLF
                take = min(conn.skip, len(buf) - conn.scan)
                del buf[conn.scan : conn.scan + take]
                conn.skip -= take
                if conn.skip:
                    return False
            if conn.chunks_done:  # trailers: lines until an empty one
                end = buf.find(b"\r\n", conn.scan)
                if end < 0:
                    return False
                if end == conn.scan:
                    if conn.chunk_discard:  # the whole oversized body is in: answer, keep the connection
                        conn.rest = bytes(buf[end + 2 :])
                        del buf[:]
                        raise _Refusal(400, self._too_large(conn, None), "too_large", close=False)
                    return self._exact(conn, end + 2)
                conn.scan = end + 2
                continue
            end = buf.find(b"\r\n", conn.scan, conn.scan + 4096)
            if end < 0:
                if len(buf) - conn.scan > 4096:
                    raise _Refusal(400, "invalid chunk size line", "bad_request")
                return False
            size_text = bytes(buf[conn.scan : end]).split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise _Refusal(400, "invalid chunk size", "bad_request")
            size = int(size_text, 16)
            if size == 0:
                conn.chunks_done = True
                conn.scan = end + 2
                continue
            if not conn.chunk_discard and conn.body_bytes + size > admission.MAX_BODY_BYTES:
                conn.chunk_discard = True
                conn.discarded = conn.body_bytes
                del buf[conn.head_end : conn.scan]  # the kept chunks go too
                end -= conn.scan - conn.head_end
                conn.scan = conn.head_end
            if conn.chunk_discard:
                from webhook.server.app import DISCARD_LIMIT

                conn.discarded += size
                if conn.discarded > DISCARD_LIMIT:
                    raise _Refusal(400, self._too_large(conn, None), "too_large")
                del buf[conn.scan : end + 2]
                conn.skip = size + 2
                continue
            if len(buf) < end + 2 + size + 2:
                return False
            conn.body_bytes += size
            conn.scan = end + 2 + size + 2

    def _exact(self, conn: FrontConn, end: int) -> bool:
        """Keep only one request for the thread: bytes after ``end`` stay for the next one."""
        conn.rest = bytes(conn.buf[end:])
        del conn.buf[end:]
        return True

    def _too_large(self, conn: FrontConn, size: int | None) -> str:
        from webhook.server.app import record_refusal, too_large_message

        message = too_large_message(size)
        if conn.endpoint in admission.ENDPOINTS:
            record_refusal(conn.endpoint, message)
        return message

    def _send(self, conn: FrontConn, data: bytes) -> None:
        """Write a short answer without blocking; a client that cannot take it now is dropped."""
        conn.sock.setblocking(False)
        view = memoryview(data)
        while view:
            sent = conn.sock.send(view)
            view = view[sent:]

    def _refuse(self, conn: FrontConn, refusal: _Refusal) -> None:
        metrics.refused(refusal.reason)
        log.info(
            "refused a request before a thread saw it: %s %s",
            refusal.status,
            refusal,
            extra={"fields": {"client": str(conn.client[0]) if conn.client else None, "reason": refusal.reason}},
        )
        try:
            self._send(conn, json_error_response(refusal.status, str(refusal), close=refusal.close))
        except (OSError, ssl.SSLError):
            self._drop(conn)
            return
        if refusal.close:
            self._drop(conn)
            return
        conn.buf = bytearray(conn.rest) + conn.buf  # what came after the refused request
        conn.rest = b""
        conn._reset_request()
        self._release_large(conn)
        self._idle(conn)
        self._step(conn)

    def _hand_off(self, conn: FrontConn) -> bool:
        """Answer the buffered request here (``_answer``) or give it to a request thread.

        True when it was answered here, all written and the connection waits for its next request.
        """
        if conn.inline and not conn.large:
            return self._answer(conn)
        self._to_thread(conn)
        return False

    def _answer(self, conn: FrontConn) -> bool:
        """Answer an admission request in the main loop: decide, then write without blocking."""
        end = conn.head_end + conn.content_length
        body = bytes(conn.buf[conn.head_end : end])
        del conn.buf[:end]  # what is left is a pipelined next request
        endpoint, keep = conn.inline, conn.keep_alive and self.alive
        conn._reset_request()
        try:
            status, answer = self.answer_inline(endpoint, body)
        except Exception:  # handle_raw answers its own errors; this is a bug in it
            log.exception("answering /%s failed", endpoint)
            from webhook.server.app import error_body

            status, answer, keep = 500, error_body("500 Internal Server Error: internal error"), False
        reason = "OK" if status == 200 else _STATUS_TEXT.get(status, "Error")
        connection = "" if keep else "Connection: close\r\n"
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(answer)}\r\n{connection}\r\n"
        )
        conn.out = memoryview(head.encode("latin-1") + answer)
        conn.close_after = not keep
        conn.stage = WRITING
        conn.deadline = time.monotonic() + WRITE_SECONDS
        return self._flush(conn)

    def _flush(self, conn: FrontConn) -> bool:
        """Write what is left of ``conn.out``; True when all is written and the connection is open for more."""
        out = conn.out
        while out:
            try:
                sent = conn.sock.send(out)
            except ssl.SSLWantWriteError:
                conn.out = out
                self._watch(conn, selectors.EVENT_WRITE)
                return False
            except ssl.SSLWantReadError:
                conn.out = out
                self._watch(conn, selectors.EVENT_READ)
                return False
            out = out[sent:]
        conn.out = None
        if conn.close_after:
            self._drop(conn)
            return False
        self._idle(conn)
        if conn.buf:  # part of a pipelined next request: it is being read now
            conn.stage = READING
            conn.deadline = time.monotonic() + REQUEST_SECONDS
        self._watch(conn, selectors.EVENT_READ)
        return True

    def _resume(self, conn: FrontConn) -> None:
        """Go on with a connection whose turn was cut short (``INLINE_BURST``), if it is still open."""
        if self.front.get(id(conn)) is conn:
            self._step(conn)

    def _to_thread(self, conn: FrontConn) -> None:
        """Give the buffered request to a request thread (gunicorn's parser reads it from memory)."""
        self._unwatch(conn)
        self.front.pop(id(conn), None)
        rest = getattr(conn, "rest", b"")
        if not conn.chunked:
            end = conn.head_end + conn.content_length
            rest = bytes(conn.buf[end:])
            del conn.buf[end:]
        conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(conn.buf))
        conn.buf = bytearray(rest)
        conn.rest = b""
        conn._reset_request()
        conn.sock.settimeout(WRITE_SECONDS)
        self.in_threads += 1
        self.enqueue_req(conn)

    # ------------------------------------------------------------------ the request thread and after

    def handle(self, conn: Any) -> Any:
        """Serve one buffered request (in a request thread); True to keep the connection."""
        req = None
        try:
            req = next(conn.parser)
            if not req:
                return False
            return self._keepalive_after(conn, self.handle_request(req, conn))
        except (http.errors.NoMoreData, StopIteration, TimeoutError) as exc:
            self.log.debug("closing connection: %s", exc)
        except ssl.SSLError as exc:
            self.log.debug("TLS error while answering: %s", exc)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("socket error processing request")
        except Exception as exc:
            self.handle_error(req, conn.sock, conn.client, exc)
        return False

    def finish_request(self, conn: Any, fs: Any) -> None:
        """Back in the main loop: a kept-alive connection returns to the front stage, others close."""
        self.in_threads -= 1
        self._release_large(conn)
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keep = False
        if not keep or not self.alive:
            self.nr_conns -= 1
            conn.close()
            return
        conn.sock.setblocking(False)
        leftover = conn.parser.unreader.buf.getvalue() if conn.parser is not None else b""
        if leftover:
            conn.buf[:0] = leftover
        self.front[id(conn)] = conn
        self._idle(conn)
        if conn.buf or conn.sock.pending():
            self._step(conn)  # the next request is (partly) here already
        else:
            self._watch(conn, selectors.EVENT_READ)  # no recv that can only say "nothing yet"

    def murder_keepalived(self, force: bool = False) -> None:
        if force:
            for conn in list(self.front.values()):
                self._drop(conn)

    def murder_pending(self) -> None:
        """Close the front-stage connections past their deadline (and idle ones when stopping)."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_SECONDS
        stopping = not self.alive
        for conn in list(self.front.values()):
            if stopping and conn.stage == HANDSHAKE:
                self._drop(conn)  # no request started on it: nothing to finish
            elif stopping and conn.stage == IDLE and conn.deadline > now + gthread.STOP_KEEPALIVE_LINGER:
                # like gthread: a request the client may be sending now is still answered (with close)
                conn.deadline = now + gthread.STOP_KEEPALIVE_LINGER
            elif conn.deadline <= now:
                reason = {
                    HANDSHAKE: "handshake_timeout",
                    READING: "read_timeout",
                    DISCARDING: "read_timeout",
                    WRITING: "write_timeout",
                }
                self._drop(conn, reason.get(conn.stage, ""))

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's own errors (bad request line, headers, chunking) as one-line JSON, not HTML."""
        status, client_error = 500, False
        for kinds, code in _GUNICORN_ERRORS:
            if isinstance(exc, kinds):
                status, client_error = code, True
                break
        if client_error:
            message = " ".join(str(exc).split()) or type(exc).__name__
            self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], message)
            metrics.refused("bad_request")
        else:
            message = "internal error"
            self.log.exception("Error handling request")
        try:
            client.setblocking(False)
            client.send(json_error_response(status, message))
        except Exception:
            self.log.debug("failed to send the error answer")


_GUNICORN_ERRORS: tuple[tuple[Any, int], ...] = (
    (herrors.LimitRequestLine, 414),
    (herrors.LimitRequestHeaders, 431),
    (herrors.UnsupportedTransferCoding, 501),
    (herrors.ExpectationFailed, 417),
    (herrors.ForbiddenProxyRequest, 403),
    ((herrors.ParseException, ssl.SSLError), 400),
)
