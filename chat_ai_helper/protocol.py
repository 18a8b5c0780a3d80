"""The helper side of the Emacs protocol: requests in, events out, as JSON lines.

Each line read is one request object (see ``docs/protocol.org``), or a
cancel, providers or hello message; each line written is one event
carrying a request's ``id``: ``queued`` events while it waits its turn
(`chat_ai_helper.concurrency`), at least every half of its timeout (at
most 30 s apart), and ``started`` when it is sent, ``retry``, ``reasoning``
and ``delta`` events, then exactly
one ``done`` or ``error`` event (a ``preview`` for a dry run, a
``providers`` event for a providers message, a ``usage`` event for a
usage message).  Requests run concurrently,
one thread each.  A hello is answered at once with the helper's version
and protocol version, so that Emacs can refuse a helper older than it
needs.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

from chat_ai_helper import __version__
from chat_ai_helper.client import (
    Cancel,
    Client,
    Delta,
    Done,
    Reasoning,
    Retry,
    ToolCall,
    retry_line,
)
from chat_ai_helper.concurrency import HEARTBEAT, Place
from chat_ai_helper.errors import Cancelled, ChatAIError, ConfigError, InternalError
from chat_ai_helper.providers import listing, providers_file
from chat_ai_helper.request import parse_request
from chat_ai_helper.usage import Meter, UsageLog, log_file, meter_for, totals

PROTOCOL_VERSION = 1
"""The version of this protocol; it grows when Emacs must know of a change."""


def hello_event(request_id: Any) -> dict[str, Any]:
    """Return the answer to a hello REQUEST_ID: who this helper is."""
    return {
        "id": request_id,
        "type": "hello",
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "python": sys.version.split()[0],
        "executable": sys.executable,
    }


def encode_event(event: dict[str, Any]) -> bytes:
    """Return EVENT as one line of UTF-8 JSON."""
    line = (
        json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        + "\n"
    )
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
        self.pending: dict[tuple[Any, int, bool], list[str]] = {}
        self.positions: dict[Any, dict[str, Any]] = {}
        self.places: dict[Any, int] = {}
        self.lock = threading.Lock()
        self.last_write = 0.0
        self.timer: threading.Timer | None = None

    def delta(
        self, request_id: Any, choice: int, text: str, thinking: bool = False
    ) -> None:
        """Note TEXT for CHOICE of request REQUEST_ID: reply text, or THINKING."""
        with self.lock:
            self.pending.setdefault((request_id, choice, thinking), []).append(text)

    def queued(self, request_id: Any, ahead: int, wait: float | None) -> None:
        """Note that REQUEST_ID waits with AHEAD requests before it, and WAIT seconds.

        Only the latest place of each request is written, with the deltas.
        """
        event = {"id": request_id, "type": "queued", "ahead": ahead}
        if wait is not None:
            event["wait"] = wait
        with self.lock:
            self.positions[request_id] = event
        self.flush()

    def event(self, event: dict[str, Any]) -> None:
        """Write EVENT at once, after the deltas before it, before the places after it.

        A place of EVENT's own request is dropped, unless EVENT is a retry:
        the request then waits in line again.  A request that leaves the
        line does so before the others are told they moved up.
        """
        with self.lock:
            if event.get("type") != "retry":
                self.positions.pop(event.get("id"), None)
                self.places.pop(event.get("id"), None)
            self._write_texts()
            self.output.write(encode_event(event))
            self._write_places()
            self._push()

    def flush(self) -> None:
        """Write the pending deltas now, or soon when the last write was recent."""
        with self.lock:
            if not self.pending and not self.positions:
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
            if self.pending or self.positions:
                self._write_deltas()
                self._push()

    def forget(self, request_id: Any) -> None:
        """Drop the pending deltas of REQUEST_ID."""
        with self.lock:
            for key in [key for key in self.pending if key[0] == request_id]:
                del self.pending[key]
            self.positions.pop(request_id, None)
            self.places.pop(request_id, None)

    def _write_deltas(self) -> None:
        self._write_places()
        self._write_texts()

    def _write_places(self) -> None:
        positions, self.positions = self.positions, {}
        for event in self._in_turn(positions):
            self.output.write(encode_event(event))
            self.places[event["id"]] = event["ahead"]

    def _write_texts(self) -> None:
        pending, self.pending = self.pending, {}
        for (request_id, choice, thinking), texts in pending.items():
            event = (
                {"id": request_id, "type": "reasoning", "choice": choice}
                if thinking
                else {"id": request_id, "type": "delta", "choice": choice}
            )
            self.output.write(encode_event({**event, "text": "".join(texts)}))

    def _in_turn(self, positions: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the queued events of POSITIONS in an order that Emacs can follow.

        A request is told its new place only after the request that was
        last told that place has been told its own, so that no two
        requests are ever told the same place, whichever way the line moved.
        """
        holders = {self.places[key]: key for key in positions if key in self.places}
        after: dict[Any, Any] = {}
        for key, event in positions.items():
            holder = holders.get(event["ahead"], key)
            if holder != key:
                after[holder] = key
        waiting = set(after.values())
        ordered: list[dict[str, Any]] = []
        for key in positions:
            if key in waiting:
                continue
            chain: Any = key
            while chain is not None and len(ordered) < len(positions):
                ordered.append(positions[chain])
                chain = after.get(chain)
        told = {id(event) for event in ordered}
        return ordered + [e for e in positions.values() if id(e) not in told]

    def _push(self) -> None:
        self.output.flush()
        self.last_write = time.monotonic()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def answer(
    envelope: Any,
    client: Client,
    writer: EventWriter,
    cancel: Cancel,
    log: UsageLog | None = None,
    order: int = 0,
) -> None:
    """Run the request ENVELOPE, writing its events with WRITER.

    The request ends with exactly one final event (``done``, ``error``
    or, for a dry run, ``preview``), whatever happens: any failure,
    expected or not, becomes its ``error`` event.  A cancelled request
    ends without another event: its caller has already finished it.
    Each request sent is recorded in LOG, after its final event.
    ORDER is its place in the line of requests read, for its origin's queue.
    """
    request_id = envelope.get("id") if isinstance(envelope, dict) else None
    meters: list[Meter] = []
    log = log or UsageLog()
    try:
        _answer(request_id, envelope, client, writer, cancel, meters, log, order)
    except Cancelled:
        writer.forget(request_id)
        log.end(meters[0] if meters else None, "cancelled")
    except Exception as failure:
        error = (
            failure
            if isinstance(failure, ChatAIError)
            else InternalError.wrapping(failure)
        )
        event = error.to_event()
        writer.event({"id": request_id, "type": "error", **event})
        log.end(meters[0] if meters else None, "error", str(event.get("kind")))


def _answer(
    request_id: Any,
    envelope: Any,
    client: Client,
    writer: EventWriter,
    cancel: Cancel,
    meters: list[Meter],
    log: UsageLog,
    order: int,
) -> None:
    if isinstance(envelope, dict) and envelope.get("dry_run"):
        preview = parse_request(envelope, require_key=False).preview()
        text = json.dumps(preview, ensure_ascii=False, indent=2)
        writer.event(
            {"id": request_id, "type": "preview", "request": preview, "text": text}
        )
        return
    request = parse_request(envelope)
    meter = meter_for("emacs", request, envelope)

    def sent() -> None:
        # A request never sent (cancelled in the queue, or stopped with
        # its origin) has no row in the usage log; time counts from here.
        if not meters:
            meter.started = time.monotonic()
            meters.append(meter)

    place = Place(
        queued=lambda ahead, wait: writer.queued(request_id, ahead, wait),
        started=lambda: writer.event({"id": request_id, "type": "started"}),
        taken=sent,
        order=order,
        heartbeat=min(HEARTBEAT, request.timeout / 2),
    )
    events = client.complete(
        request, before_wait=writer.flush, cancel=cancel, place=place
    )
    for event in events:
        if isinstance(event, Delta):
            meter.text(event.text)
            writer.delta(request_id, event.choice, event.text)
        elif isinstance(event, Reasoning):
            meter.text("")
            writer.delta(request_id, event.choice, event.text, thinking=True)
        elif isinstance(event, Retry):
            writer.event(
                {
                    "id": request_id,
                    "type": "retry",
                    "attempt": event.attempt,
                    "retries": event.retries,
                    "wait": event.wait,
                    "status": event.status,
                    "shared": event.shared,
                    "message": retry_line(event),
                }
            )
        elif isinstance(event, ToolCall):
            writer.event(
                {
                    "id": request_id,
                    "type": "tool_call",
                    "choice": event.choice,
                    "call_id": event.call_id,
                    "name": event.name,
                    "arguments": event.arguments,
                }
            )
        elif isinstance(event, Done):
            row = log.row(meter, "done", usage=event.usage, model=event.model)
            writer.event(
                {
                    "id": request_id,
                    "type": "done",
                    "finish_reasons": event.finish_reasons,
                    "usage": event.usage,
                    "model": event.model,
                    **({"files": event.files} if event.files is not None else {}),
                    "cost": None if row is None else row["cost"],
                }
            )
            if row is not None:
                log.record(row)
            return
    raise InternalError("the reply ended without a final event; please report this")


def providers_event(message: dict[str, Any]) -> dict[str, Any]:
    """Return the answer to MESSAGE, a providers request: each provider, or an error."""
    request_id = message.get("id")
    try:
        found = listing(os.environ)
    except ConfigError as error:
        return {"id": request_id, "type": "error", **error.to_event()}
    return {
        "id": request_id,
        "type": "providers",
        "providers": [profile.describe(os.environ) for profile in found],
        "file": str(providers_file(os.environ)),
    }


def usage_event(message: dict[str, Any]) -> dict[str, Any]:
    """Return the answer to MESSAGE, a usage request: the log's totals by block."""
    import sqlite3

    request_id = message.get("id")
    since, org_file = message.get("since"), message.get("file")
    try:
        rows = totals(
            os.environ,
            since if isinstance(since, str) else None,
            org_file if isinstance(org_file, str) else None,
        )
    except sqlite3.Error as error:
        problem = ConfigError(
            f"the usage log {log_file(os.environ)} cannot be read: {error}"
        )
        return {"id": request_id, "type": "error", **problem.to_event()}
    return {
        "id": request_id,
        "type": "usage",
        "totals": rows,
        "log": str(log_file(os.environ)),
    }


def serve(lines: Iterable[bytes], output: IO[bytes]) -> None:
    """Answer the request lines in LINES, each in its own thread, until they end.

    A line ``{"type": "cancel", "id": ID}`` cancels the request ID; a line
    ``{"type": "hello", "id": ID}`` is answered with `hello_event`.  At
    the end of LINES, wait for the requests still running.
    """
    client = Client()
    writer = EventWriter(output)
    log = UsageLog()
    running: dict[Any, tuple[threading.Thread, Cancel]] = {}
    arrivals = itertools.count()
    try:
        for line in lines:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except ValueError as error:
                problem = ConfigError(f"the request is not valid JSON: {error}")
                writer.event({"id": None, "type": "error", **problem.to_event()})
                continue
            if isinstance(message, dict) and message.get("type") == "providers":
                writer.event(providers_event(message))
                continue
            if isinstance(message, dict) and message.get("type") == "usage":
                log.settle()
                writer.event(usage_event(message))
                continue
            if isinstance(message, dict) and message.get("type") == "hello":
                writer.event(hello_event(message.get("id")))
                continue
            request_id = message.get("id") if isinstance(message, dict) else None
            if not isinstance(request_id, str | int | float | None):
                # Not a key a cancel could name; answering it rejects it.
                request_id = None
            if isinstance(message, dict) and message.get("type") == "cancel":
                entry = running.get(request_id)
                if entry:
                    entry[1]()
                continue
            for finished in [i for i, (t, _) in running.items() if not t.is_alive()]:
                del running[finished]
            cancel = Cancel()
            thread = threading.Thread(
                target=answer,
                args=(message, client, writer, cancel, log, next(arrivals)),
                daemon=True,
            )
            running[request_id if request_id is not None else id(thread)] = (
                thread,
                cancel,
            )
            thread.start()
        for thread, _ in running.values():
            thread.join()
    finally:
        client.close()
