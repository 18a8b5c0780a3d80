"""Reading Server-Sent Events: from raw byte chunks to the data of each event."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import sseclient


def iter_sse_data(chunks: Iterable[bytes]) -> Iterator[str]:
    """Yield the data of each event in CHUNKS, bytes split anywhere.

    Chunks may break an event, a line or a multi-byte character at any
    byte; each event is decoded as UTF-8 only once it is whole.
    """
    for event in sseclient.SSEClient(iter(chunks)).events():
        yield event.data
