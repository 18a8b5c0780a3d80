"""Server-Sent Events are read correctly however the bytes are split."""

from __future__ import annotations

import pytest

from chat_ai_helper.sse import iter_sse_data, iter_sse_events

STREAM = (
    'data: {"t": "Server-Sent Eventについて"}\n\n'
    ": a comment line\n\n"
    "event: message\ndata: line one\ndata: line two\n\n"
    'data: {"t": "絵文字 🎉 \\"quoted\\""}\r\n\r\n'
    "data: [DONE]\n\n"
).encode()
EXPECTED = [
    '{"t": "Server-Sent Eventについて"}',
    "line one\nline two",
    '{"t": "絵文字 🎉 \\"quoted\\""}',
    "[DONE]",
]


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, len(STREAM)])
def test_events_survive_any_chunk_size(size: int) -> None:
    assert list(iter_sse_data(chunks_of(STREAM, size))) == EXPECTED


def test_events_survive_a_split_at_every_byte() -> None:
    for cut in range(1, len(STREAM)):
        assert list(iter_sse_data([STREAM[:cut], STREAM[cut:]])) == EXPECTED, cut


def test_a_final_event_without_blank_line_is_still_read() -> None:
    assert list(iter_sse_data([b"data: last"])) == ["last"]


def test_a_cr_lf_split_by_an_empty_read_is_one_line_end() -> None:
    pieces = [b"data: a\r", b"", b"\ndata: b\r\n\r\n"]
    assert list(iter_sse_data(pieces)) == ["a\nb"]


def test_event_types_comments_and_a_bom_are_understood() -> None:
    stream = b"\xef\xbb\xbf: hi\r\nevent: error\rdata: x\r\rid: 1\ndata: y\n\n"
    assert list(iter_sse_events([stream])) == [("error", "x"), ("message", "y")]
