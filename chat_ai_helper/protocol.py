"""The helper side of the Emacs protocol: requests in, events out, as JSON lines.

Each line read is one request object (see ``docs/protocol.org``); each line
written is one event carrying that request's ``id``: ``delta`` events with
reply text, then exactly one ``done`` or ``error`` event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

from chat_ai_helper.client import Client, Delta, Done
from chat_ai_helper.errors import ChatAIError, ConfigError
from chat_ai_helper.request import parse_request


def encode_event(event: dict[str, Any]) -> bytes:
    """Return EVENT as one line of UTF-8 JSON."""
    line = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
    return line.encode("utf-8", errors="replace")


class EventWriter:
    """Write events to OUTPUT, merging the deltas that come close together.

    A delta waits in memory until `flush`, which the client calls before
    it may wait for the network.  When the last write is at least
    INTERVAL seconds old, `flush` writes at once, so a stream of the pace
    a model writes at is passed on without delay; when deltas come
    faster, they are written together every INTERVAL seconds, each
    choice's text as one delta, so that Emacs handles tens of events a
    second rather than thousands.
    """

    def __init__(self, output: IO[bytes], interval: float = 0.01) -> None:
        self.output = output
        self.interval = interval
        self.pending: dict[tuple[Any, int], list[str]] = {}
        self.lock = threading.Lock()
        self.last_write = 0.0
        self.timer: threading.Timer | None = None

    def delta(self, request_id: Any, choice: int, text: str) -> None:
        """Note TEXT for CHOICE of request REQUEST_ID."""
        with self.lock:
            self.pending.setdefault((request_id, choice), []).append(text)

    def event(self, event: dict[str, Any]) -> None:
        """Write EVENT at once, after the deltas before it."""
        with self.lock:
            self._write_deltas()
            self.output.write(encode_event(event))
            self._push()

    def flush(self) -> None:
        """Write the pending deltas now, or soon when the last write was recent."""
        with self.lock:
            if not self.pending:
                return
            wait = self.last_write + self.interval - time.monotonic()
            if wait <= 0:
                self._write_deltas()
                self._push()
            elif self.timer is None:
                self.timer = threading.Timer(wait, self._flush_later)
                self.timer.daemon = True
                self.timer.start()

    def _flush_later(self) -> None:
        with self.lock:
            self.timer = None
            if self.pending:
                self._write_deltas()
                self._push()

    def _write_deltas(self) -> None:
        for (request_id, choice), texts in self.pending.items():
            event = {"id": request_id, "type": "delta", "choice": choice}
            self.output.write(encode_event({**event, "text": "".join(texts)}))
        self.pending.clear()

    def _push(self) -> None:
        self.output.flush()
        self.last_write = time.monotonic()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def answer(line: bytes | str, client: Client, writer: EventWriter) -> None:
    """Run the request in LINE, writing its events with WRITER."""
    request_id: Any = None
    try:
        try:
            envelope = json.loads(line)
        except ValueError as error:
            raise ConfigError(f"the request is not valid JSON: {error}") from None
        if isinstance(envelope, dict):
            request_id = envelope.get("id")
        request = parse_request(envelope)
        for event in client.complete(request, before_wait=writer.flush):
            if isinstance(event, Delta):
                writer.delta(request_id, event.choice, event.text)
            elif isinstance(event, Done):
                writer.event(
                    {
                        "id": request_id,
                        "type": "done",
                        "finish_reasons": event.finish_reasons,
                        "usage": event.usage,
                        "model": event.model,
                    }
                )
    except ChatAIError as error:
        writer.event({"id": request_id, "type": "error", **error.to_event()})


def serve(lines: Iterable[bytes], output: IO[bytes]) -> None:
    """Answer each request line in LINES, writing events to OUTPUT as they come."""
    client = Client()
    writer = EventWriter(output)
    try:
        for line in lines:
            if line.strip():
                answer(line, client, writer)
    finally:
        client.close()
