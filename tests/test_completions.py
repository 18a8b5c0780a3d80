"""The legacy completions endpoint: the prompt in, ``choices[].text`` out."""

from __future__ import annotations

from typing import Any

from conftest import run_cli
from loopback_server import LoopbackServer
from test_attachments import serve


def completion(server: LoopbackServer, stream: bool, **fields: Any) -> dict[str, Any]:
    body = {"model": "m", "prompt": "Once upon a time", "stream": stream, **fields}
    return {
        "id": "c",
        "endpoint": "completions",
        "base_url": server.base_url,
        "body": body,
    }


def test_a_streamed_completion(server: LoopbackServer) -> None:
    events = serve(completion(server, True, suffix=" The end.", echo=False))
    text = "".join(e["text"] for e in events if e["type"] == "delta")
    assert text == "Once upon a time The end."
    assert events[-1]["type"] == "done"
    assert events[-1]["finish_reasons"] == ["stop"]
    text_tokens = len("Once upon a time The end.")
    assert events[-1]["usage"]["total_tokens"] == 2 * text_tokens
    received = server.received[0]
    assert received["path"] == "/v1/completions"
    assert received["body"] == {
        "model": "m",
        "prompt": "Once upon a time",
        "stream": True,
        "suffix": " The end.",
        "echo": False,
        "stream_options": {"include_usage": True},
    }


def test_a_completion_without_streaming(server: LoopbackServer) -> None:
    events = serve(completion(server, False, max_tokens=5, stop=["\n"]))
    assert [e["type"] for e in events] == ["delta", "done"]
    assert events[0]["text"] == "Once upon a time"
    assert server.received[0]["body"]["stop"] == ["\n"]


def test_completion_errors_and_fields_are_checked(server: LoopbackServer) -> None:
    requests = [
        completion(server, False, echo="yes"),
        {**completion(server, False), "body": {"model": "m", "stream": False}},
        {**completion(server, False), "endpoint": "edits"},
        completion(server, False, model="error-401-invalid_api_key"),
    ]
    events = serve(*({**r, "id": str(i)} for i, r in enumerate(requests)))
    messages = {e["message"] for e in events if e["type"] == "error"}
    assert 'echo must be true or false, not "yes"' in messages
    assert "prompt is required" in messages
    assert 'endpoint must be chat, completions or images, not "edits"' in messages
    assert any(m.startswith("HTTP 401 ") for m in messages)
    assert len(server.received) == 1


def test_cli_completions_endpoint(server: LoopbackServer) -> None:
    result = run_cli(
        "--base-url", server.base_url, "--endpoint", "completions", "def fib(n):"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "def fib(n):\n"
    assert server.received[0]["path"] == "/v1/completions"
    assert server.received[0]["body"]["prompt"] == "def fib(n):"
    result = run_cli(
        "--base-url", server.base_url, "-e", "completions", "--no-stream", "x = 1"
    )
    assert result.stdout.decode() == "x = 1\n"
    result = run_cli("-e", "completions", "-s", "terse", "hi")
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "chat-ai: --system is for chat, not --endpoint completions\n"
    )
