"""A chat server on 127.0.0.1 that misbehaves the way real gateways do, for tests.

It writes its replies byte by byte on a raw socket, so that it can send
what a well-behaved HTTP server never would: bodies ended by closing the
connection (HTTP/1.0 style), Content-Length bodies, chunked bodies,
gzip, no Content-Type, and every malformed chunk or reply the helper must
survive.  The request's model name picks the scenario (see `SCENARIOS`);
``good`` streams or returns `GOOD_TEXT` properly, and every name also
works as ``NAME@close``, ``NAME@length`` or ``NAME@chunked`` to pick
the framing of the body (chunked by default).

The ``hold`` scenario sends the first part of the reply, then waits until
`HostileServer.release` is set (at most 20 seconds) before the rest,
with `HostileServer.holding` set meanwhile: a client that streams shows
the first part while the server holds.

Run as a script, it prints ``{"port": N}`` and serves until killed.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GOOD_TEXT = "Hello, wörld 🎉 — fine"
HOLD = object()
FRAMINGS = ("chunked", "length", "close")


@dataclass
class Reply:
    """What to send: status, headers, and the body in pieces written one by one."""

    pieces: list[Any]
    status: int = 200
    content_type: str | None = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)
    gzip: bool = False


def sse(payload: Any, end: bytes = b"\n\n") -> bytes:
    """Return PAYLOAD as one SSE data event, JSON unless it is bytes."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return b"data: " + data + end


def chunk(delta: Any, index: Any = 0, finish: Any = None, **extra: Any) -> bytes:
    """Return one streamed chunk with DELTA for choice INDEX, as an SSE event."""
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    return sse({"model": "hostile", "choices": [choice], **extra})


def good_stream(end: bytes = b"\n\n") -> list[Any]:
    """Return the events of a proper stream of `GOOD_TEXT`, each ended by END."""
    words = [GOOD_TEXT[:7], GOOD_TEXT[7:15], GOOD_TEXT[15:]]
    events = [
        sse({"choices": [{"index": 0, "delta": {"content": w}}]}, end) for w in words
    ]
    events.append(
        sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, end)
    )
    return [*events, b"data: [DONE]" + end]


def whole(payload: Any) -> Reply:
    """Return a non-streamed reply of PAYLOAD, JSON unless it is bytes."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Reply([data], content_type="application/json")


def good_whole(**message: Any) -> dict[str, Any]:
    """Return a proper whole reply; MESSAGE replaces the message's fields."""
    return {
        "model": "hostile",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": GOOD_TEXT, **message},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def stream_of(*events: Any) -> Reply:
    """Return a streamed reply of EVENTS, each bytes or a chunk payload."""
    return Reply(
        [event if isinstance(event, bytes) else sse(event) for event in events]
    )


TOOL_CALL = {
    "index": 0,
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
INVALID_UTF8 = "日本".encode()[:4]  # a character cut in the middle

# Each scenario: a function of the request body returning the reply.
SCENARIOS: dict[str, Callable[[dict[str, Any]], Reply]] = {
    # Proper replies, in every shape a server may give them.
    "good": lambda body: (
        Reply(good_stream()) if body.get("stream") else whole(good_whole())
    ),
    "crlf": lambda body: Reply(good_stream(b"\r\n\r\n")),
    "cr": lambda body: Reply(good_stream(b"\r\r")),
    "bom": lambda body: Reply([b"\xef\xbb\xbf", *good_stream()]),
    "keepalive": lambda body: Reply(
        [b": keep-alive\n\n", b"\n", b": OPENROUTER PROCESSING\n\n", b"event: ping\n\n"]
        + [piece for event in good_stream() for piece in (event, b": ping\n\n")]
    ),
    "no-content-type": lambda body: Reply(good_stream(), content_type=None),
    "as-json": lambda body: Reply(good_stream(), content_type="application/json"),
    "gzip": lambda body: Reply(good_stream(), gzip=True),
    "error-null": lambda body: stream_of(
        {"choices": [{"index": 0, "delta": {"content": GOOD_TEXT}}], "error": None},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        b"data: [DONE]\n\n",
    ),
    "odd-extras": lambda body: stream_of(
        {"choices": None, "usage": "lots", "model": 42},
        {"choices": [{"delta": {"content": GOOD_TEXT, "role": None}}]},
        {"choices": [{"index": 0, "delta": None, "finish_reason": "stop"}]},
        b"data: [DONE]\n\n",
    ),
    "big-event": lambda body: stream_of(
        {"choices": [{"index": 0, "delta": {"content": "x" * 1_000_000}}]},
        b"data: [DONE]\n\n",
    ),
    "tool-calls": lambda body: stream_of(
        {
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "tool_calls": [TOOL_CALL]}}
            ]
        },
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        b"data: [DONE]\n\n",
    ),
    "hold": lambda body: Reply([*good_stream()[:1], HOLD, *good_stream()[1:]]),
    "whole-error-null": lambda body: whole({**good_whole(), "error": None}),
    "whole-odd-extras": lambda body: whole(
        {**good_whole(), "usage": [1], "model": {"name": "x"}}
    ),
    "whole-tool-calls": lambda body: whole(
        {
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [TOOL_CALL],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    ),
    "whole-gzip": lambda body: Reply(
        [json.dumps(good_whole()).encode()], content_type="application/json", gzip=True
    ),
    "whole-untyped": lambda body: Reply(
        [json.dumps(good_whole()).encode()], content_type=None
    ),
    # Streams that are wrong at some level.
    "content-42": lambda body: stream_of(chunk({"content": 42}), b"data: [DONE]\n\n"),
    "content-list": lambda body: stream_of(
        chunk({"content": ["a", "b"]}), b"data: [DONE]\n\n"
    ),
    "choices-oops": lambda body: stream_of({"choices": ["oops"]}, b"data: [DONE]\n\n"),
    "choices-object": lambda body: stream_of(
        {"choices": {"index": 0}}, b"data: [DONE]\n\n"
    ),
    "delta-text": lambda body: stream_of(
        {"choices": [{"index": 0, "delta": "text"}]}, b"data: [DONE]\n\n"
    ),
    "index-zero": lambda body: stream_of(
        chunk({"content": "hi"}, index="zero"), b"data: [DONE]\n\n"
    ),
    "index-big": lambda body: stream_of(
        chunk({"content": "hi"}, index=10**12), b"data: [DONE]\n\n"
    ),
    "index-negative": lambda body: stream_of(
        chunk({"content": "hi"}, index=-1), b"data: [DONE]\n\n"
    ),
    "index-float": lambda body: stream_of(
        chunk({"content": "hi"}, index=0.5), b"data: [DONE]\n\n"
    ),
    "finish-42": lambda body: stream_of(
        chunk({"content": "hi"}, finish=42), b"data: [DONE]\n\n"
    ),
    "chunk-array": lambda body: stream_of(sse([1, 2]), b"data: [DONE]\n\n"),
    "chunk-string": lambda body: stream_of(sse("hi"), b"data: [DONE]\n\n"),
    "chunk-nan": lambda body: stream_of(
        sse(b'{"choices": [{"index": NaN, "delta": {}}]}'), b"data: [DONE]\n\n"
    ),
    "chunk-deep": lambda body: stream_of(sse(b"[" * 100_000), b"data: [DONE]\n\n"),
    "truncated": lambda body: Reply([chunk({"content": "Hel"}), b'data: {"choi']),
    "no-done": lambda body: Reply(good_stream()[:-1]),
    "bad-utf8": lambda body: Reply(
        [
            chunk({"content": "ok"}),
            b'data: {"choices": [{"index": 0, "delta": {"content": "'
            + INVALID_UTF8[:2],
            INVALID_UTF8[2:] + b'"}}]}\n\n',
            b"data: [DONE]\n\n",
        ]
    ),
    "huge-event": lambda body: Reply(
        [b'data: {"choices": [{"index": 0, "delta": {"content": "']
        + [b"y" * 1_048_576] * 17
        + [b'"}}]}\n\n', b"data: [DONE]\n\n"]
    ),
    "event-error": lambda body: Reply(
        [
            chunk({"content": "Hel"}),
            b'event: error\ndata: {"message": "Overloaded, try later", '
            b'"type": "overloaded_error"}\n\n',
        ]
    ),
    "event-error-text": lambda body: Reply(
        [b"event: error\ndata: upstream went away\n\n"]
    ),
    "error-string": lambda body: stream_of({"error": "the upstream model crashed"}),
    "bad-gzip": lambda body: Reply(
        [b"this is not gzip at all"], headers={"Content-Encoding": "gzip"}
    ),
    "whole-bad-gzip": lambda body: Reply(
        [b"not gzip"],
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
    ),
    "whole-short-length": lambda body: Reply(
        [b'{"choices": []'], headers={"Content-Length": "900"}
    ),
    "html": lambda body: Reply(
        [b"<html><head><title>502 Bad Gateway</title></head></html>"],
        content_type="text/html",
    ),
    "empty-body": lambda body: Reply([], content_type="text/event-stream"),
    # Whole replies that are wrong at some level.
    "whole-choices-ints": lambda body: whole({"choices": [1, 2]}),
    "whole-message-string": lambda body: whole(
        {"choices": [{"index": 0, "message": "hi"}]}
    ),
    "whole-content-42": lambda body: whole(good_whole(content=42)),
    "whole-index-zero": lambda body: whole(
        {"choices": [{"index": "zero", "message": {"content": "hi"}}]}
    ),
    "whole-index-big": lambda body: whole(
        {"choices": [{"index": 7, "message": {"content": "hi"}}]}
    ),
    "whole-finish-list": lambda body: whole(
        {
            "choices": [
                {"index": 0, "message": {"content": "hi"}, "finish_reason": ["stop"]}
            ]
        }
    ),
    "whole-not-object": lambda body: whole([1]),
    "whole-no-choices": lambda body: whole({"id": "x"}),
    "whole-nan": lambda body: whole(b'{"choices": [{"message": {"content": NaN}}]}'),
    "whole-deep": lambda body: whole(b"[" * 100_000),
    "whole-bad-utf8": lambda body: whole(
        b'{"choices": [{"message": {"content": "' + INVALID_UTF8 + b'"}}]}'
    ),
    "whole-error-string": lambda body: whole({"error": "quota gone"}),
    "short-length": lambda body: Reply(
        [chunk({"content": "Hel"})], headers={"Content-Length": "5000"}
    ),
}


class HostileServer:
    """Serve `SCENARIOS` on 127.0.0.1, one thread per connection."""

    def __init__(self, port: int = 0) -> None:
        self.socket = socket.create_server(("127.0.0.1", port))
        self.port: int = self.socket.getsockname()[1]
        self.release = threading.Event()
        self.holding = threading.Event()
        self.received: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        """Return the base URL clients should use."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> HostileServer:
        """Start serving in a thread, and return the server."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop accepting connections, waking the thread that waits for them."""
        self.release.set()
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(connection,), daemon=True
            ).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                body = _read_request(connection)
            except (OSError, ValueError):
                return
            self.received.append(body)
            name, _, framing = str(body.get("model", "good")).partition("@")
            scenario = SCENARIOS.get(name, SCENARIOS["good"])
            try:
                self._send(connection, scenario(body), framing or "chunked")
            except OSError:
                return

    def _send(self, connection: socket.socket, reply: Reply, framing: str) -> None:
        pieces = reply.pieces
        if reply.gzip:
            pieces = _gzipped(pieces)
        data = [piece for piece in pieces if piece is not HOLD]
        version = "HTTP/1.0" if framing == "close" else "HTTP/1.1"
        head = [f"{version} {reply.status} OK"]
        if reply.content_type:
            head.append(f"Content-Type: {reply.content_type}")
        if reply.gzip:
            head.append("Content-Encoding: gzip")
        headers = dict(reply.headers)
        if framing == "length" and "Content-Length" not in headers:
            headers["Content-Length"] = str(sum(len(piece) for piece in data))
        elif framing == "chunked" and "Content-Length" not in headers:
            headers["Transfer-Encoding"] = "chunked"
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append("Connection: close")
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        chunked = headers.get("Transfer-Encoding") == "chunked"
        for piece in pieces:
            if piece is HOLD:
                self.holding.set()
                self.release.wait(20)
                self.holding.clear()
                continue
            if chunked:
                # Split each piece across two chunks, so that nothing arrives whole.
                middle = len(piece) // 2 + 1
                for part in (piece[:middle], piece[middle:]):
                    if part:
                        connection.sendall(
                            f"{len(part):X}\r\n".encode() + part + b"\r\n"
                        )
            else:
                connection.sendall(piece)
        if chunked:
            connection.sendall(b"0\r\n\r\n")
        connection.shutdown(socket.SHUT_WR)


def _gzipped(pieces: list[Any]) -> list[Any]:
    """Return PIECES gzip-compressed, each flushed so that it can be read alone."""
    compressor = zlib.compressobj(wbits=31)
    out: list[Any] = []
    for piece in pieces:
        if piece is HOLD:
            out.append(piece)
        else:
            out.append(compressor.compress(piece) + compressor.flush(zlib.Z_SYNC_FLUSH))
    out.append(compressor.flush())
    assert gzip.decompress(b"".join(p for p in out if p is not HOLD)) == b"".join(
        p for p in pieces if p is not HOLD
    )
    return out


def _read_request(connection: socket.socket) -> dict[str, Any]:
    """Read one HTTP request from CONNECTION and return its JSON body."""
    connection.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        more = connection.recv(65536)
        if not more:
            raise ValueError("the client went away")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        more = connection.recv(65536)
        if not more:
            break
        rest += more
    body = json.loads(rest[:length])
    return body if isinstance(body, dict) else {}


def main() -> None:
    """Serve until killed, after printing the port as a JSON line."""
    server = HostileServer()
    sys.stdout.write(json.dumps({"port": server.port}) + "\n")
    sys.stdout.flush()
    server.release.set()
    server._accept()


if __name__ == "__main__":
    main()
