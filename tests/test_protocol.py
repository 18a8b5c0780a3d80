"""The helper's JSON-lines protocol, driven through a real ``--serve`` process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from typing import Any

from conftest import TEST_KEY
from loopback_server import LoopbackServer

from chat_ai_helper.protocol import EventWriter


def serve(*requests: dict[str, Any] | str) -> list[dict[str, Any]]:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in requests]
    result = subprocess.run(
        [sys.executable, "-m", "chat_ai_helper", "--serve"],
        input=("\n".join(lines) + "\n").encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]


def envelope(server: LoopbackServer, request_id: str, **body: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "base_url": server.base_url,
        "api_key": TEST_KEY,
        "body": {
            "model": "m",
            "messages": [{"role": "user", "content": "é🎉"}],
            **body,
        },
    }


def test_events_carry_the_request_id_and_end_with_done(server: LoopbackServer) -> None:
    events = serve(envelope(server, "a", stream=True), envelope(server, "b"))
    assert {e["id"] for e in events} == {"a", "b"}
    for request_id in ("a", "b"):
        mine = [e for e in events if e["id"] == request_id]
        assert [e["type"] for e in mine[:-1]] == ["delta"] * (len(mine) - 1)
        assert "".join(e["text"] for e in mine[:-1]) == "é🎉"
        assert mine[-1]["type"] == "done"
        assert mine[-1]["finish_reasons"] == ["stop"]


def test_done_carries_usage_and_model(server: LoopbackServer) -> None:
    done = serve(envelope(server, "u"))[-1]
    assert done["usage"]["total_tokens"] == 4
    assert done["model"] == "m"


def test_invalid_request_is_an_error_event_naming_the_field(
    server: LoopbackServer,
) -> None:
    (event,) = serve(envelope(server, "bad", temperature="hot"))
    assert event["type"] == "error"
    assert event["kind"] == "invalid"
    assert event["param"] == "temperature"
    assert event["id"] == "bad"
    assert server.received == []


def test_api_error_is_an_error_event_without_the_key(server: LoopbackServer) -> None:
    (event,) = serve(envelope(server, "e", model="error-401-invalid_api_key"))
    assert event["type"] == "error"
    assert event["kind"] == "api"
    assert event["error_type"] == "scenario_error"
    assert event["status"] == 401
    assert event["code"] == "invalid_api_key"
    assert TEST_KEY not in json.dumps(event)


def test_a_line_that_is_not_json_does_not_stop_the_helper(
    server: LoopbackServer,
) -> None:
    events = serve("{not json", envelope(server, "ok"))
    assert events[0]["type"] == "error" and events[0]["id"] is None
    assert events[-1] == {**events[-1], "id": "ok", "type": "done"}


def test_partial_stream_then_error_keeps_the_deltas(server: LoopbackServer) -> None:
    events = serve(envelope(server, "c", model="cut", stream=True))
    assert [e["type"] for e in events] == ["delta", "error"]
    assert events[0]["text"] == "é🎉"
    assert events[-1]["kind"] == "stream"


def test_writer_passes_each_delta_on_when_writes_are_far_apart() -> None:
    output = io.BytesIO()
    writer = EventWriter(output, interval=0)
    for text in ("a", "b"):
        writer.delta("r", 0, text)
        writer.flush()
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    assert [line["text"] for line in lines] == ["a", "b"]


def test_writer_merges_deltas_that_come_close_together() -> None:
    output = io.BytesIO()
    writer = EventWriter(output, interval=3600)
    writer.event({"id": "r", "type": "start"})
    for text in ("Server-", "Sent ", "Events"):
        writer.delta("r", 0, text)
        writer.flush()
    writer.delta("r", 1, "other choice")
    assert output.getvalue().count(b"\n") == 1
    writer.event({"id": "r", "type": "done"})
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    assert lines[1:] == [
        {"id": "r", "type": "delta", "choice": 0, "text": "Server-Sent Events"},
        {"id": "r", "type": "delta", "choice": 1, "text": "other choice"},
        {"id": "r", "type": "done"},
    ]


def wait_for_hang_ups(server: LoopbackServer, count: int) -> int:
    """Return the server's count of hung-up clients once it reaches COUNT."""
    deadline = time.monotonic() + 60
    while server.hung_up < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.hung_up


class Helper:
    """A running ``--serve`` helper, fed one line at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat_ai_helper", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout
        line = self.process.stdout.readline()
        assert line, "the helper ended its output"
        event: dict[str, Any] = json.loads(line)
        return event

    def finish(self) -> list[dict[str, Any]]:
        """Close the helper's input and return the events it still writes."""
        assert self.process.stdin and self.process.stdout
        self.process.stdin.close()
        rest = self.process.stdout.read()
        assert self.process.wait(timeout=30) == 0
        return [json.loads(line) for line in rest.decode().splitlines()]


def test_a_request_answers_while_another_still_streams(
    server: LoopbackServer,
) -> None:
    helper = Helper()
    helper.send(envelope(server, "slow-one", model="hang", stream=True))
    assert helper.read() == {
        "id": "slow-one",
        "type": "delta",
        "choice": 0,
        "text": "…",
    }
    helper.send(envelope(server, "quick", stream=True))
    events = [helper.read()]
    while events[-1]["type"] != "done":
        events.append(helper.read())
    assert {e["id"] for e in events} == {"quick"}
    assert "".join(e.get("text", "") for e in events) == "é🎉"
    helper.send({"type": "cancel", "id": "slow-one"})
    assert helper.finish() == []
    assert wait_for_hang_ups(server, 1) == 1


def test_cancelling_one_request_leaves_the_others_alone(
    server: LoopbackServer,
) -> None:
    helper = Helper()
    helper.send(envelope(server, "keep", model="hang", stream=True))
    helper.send(envelope(server, "drop", model="hang", stream=True))
    first = {helper.read()["id"], helper.read()["id"]}
    assert first == {"keep", "drop"}
    helper.send({"type": "cancel", "id": "drop"})
    helper.send({"type": "cancel", "id": "no-such-request"})
    helper.send(envelope(server, "after", stream=False))
    event = helper.read()
    assert (event["id"], event["type"]) == ("after", "delta")
    assert helper.read()["type"] == "done"
    assert wait_for_hang_ups(server, 1) == 1
    helper.send({"type": "cancel", "id": "keep"})
    assert helper.finish() == []
    assert wait_for_hang_ups(server, 2) == 2


def test_dry_run_answers_with_the_request_and_sends_nothing(
    server: LoopbackServer,
) -> None:
    request = envelope(server, "d", stream=True)
    events = serve({**request, "dry_run": True, "provider": "openai"})
    assert json.loads(events[0].pop("text")) == events[0]["request"]
    assert events == [
        {
            "id": "d",
            "type": "preview",
            "request": {
                "method": "POST",
                "url": f"{server.base_url}/chat/completions",
                "headers": {
                    "Content-Type": "application/json",
                    "Accept": "text/event-stream",
                    "Authorization": "Bearer ***",
                },
                "body": {
                    **request["body"],
                    "stream_options": {"include_usage": True},
                },
            },
        }
    ]
    assert server.received == []
