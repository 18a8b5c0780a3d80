"""Tool calls: the helper puts them together from the reply and sends one event each."""

from __future__ import annotations

import json
from typing import Any

import pytest
from loopback_server import LoopbackServer
from test_protocol import envelope, serve

from chat_ai_helper.client import ToolCallPieces
from chat_ai_helper.errors import StreamError

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"The {name} tool.",
            "parameters": {
                "type": "object",
                "properties": {"item": {"type": "string"}},
                "required": ["item"],
            },
        },
    }
    for name in ("lookup-price", "stock_count")
]
ARGUMENTS = '{"item": "apple \\u00e9"}'


def tool_request(
    server: LoopbackServer, model: str, stream: bool, messages: list[Any] | None = None
) -> dict[str, Any]:
    request = envelope(server, "t", model=model, stream=stream, tools=TOOLS)
    if messages is not None:
        request["body"]["messages"] = messages
    else:
        request["body"]["messages"] = [{"role": "user", "content": ARGUMENTS}]
    return request


@pytest.mark.parametrize("stream", [True, False])
def test_one_call_comes_whole_in_one_event(
    server: LoopbackServer, stream: bool
) -> None:
    events = serve(tool_request(server, "tool-call", stream))
    # A whole reply's choice comes as one delta, empty here.
    events = [e for e in events if e.get("text") != ""]
    assert [e["type"] for e in events] == ["tool_call", "done"]
    call = events[0]
    assert call == {
        "id": "t",
        "type": "tool_call",
        "choice": 0,
        "call_id": "call_0_0",
        "name": "lookup-price",
        "arguments": ARGUMENTS,
    }
    assert json.loads(call["arguments"]) == {"item": "apple é"}
    assert events[-1]["finish_reasons"] == ["tool_calls"]


@pytest.mark.parametrize("stream", [True, False])
def test_two_calls_in_one_turn_are_two_events_in_order(
    server: LoopbackServer, stream: bool
) -> None:
    events = serve(tool_request(server, "tool-two", stream))
    calls = [e for e in events if e["type"] == "tool_call"]
    assert [(c["call_id"], c["name"]) for c in calls] == [
        ("call_0_0", "lookup-price"),
        ("call_0_1", "stock_count"),
    ]
    assert all(c["arguments"] == ARGUMENTS for c in calls)
    assert events[-1]["type"] == "done"


def test_the_tool_messages_go_to_the_server_and_the_answer_comes_back(
    server: LoopbackServer,
) -> None:
    messages = [
        {"role": "user", "content": ARGUMENTS},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0_0",
                    "type": "function",
                    "function": {"name": "lookup-price", "arguments": ARGUMENTS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0_0", "content": "1.25"},
    ]
    events = serve(tool_request(server, "tool-call", True, messages))
    assert "".join(e["text"] for e in events if e["type"] == "delta") == (
        "Tool results: 1.25"
    )
    assert server.received[-1]["body"]["messages"] == messages


def test_pieces_of_calls_are_joined_by_index_and_checked() -> None:
    def malformed(problem: str) -> StreamError:
        return StreamError(problem)

    pieces = ToolCallPieces()
    where = "choices[0].delta.tool_calls"
    pieces.add(
        {"index": 1, "id": "b", "function": {"name": "two"}}, 0, 0, where, malformed
    )
    pieces.add(
        {"index": 0, "id": "a", "function": {"name": "one"}}, 0, 0, where, malformed
    )
    for piece in ('{"x"', ": 1", "}"):
        pieces.add(
            {"index": 0, "function": {"arguments": piece}}, 0, 0, where, malformed
        )
    assert [(c.call_id, c.name, c.arguments) for c in pieces.calls(malformed)] == [
        ("a", "one", '{"x": 1}'),
        ("b", "two", "{}"),
    ]
    with pytest.raises(StreamError, match=r"tool_calls\[0\]\.function is 7"):
        pieces.add({"index": 0, "function": 7}, 0, 0, where, malformed)
    nameless = ToolCallPieces()
    nameless.add({"index": 0, "function": {"arguments": "{}"}}, 0, 0, where, malformed)
    with pytest.raises(StreamError, match="has no name"):
        list(nameless.calls(malformed))
