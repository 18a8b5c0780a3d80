"""Reading Server-Sent Events: from raw byte chunks to the type and data of each event.

The reader follows the event-stream format of the HTML standard: lines end
with LF, CR or CRLF (a CR at the end of one chunk and an LF at the start of
the next are one line end), lines starting with a colon are comments,
unknown fields are ignored, and a blank line dispatches the event.  It
works as the bytes arrive, so that each event is passed on as soon as it is
whole, whatever the HTTP framing of the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from chat_ai_helper.errors import StreamError

MAX_EVENT_BYTES = 16 * 1024 * 1024
BOM = "\ufeff"
LINE_END = re.compile(rb"\r\n|\r|\n")


def iter_sse_events(chunks: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """Yield the type and data of each event in CHUNKS, bytes split anywhere.

    Chunks may break an event, a line, a line end or a multi-byte
    character at any byte; each line is decoded as UTF-8 only once it is
    whole.  An event whose type is not given is a ``message``.  A last
    event that the stream does not close with a blank line is still
    yielded.  Raise `StreamError` for bytes that are not UTF-8 and for an
    event larger than `MAX_EVENT_BYTES`.
    """
    event_type = ""
    data: list[str] = []
    size = 0
    first = True
    for line in _lines(chunks):
        if first:
            line = line.removeprefix(BOM)
            first = False
        if not line:
            if data:
                yield event_type or "message", "\n".join(data)
            event_type, data, size = "", [], 0
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            size += len(value) + 1
            if size > MAX_EVENT_BYTES:
                raise StreamError(_too_large())
            data.append(value)
        elif name == "event":
            event_type = value
    if data:
        yield event_type or "message", "\n".join(data)


def iter_sse_data(chunks: Iterable[bytes]) -> Iterator[str]:
    """Yield the data of each event in CHUNKS, whatever its type."""
    for _, data in iter_sse_events(chunks):
        yield data


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Yield the lines of CHUNKS, decoded, without their line ends."""
    pending = bytearray()
    after_cr = False
    for chunk in chunks:
        if not chunk:
            continue
        start = 1 if after_cr and chunk.startswith(b"\n") else 0
        after_cr = False
        for end in LINE_END.finditer(chunk, start):
            pending += chunk[start : end.start()]
            yield _decode(pending)
            pending.clear()
            start = end.end()
            after_cr = start == len(chunk) and end.group() == b"\r"
        pending += chunk[start:]
        if len(pending) > MAX_EVENT_BYTES:
            raise StreamError(_too_large())
    if pending:
        yield _decode(pending)


def _decode(line: bytearray) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StreamError(
            f"the stream held bytes that are not UTF-8 (at byte {error.start} "
            "of a line); the reply is incomplete"
        ) from None


def _too_large() -> str:
    return (
        f"the stream held an event larger than {MAX_EVENT_BYTES // (1024 * 1024)} MB; "
        "the reply is incomplete"
    )
