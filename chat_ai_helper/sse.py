"""Reading Server-Sent Events: from raw byte chunks to the type and data of each event.

sseclient-py reads the events.  In front of it, the bytes are cut into
lines as the event-stream format of the HTML standard says: lines end with
LF, CR or CRLF, and a CR at the end of one chunk and an LF at the start of
the next are one line end; each line is checked to be UTF-8 and events are
bounded in size.  It works as the bytes arrive, so that each event is
passed on as soon as it is whole, whatever the HTTP framing of the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import sseclient

from chat_ai_helper.errors import StreamError

MAX_EVENT_BYTES = 16 * 1024 * 1024
BOM = "\ufeff"
LINE_END = re.compile(rb"\r\n|\r|\n")


def iter_sse_events(chunks: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """Yield the type and data of each event in CHUNKS, bytes split anywhere.

    Chunks may break an event, a line, a line end or a multi-byte
    character at any byte; each line is checked to be UTF-8 once it is
    whole, and sseclient-py reads the events from the lines.  An event
    whose type is not given is a ``message``.  A last event that the
    stream does not close with a blank line is still yielded.  Raise
    `StreamError` for bytes that are not UTF-8 and for an event larger
    than `MAX_EVENT_BYTES`.
    """
    for event in sseclient.SSEClient(_normal_lines(chunks)).events():
        yield event.event, event.data


def iter_sse_data(chunks: Iterable[bytes]) -> Iterator[str]:
    """Yield the data of each event in CHUNKS, whatever its type."""
    for _, data in iter_sse_events(chunks):
        yield data


def _normal_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the lines of CHUNKS one by one, each ending in LF, the BOM removed.

    sseclient-py finds the end of an event in each chunk it is given;
    whole lines with one kind of line end are what it reads right.
    """
    size = 0
    first = True
    for line in _lines(chunks):
        if first:
            line = line.removeprefix(BOM.encode("utf-8"))
            first = False
        size = size + len(line) if line else 0
        if size > MAX_EVENT_BYTES:
            raise StreamError(_too_large())
        yield bytes(line) + b"\n"


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the lines of CHUNKS, checked to be UTF-8, without their line ends."""
    pending = bytearray()
    after_cr = False
    for chunk in chunks:
        if not chunk:
            continue
        start = 1 if after_cr and chunk.startswith(b"\n") else 0
        after_cr = False
        for end in LINE_END.finditer(chunk, start):
            pending += chunk[start : end.start()]
            yield _checked(pending)
            pending.clear()
            start = end.end()
            after_cr = start == len(chunk) and end.group() == b"\r"
        pending += chunk[start:]
        if len(pending) > MAX_EVENT_BYTES:
            raise StreamError(_too_large())
    if pending:
        yield _checked(pending)


def _checked(line: bytearray) -> bytes:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise StreamError(
            f"the stream held bytes that are not UTF-8 (at byte {error.start} "
            "of a line); the reply is incomplete"
        ) from None
    return bytes(line)


def _too_large() -> str:
    return (
        f"the stream held an event larger than {MAX_EVENT_BYTES // (1024 * 1024)} MB; "
        "the reply is incomplete"
    )
