"""The HTTP client against the real loopback server: replies, streams, errors."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from conftest import TEST_KEY
from loopback_server import LoopbackServer

from chat_ai_helper.client import Cancel, Client, Delta, Done, Event
from chat_ai_helper.errors import APIError, Cancelled, NetworkError, StreamError
from chat_ai_helper.request import ChatRequest

HARD_TEXT = (
    'Server-Sent Eventについて教えて 🎉\n\n"quoted" \\back\\slash\ttab\x01\x1f\n'
    '{"looks": "like JSON"}\n* An Org heading\n#+end_src\n'
)


def ask(
    server: LoopbackServer, text: str = "hello", model: str = "m", **body: Any
) -> list[Event]:
    request = ChatRequest(
        body={"model": model, "messages": [{"role": "user", "content": text}], **body},
        base_url=server.base_url,
        api_key=TEST_KEY,
        timeout=10,
    )
    return list(Client().complete(request))


def text_of(events: list[Event], choice: int = 0) -> str:
    return "".join(
        e.text for e in events if isinstance(e, Delta) and e.choice == choice
    )


@pytest.mark.parametrize("stream", [False, True])
def test_hard_text_round_trips_exactly(server: LoopbackServer, stream: bool) -> None:
    events = ask(server, HARD_TEXT, stream=stream)
    assert text_of(events) == HARD_TEXT
    assert server.received[0]["body"]["messages"][0]["content"] == HARD_TEXT
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reasons == ["stop"]


def test_streamed_reply_arrives_in_many_deltas(server: LoopbackServer) -> None:
    events = ask(server, "日本語のテキストを少しずつ", stream=True)
    deltas = [e for e in events if isinstance(e, Delta)]
    assert len(deltas) > 3
    assert server.received[0]["headers"]["Accept"] == "text/event-stream"


def test_request_carries_key_and_json(server: LoopbackServer) -> None:
    ask(server, temperature=0.2, n=2, stop=["###"])
    received = server.received[0]
    assert received["path"] == "/v1/chat/completions"
    assert received["headers"]["Authorization"] == f"Bearer {TEST_KEY}"
    assert received["headers"]["Content-Type"] == "application/json"
    assert received["body"]["temperature"] == 0.2
    assert received["body"]["n"] == 2
    assert received["body"]["stop"] == ["###"]


@pytest.mark.parametrize("stream", [False, True])
def test_several_choices_are_kept_apart(server: LoopbackServer, stream: bool) -> None:
    events = ask(server, "hi", n=2, stream=stream)
    assert text_of(events, 0) == "hi"
    assert text_of(events, 1) == "hi #2"
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reasons == ["stop", "stop"]


def test_usage_is_reported(server: LoopbackServer) -> None:
    done = ask(server, "hello")[-1]
    assert isinstance(done, Done)
    assert done.usage == {
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "total_tokens": 10,
    }
    streamed = ask(server, "hello", stream=True, stream_options={"include_usage": True})
    assert isinstance(streamed[-1], Done) and streamed[-1].usage is not None


def test_api_error_names_status_type_code_and_hides_the_key(
    server: LoopbackServer,
) -> None:
    with pytest.raises(APIError) as caught:
        ask(server, model="error-429-insufficient_quota")
    message = str(caught.value)
    assert message.startswith("HTTP 429 scenario_error insufficient_quota: Scenario")
    assert TEST_KEY not in message
    assert TEST_KEY[:12] not in message
    assert "\n" not in message


@pytest.mark.parametrize("stream", [False, True])
def test_html_instead_of_json_is_explained(
    server: LoopbackServer, stream: bool
) -> None:
    with pytest.raises(APIError, match=r"text/html, not JSON: 502 Bad Gateway"):
        ask(server, model="html", stream=stream)


def test_stream_cut_off_keeps_the_text_then_fails(server: LoopbackServer) -> None:
    events: list[Event] = []
    with pytest.raises(StreamError, match="incomplete"):
        events.extend(_stream(server, "cut", "abcdefghijkl"))
    assert text_of(events) == "abcdef"


def test_stream_without_done_is_incomplete(server: LoopbackServer) -> None:
    events: list[Event] = []
    with pytest.raises(StreamError, match=r"before \[DONE\]"):
        events.extend(_stream(server, "no-done", "abc"))
    assert text_of(events) == "abc"


def test_error_inside_the_stream(server: LoopbackServer) -> None:
    with pytest.raises(APIError, match="server_error: Scenario error in the stream"):
        list(_stream(server, "stream-error", "abcdefgh"))


def test_connection_refused_is_one_clear_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    request = ChatRequest(
        body={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        base_url=f"http://127.0.0.1:{port}/v1",
    )
    with pytest.raises(NetworkError, match=f"connection to 127.0.0.1:{port} refused"):
        list(Client().complete(request))


def test_read_timeout_is_one_clear_line() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        request = ChatRequest(
            body={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            base_url=f"http://127.0.0.1:{port}/v1",
            timeout=0.3,
        )
        with pytest.raises(NetworkError, match=r"stopped answering for 0\.3 seconds"):
            list(Client().complete(request))


def _stream(server: LoopbackServer, model: str, text: str) -> Any:
    request = ChatRequest(
        body={
            "model": model,
            "messages": [{"role": "user", "content": text}],
            "stream": True,
        },
        base_url=server.base_url,
        timeout=10,
    )
    return Client().complete(request)


def test_one_connection_serves_request_after_request(server: LoopbackServer) -> None:
    client = Client()
    for stream in (True, False, True, True, False):
        request = ChatRequest(
            body={
                "model": "m",
                "stream": stream,
                "messages": [{"role": "user", "content": "again"}],
            },
            base_url=server.base_url,
            timeout=10,
        )
        assert text_of(list(client.complete(request))) == "again"
    client.close()
    assert server.connections == 1


def test_a_request_cancelled_before_it_is_sent_never_reaches_the_server(
    server: LoopbackServer,
) -> None:
    cancel = Cancel()
    cancel()
    request = ChatRequest(
        body={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        base_url=server.base_url,
        api_key=TEST_KEY,
        timeout=10,
    )
    with pytest.raises(Cancelled):
        list(Client().complete(request, cancel=cancel))
    assert server.received == []
