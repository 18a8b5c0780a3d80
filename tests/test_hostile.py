"""Whatever a server sends, the helper ends each request with one readable line.

Every scenario of the hostile server (tests/hostile_server.py) is asked
from the shell, where it must end with its exit status and one line on
stderr, never a traceback; and from ``chat-ai --serve``, where it must end
with exactly one final event, after which a good request on the same
helper still succeeds.  Streams must show their text as it arrives,
whatever the framing of the body.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import IO, Any, cast

import pytest
import requests
from conftest import TEST_KEY, run_cli
from hostile_server import GOOD_TEXT, SCENARIOS, HostileServer
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback_server import LoopbackServer

from chat_ai_helper.client import Delta, Done, Event, _read_completion, _read_stream
from chat_ai_helper.errors import ChatAIError
from chat_ai_helper.protocol import encode_event
from chat_ai_helper.request import ChatRequest
from chat_ai_helper.sse import iter_sse_data

# What each scenario ends with: the reply's text, or a phrase of its error.
GOOD: dict[str, str] = {
    "good": GOOD_TEXT,
    "crlf": GOOD_TEXT,
    "cr": GOOD_TEXT,
    "bom": GOOD_TEXT,
    "keepalive": GOOD_TEXT,
    "no-content-type": GOOD_TEXT,
    "as-json": GOOD_TEXT,
    "gzip": GOOD_TEXT,
    "error-null": GOOD_TEXT,
    "odd-extras": GOOD_TEXT,
    "big-event": "x" * 1_000_000,
    "tool-calls": "",
    "whole-error-null": GOOD_TEXT,
    "whole-odd-extras": GOOD_TEXT,
    "whole-tool-calls": "",
    "whole-gzip": GOOD_TEXT,
    "whole-untyped": GOOD_TEXT,
}
BAD: dict[str, str] = {
    "content-42": "choices[0].delta.content is 42, not a string",
    "content-list": 'choices[0].delta.content is ["a", "b"], not a string',
    "choices-oops": 'choices[0] is "oops", not an object',
    "choices-object": 'choices is {"index": 0}, not a list',
    "delta-text": 'choices[0].delta is "text", not an object',
    "index-zero": 'choices[0].index is "zero", not 0',
    "index-big": "choices[0].index is 1000000000000, not 0",
    "index-negative": "choices[0].index is -1, not 0",
    "index-float": "choices[0].index is 0.5, not 0",
    "finish-42": "choices[0].finish_reason is 42, not a string",
    "chunk-array": "malformed chunk: [1, 2] is not an object",
    "chunk-string": 'malformed chunk: "hi" is not an object',
    "chunk-nan": "not JSON",
    "chunk-deep": "not JSON",
    "truncated": 'not JSON: {"choi',
    "no-done": "the stream ended before [DONE]",
    "bad-utf8": "bytes that are not UTF-8",
    "huge-event": "an event larger than 16 MB",
    "event-error": "overloaded_error: Overloaded, try later",
    "event-error-text": "upstream went away",
    "error-string": "the upstream model crashed",
    "bad-gzip": "could not be decompressed",
    "whole-bad-gzip": "could not be decompressed",
    "whole-short-length": "the connection closed mid-stream",
    "html": "not JSON: 502 Bad Gateway",
    "empty-body": "the server answered with an empty body",
    "short-length": "the connection closed mid-stream",
    "whole-choices-ints": "choices[0] is 1, not an object",
    "whole-message-string": 'choices[0].message is "hi", not an object',
    "whole-content-42": "choices[0].message.content is 42, not a string",
    "whole-index-zero": 'choices[0].index is "zero", not 0',
    "whole-index-big": "choices[0].index is 7, not 0",
    "whole-finish-list": 'choices[0].finish_reason is ["stop"], not a string',
    "whole-not-object": "it is [1], not an object",
    "whole-no-choices": "the reply has no choices",
    "whole-nan": "not JSON",
    "whole-deep": "not JSON",
    "whole-bad-utf8": "not JSON",
    "whole-error-string": "quota gone",
}
# Scenarios whose request goes out without streaming.
WHOLE = {name for name in SCENARIOS if name.startswith("whole-")}


def test_every_scenario_has_an_expected_end() -> None:
    assert set(GOOD) | set(BAD) | {"hold"} == set(SCENARIOS)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    """Run the hostile server for one test."""
    server = HostileServer().start()
    try:
        yield server
    finally:
        server.close()


def cli_args(server: HostileServer, name: str) -> list[str]:
    """Return the chat-ai arguments that ask scenario NAME of SERVER."""
    args = ["--base-url", server.base_url, "-m", name, "--max-retries", "0"]
    if name.split("@")[0] in WHOLE:
        args.append("--no-stream")
    return [*args, "Say hello"]


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_reply_ends_the_command_with_one_line(
    hostile: HostileServer, name: str
) -> None:
    result = run_cli(*cli_args(hostile, name))
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("chat-ai: ") and stderr.endswith("\n")
    assert BAD[name] in stderr
    assert stderr.count("\n") == 1, stderr


@pytest.mark.parametrize("name", sorted(GOOD))
def test_an_odd_but_proper_reply_is_read_from_the_command(
    hostile: HostileServer, name: str
) -> None:
    result = run_cli(*cli_args(hostile, name))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == (GOOD[name] + "\n" if GOOD[name] else "")


@pytest.mark.parametrize("name", ["tool-calls", "whole-tool-calls"])
def test_a_reply_that_only_calls_a_tool_says_so(
    hostile: HostileServer, name: str
) -> None:
    result = run_cli(*cli_args(hostile, name))
    assert result.returncode == 0
    assert result.stderr.decode() == (
        "chat-ai: choice 1: the model asked to call a tool; "
        "chat-ai does not run tools\n"
    )


class Helper:
    """A ``chat-ai --serve`` process, read by a thread so that no read can hang."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat_ai_helper", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lines: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self.events.put(json.loads(line))

    def send(self, message: Any) -> None:
        """Write MESSAGE as one request line."""
        self.send_line(json.dumps(message).encode())

    def send_line(self, line: bytes) -> None:
        """Write LINE, which should be a request, and a newline."""
        stdin: IO[bytes] | None = self.process.stdin
        assert stdin is not None
        stdin.write(line + b"\n")
        stdin.flush()

    def until_final(self, request_id: Any) -> tuple[str, dict[str, Any]]:
        """Return the text of REQUEST_ID's deltas and its final event.

        Fail if any other event comes for it after the final one, or if
        nothing ends it within a minute.
        """
        text = ""
        while True:
            event = self.events.get(timeout=60)
            if event.get("id") != request_id:
                continue
            if event["type"] == "delta":
                text += event["text"]
            elif event["type"] in ("done", "error", "preview"):
                return text, event

    def close(self) -> list[dict[str, Any]]:
        """Close the helper's input, wait for it, and return all its events."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.close()
        assert self.process.wait(timeout=60) == 0
        assert self.process.stderr is not None
        assert self.process.stderr.read() == b""
        return [json.loads(line) for line in self.lines]


def envelope(server: HostileServer, name: str, request_id: Any) -> dict[str, Any]:
    """Return the request for scenario NAME of SERVER, as Emacs sends it."""
    return {
        "id": request_id,
        "base_url": server.base_url,
        "max_retries": 0,
        "body": {
            "model": name,
            "messages": [{"role": "user", "content": "Say hello"}],
            "stream": name.split("@")[0] not in WHOLE,
        },
    }


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_the_helper_survives_every_scenario_in_every_framing(
    hostile: HostileServer, framing: str
) -> None:
    helper = Helper()
    for number, name in enumerate(sorted(SCENARIOS)):
        if name == "hold":
            continue
        bad_id, good_id = f"{name}-{number}", number
        helper.send(envelope(hostile, f"{name}@{framing}", bad_id))
        text, final = helper.until_final(bad_id)
        if name in BAD:
            assert final["type"] == "error", (name, final)
            assert BAD[name] in final["message"], (name, final)
        else:
            assert (final["type"], text) == ("done", GOOD[name]), (name, final)
        helper.send(envelope(hostile, f"good@{framing}", good_id))
        assert helper.until_final(good_id) == (
            GOOD_TEXT,
            {
                "id": good_id,
                "type": "done",
                "finish_reasons": ["stop"],
                "usage": None,
                "model": None,
                "cost": None,
            },
        ), name
    finals: dict[Any, int] = {}
    for event in helper.close():
        if event["type"] in ("done", "error"):
            finals[event["id"]] = finals.get(event["id"], 0) + 1
    assert set(finals.values()) == {1}


def test_bad_and_good_requests_at_once_each_end_as_their_own(
    hostile: HostileServer,
) -> None:
    helper = Helper()
    names = [name for name in sorted(SCENARIOS) if name not in ("hold", "huge-event")]
    for name in names:
        helper.send(envelope(hostile, name, f"bad {name}"))
        helper.send(envelope(hostile, "good", f"good {name}"))
    texts: dict[str, str] = {}
    finals: dict[str, dict[str, Any]] = {}
    while len(finals) < 2 * len(names):
        event = helper.events.get(timeout=60)
        request_id = event["id"]
        assert request_id not in finals, f"an event after the end of {request_id}"
        if event["type"] == "delta":
            texts[request_id] = texts.get(request_id, "") + event["text"]
        elif event["type"] in ("queued", "started", "tool_call"):
            # So many requests to one server at once wait their turns.
            continue
        else:
            finals[request_id] = event
    for name in names:
        assert (finals[f"good {name}"]["type"], texts[f"good {name}"]) == (
            "done",
            GOOD_TEXT,
        )
        final = finals[f"bad {name}"]
        if name in BAD:
            assert final["type"] == "error" and BAD[name] in final["message"], name
        else:
            assert final["type"] == "done", name
            assert texts.get(f"bad {name}", "") == GOOD[name], name
    helper.close()


def test_a_tool_call_ends_with_the_servers_finish_reason(
    hostile: HostileServer,
) -> None:
    helper = Helper()
    for request_id, name in enumerate(["tool-calls", "whole-tool-calls"]):
        helper.send(envelope(hostile, name, request_id))
        text, final = helper.until_final(request_id)
        assert (text, final["type"], final["finish_reasons"]) == (
            "",
            "done",
            ["tool_calls"],
        )
    helper.close()


@pytest.mark.parametrize(
    "line",
    [
        b'{"id": [1], "body": {}}',
        b'{"id": {"a": 1}, "type": "cancel"}',
        b"[1, 2]",
        b'"just a string"',
        b"\xff\xfe not UTF-8",
        b'{"id": 7, "timeout": 1e19, "body": {"model": "m", "messages": []}}',
        b'{"id": 8, "timeout": 1e400, "body": {}}',
        b'{"id": 9, "body": {"model": "a\\nb", "messages": '
        b'[{"role": "user", "content": "x"}]}}',
        b'{"id": 10, "body": {"model": "m", "messages": '
        b'[{"role": "user", "content": "x"}], "n": 2, "stop": 5}}',
    ],
)
def test_a_bad_request_line_never_stops_the_helper(
    hostile: HostileServer, line: bytes
) -> None:
    helper = Helper()
    helper.send_line(line)
    helper.send(envelope(hostile, "good", "after"))
    assert helper.until_final("after")[0] == GOOD_TEXT
    events = helper.close()
    cancels = line.count(b'"cancel"')
    assert [event["type"] for event in events if event["id"] != "after"] == (
        [] if cancels else ["error"]
    )


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_the_command_streams_text_as_it_arrives(
    hostile: HostileServer, framing: str
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "chat_ai_helper", *cli_args(hostile, f"hold@{framing}")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    first = GOOD_TEXT[:7].encode()
    seen = _read_until(process.stdout, first)
    # The server still holds the rest of the reply: the text came as it arrived.
    assert hostile.holding.is_set()
    assert seen == first
    hostile.release.set()
    out, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (0, b"")
    assert (seen + out).decode() == GOOD_TEXT + "\n"


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_the_helper_streams_text_as_it_arrives(
    hostile: HostileServer, framing: str
) -> None:
    helper = Helper()
    helper.send(envelope(hostile, f"hold@{framing}", 1))
    event = helper.events.get(timeout=30)
    assert hostile.holding.is_set()
    assert (event["type"], event["text"]) == ("delta", GOOD_TEXT[:7])
    hostile.release.set()
    text, final = helper.until_final(1)
    assert (GOOD_TEXT[:7] + text, final["type"]) == (GOOD_TEXT, "done")
    helper.close()


def _read_until(stream: IO[bytes], wanted: bytes) -> bytes:
    """Read STREAM until it has given WANTED (or fail after 30 seconds)."""
    got = queue.Queue[bytes]()

    def read() -> None:
        data = b""
        while len(data) < len(wanted):
            more = os.read(stream.fileno(), len(wanted) - len(data))
            if not more:
                break
            data += more
        got.put(data)

    threading.Thread(target=read, daemon=True).start()
    return got.get(timeout=30)


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--timeout", "nan"], "timeout must be a number of seconds above 0"),
        (["--timeout", "inf"], "not Infinity"),
        (["--timeout", "1e19"], "at most 86400, not 1e+19"),
        (["--timeout", "0"], "not 0.0"),
        (["--max-retries", "99"], "max_retries must be a whole number from 0 to 10"),
        (["-m", "gpt\nInjected: header"], "model must be one line of printable text"),
        (
            ["-o", "temperature=hot"],
            'temperature must be a number from 0 to 2, not "hot"',
        ),
        (["-o", 'stop=["a","b","c","d","e"]'], 'not ["a", "b", "c", "d", "e"]'),
        (["-o", "n=true"], "n must be a whole number from 1 to 128, not true"),
        (
            ["-o", "reasoning_effort=extreme"],
            "reasoning_effort must be one of none, minimal, low, medium, high, "
            'xhigh, max, not "extreme"',
        ),
        (["-o", "stream=null"], None),
    ],
)
def test_bad_values_get_one_line_in_the_users_terms(
    hostile: HostileServer, args: list[str], phrase: str | None
) -> None:
    result = run_cli("--base-url", hostile.base_url, *args, "Say hello")
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    if phrase is None:
        assert result.returncode == 0, stderr
        return
    assert result.returncode == 2, stderr
    assert phrase in stderr and stderr.count("\n") == 1, stderr
    assert "'" not in stderr.partition(" not ")[2], stderr
    assert hostile.received == []


def test_a_tls_failure_is_one_line_and_not_retried(server: LoopbackServer) -> None:
    https = server.base_url.replace("http://", "https://")
    result = run_cli("--base-url", https, "--max-retries", "2", "Say hello")
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert stderr.count("\n") == 1 and "retrying" not in stderr, stderr
    assert "share no TLS version" in stderr and "http:// address" in stderr


def test_a_proxy_failure_is_one_line_and_not_retried() -> None:
    with socket_closed_port() as port:
        result = run_cli(
            "--base-url",
            "http://api.example.com/v1",
            "--max-retries",
            "2",
            "Say hello",
            env={"HTTP_PROXY": f"http://127.0.0.1:{port}", "OPENAI_API_KEY": TEST_KEY},
        )
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert stderr.count("\n") == 1 and "retrying" not in stderr, stderr
    assert stderr.startswith("chat-ai: the proxy on the way to api.example.com failed")
    assert TEST_KEY not in stderr


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """Yield a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        yield unused.getsockname()[1]


# Property-based: any JSON value at any level of a chunk or of a whole reply.

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
CHUNK_PATHS: list[tuple[Any, ...]] = [
    (),
    ("choices",),
    ("choices", 0),
    ("choices", 0, "index"),
    ("choices", 0, "delta"),
    ("choices", 0, "delta", "content"),
    ("choices", 0, "delta", "refusal"),
    ("choices", 0, "finish_reason"),
    ("usage",),
    ("model",),
    ("error",),
]
REPLY_PATHS: list[tuple[Any, ...]] = [
    (),
    ("choices",),
    ("choices", 0),
    ("choices", 0, "index"),
    ("choices", 0, "message"),
    ("choices", 0, "message", "content"),
    ("choices", 0, "finish_reason"),
    ("usage",),
    ("error",),
]


def _planted(base: Any, path: tuple[Any, ...], value: Any) -> Any:
    """Return BASE with VALUE put at PATH."""
    if not path:
        return value
    copy = json.loads(json.dumps(base))
    holder = copy
    for step in path[:-1]:
        holder = holder[step]
    holder[path[-1]] = value
    return copy


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Return DATA cut at the positions CUTS (taken modulo its length)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def _outcome(events: Callable[[], Iterator[Event]], n: int) -> str:
    """Return how EVENTS end; fail unless it is a `Done` or a `ChatAIError`."""
    try:
        seen = list(events())
    except ChatAIError as error:
        assert str(error) and "\n" not in str(error)
        return "error"
    assert isinstance(seen[-1], Done)
    for event in seen[:-1]:
        assert isinstance(event, Delta)
        assert isinstance(event.text, str) and event.choice in range(n)
        encode_event(
            {"id": 1, "type": "delta", "choice": event.choice, "text": event.text}
        )
    done = seen[-1]
    assert all(
        reason is None or isinstance(reason, str) for reason in done.finish_reasons
    )
    encode_event({"id": 1, "type": "done", **vars(done)})
    return "done"


def _request(n: int) -> ChatRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": n}
    return ChatRequest(body=body)


@settings(max_examples=100, deadline=None)
@given(
    path=st.sampled_from(CHUNK_PATHS),
    value=JSON,
    cuts=st.lists(st.integers(min_value=0), max_size=6),
    n=st.integers(min_value=1, max_value=3),
)
def test_any_value_anywhere_in_a_chunk_ends_in_done_or_one_error(
    path: tuple[Any, ...], value: Any, cuts: list[int], n: int
) -> None:
    base = {
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]
    }
    chunk = _planted(base, path, value)
    stream = f"data: {json.dumps(chunk)}\r\n\r\n: ping\n\ndata: [DONE]\n\n".encode()
    pieces = _split(stream, cuts)
    _outcome(lambda: _read_stream(iter(pieces), _request(n)), n)


@settings(max_examples=100, deadline=None)
@given(path=st.sampled_from(REPLY_PATHS), value=JSON)
def test_any_value_anywhere_in_a_whole_reply_ends_in_done_or_one_error(
    path: tuple[Any, ...], value: Any
) -> None:
    base = {
        "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}]
    }
    content = json.dumps(_planted(base, path, value)).encode()
    response = cast(requests.Response, SimpleNamespace(headers={}, status_code=200))
    _outcome(lambda: _read_completion(response, content, _request(1)), 1)


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4),
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_events_are_read_whatever_the_line_ends_and_the_cuts(
    texts: list[str], ending: bytes, cuts: list[int]
) -> None:
    stream = b"".join(
        b"data: " + json.dumps(text).encode() + ending + b":c" + ending + ending
        for text in texts
    )
    assert [json.loads(data) for data in iter_sse_data(_split(stream, cuts))] == texts
