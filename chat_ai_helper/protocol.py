"""The helper side of the Emacs protocol: requests in, events out, as JSON lines.

Each line read is one request object (see ``docs/protocol.org``); each line
written is one event carrying that request's ``id``: ``delta`` events with
reply text, then exactly one ``done`` or ``error`` event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from chat_ai_helper.client import Client, Delta, Done
from chat_ai_helper.errors import ChatAIError, ConfigError
from chat_ai_helper.request import parse_request


def encode_event(event: dict[str, Any]) -> bytes:
    """Return EVENT as one line of UTF-8 JSON."""
    line = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
    return line.encode("utf-8", errors="replace")


def events_for(line: bytes | str, client: Client) -> Iterator[dict[str, Any]]:
    """Run the request in LINE and yield its protocol events."""
    request_id: Any = None
    try:
        try:
            envelope = json.loads(line)
        except ValueError as error:
            raise ConfigError(f"the request is not valid JSON: {error}") from None
        if isinstance(envelope, dict):
            request_id = envelope.get("id")
        request = parse_request(envelope)
        for event in client.complete(request):
            if isinstance(event, Delta):
                yield {
                    "id": request_id,
                    "type": "delta",
                    "choice": event.choice,
                    "text": event.text,
                }
            elif isinstance(event, Done):
                yield {
                    "id": request_id,
                    "type": "done",
                    "finish_reasons": event.finish_reasons,
                    "usage": event.usage,
                    "model": event.model,
                }
    except ChatAIError as error:
        yield {"id": request_id, "type": "error", **error.to_event()}


def serve(lines: Iterable[bytes], output: IO[bytes]) -> None:
    """Answer each request line in LINES, writing events to OUTPUT as they come."""
    client = Client()
    try:
        for line in lines:
            if not line.strip():
                continue
            for event in events_for(line, client):
                output.write(encode_event(event))
                output.flush()
    finally:
        client.close()
