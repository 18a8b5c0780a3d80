"""Fault injection: every failure the server can throw, as the shell user sees it.

Each case checks the one line on stderr, the exit status, what the server
received (how many attempts), and that any text that arrived survives.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import TEST_KEY, run_cli
from loopback_server import LoopbackServer


def ask(
    server: LoopbackServer, model: str, *args: str
) -> subprocess.CompletedProcess[bytes]:
    return run_cli(
        "--base-url", server.base_url, "-m", model, *args, "abcdefghijkl",
        env={"OPENAI_API_KEY": TEST_KEY},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model", "line"),
    [
        (
            "error-400-unsupported_parameter",
            "HTTP 400 scenario_error unsupported_parameter: Scenario error 400; "
            "you sent Bearer ***.",
        ),
        (
            "error-401-invalid_api_key",
            "HTTP 401 scenario_error invalid_api_key: Scenario error 401; "
            "you sent Bearer ***. (check the API key)",
        ),
        (
            "error-403",
            "HTTP 403 scenario_error: Scenario error 403; you sent Bearer ***. "
            "(the key has no access to this model or endpoint)",
        ),
        (
            "error-404-model_not_found",
            "HTTP 404 scenario_error model_not_found: Scenario error 404; you sent "
            "Bearer ***. (check the model name, or for Azure the deployment name, "
            "and the base URL)",
        ),
        (
            "error-413",
            "HTTP 413 scenario_error: Scenario error 413; you sent Bearer ***. "
            "(shorten the prompt or lower max_tokens)",
        ),
        (
            "error-400-context_length_exceeded",
            "HTTP 400 scenario_error context_length_exceeded: Scenario error 400; you "
            "sent Bearer ***. (shorten the prompt or lower max_tokens)",
        ),
        (
            "error-429-insufficient_quota",
            "HTTP 429 scenario_error insufficient_quota: Scenario error 429; you sent "
            "Bearer ***. (out of quota: check the plan and billing of the account)",
        ),
    ],
)
def test_client_errors_are_one_line_and_not_retried(
    server: LoopbackServer, model: str, line: str
) -> None:
    result = ask(server, model)
    assert result.returncode == 1
    assert result.stderr.decode() == f"chat-ai: {line}\n"
    assert result.stdout == b""
    assert len(server.received) == 1


@pytest.mark.parametrize("status", ["429", "500", "502", "503"])
def test_rate_limits_and_server_errors_are_retried_then_reported(
    server: LoopbackServer, status: str
) -> None:
    result = ask(server, f"error-{status}")
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"chat-ai: HTTP {status} scenario_error")
    assert lines[0].endswith("retrying in 0.0 s (1 of 2)")
    assert lines[1].endswith("retrying in 0.0 s (2 of 2)")
    assert lines[2].startswith(f"chat-ai: HTTP {status} scenario_error")
    assert "retrying" not in lines[2]
    assert TEST_KEY not in result.stderr.decode()
    assert len(server.received) == 3


def test_a_retry_that_succeeds_answers_and_honours_retry_after(
    server: LoopbackServer,
) -> None:
    result = ask(server, "flaky-2-503")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "abcdefghijkl\n"
    assert result.stderr.decode().splitlines() == [
        "chat-ai: HTTP 503 scenario_error: Scenario error 503; you sent Bearer ***. "
        "(the server failed; try again later); retrying in 0.0 s (1 of 2)",
        "chat-ai: HTTP 503 scenario_error: Scenario error 503; you sent Bearer ***. "
        "(the server failed; try again later); retrying in 0.0 s (2 of 2)",
    ]
    assert len(server.received) == 3


def test_retries_can_be_turned_off(server: LoopbackServer) -> None:
    result = ask(server, "flaky-1-503", "--max-retries", "0")
    assert result.returncode == 1
    assert "retrying" not in result.stderr.decode()
    assert len(server.received) == 1


def test_nothing_is_retried_once_text_has_streamed(server: LoopbackServer) -> None:
    for model in ("cut", "stream-error"):
        result = ask(server, model)
        assert result.returncode == 1
        assert result.stdout.decode() == "abcdef\n"
        assert "retrying" not in result.stderr.decode()
    assert len(server.received) == 2


def test_refused_connection_is_retried_then_reported() -> None:
    result = run_cli("--base-url", "http://127.0.0.1:9/v1", "hi")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1
    assert len(lines) == 3
    assert "retrying in" in lines[0]
    assert lines[2] == (
        "chat-ai: connection to 127.0.0.1:9 refused; is the server running?"
    )


def test_retry_events_reach_emacs_with_the_wait(server: LoopbackServer) -> None:
    request = {
        "id": "r",
        "base_url": server.base_url,
        "body": {
            "model": "flaky-1-429",
            "messages": [{"role": "user", "content": "x"}],
        },
    }
    result = subprocess.run(
        [sys.executable, "-m", "chat_ai_helper", "--serve"],
        input=json.dumps(request).encode() + b"\n",
        capture_output=True,
        timeout=60,
        check=True,
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    # Refused with a 429, it waits for the pause in its server's line.
    types = [e["type"] for e in events]
    assert types == ["retry", "queued", "started", "delta", "done"]
    assert events[0]["wait"] == 0.02
    assert (events[0]["attempt"], events[0]["retries"]) == (1, 2)
    assert events[0]["message"].startswith("HTTP 429 scenario_error: Scenario error")


@pytest.mark.parametrize("model", ["sse-as-json", "sse-untyped", "azure-filter"])
def test_odd_streams_still_give_the_reply(server: LoopbackServer, model: str) -> None:
    result = ask(server, model)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "abcdefghijkl\n"
    assert result.stderr == b""


@pytest.mark.parametrize("model", ["length", "content_filter"])
@pytest.mark.parametrize("stream", [[], ["--no-stream"]])
def test_a_reply_cut_by_the_model_says_so(
    server: LoopbackServer, model: str, stream: list[str]
) -> None:
    result = ask(server, model, *stream)
    assert result.returncode == 0
    assert result.stdout.decode() == "abcdefghijkl\n"
    assert result.stderr.decode() == f"chat-ai: choice 1 stopped: {model}\n"


def test_read_timeout_keeps_the_text_and_is_not_retried(server: LoopbackServer) -> None:
    result = ask(server, "hang", "--timeout", "0.3")
    assert result.returncode == 1
    assert result.stdout.decode() == "…\n"
    assert result.stderr.decode() == (
        f"chat-ai: 127.0.0.1:{server.server_address[1]} stopped answering for 0.3 "
        "seconds; try again, or allow a longer timeout\n"
    )
    assert len(server.received) == 1


def test_requests_go_through_the_proxy_of_the_environment(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_PROXY")
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    result = run_cli(
        "--base-url", "http://api.example.test/v1", "hi",
        env={"HTTP_PROXY": proxy, "OPENAI_API_KEY": TEST_KEY},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "hi\n"
    received = server.received[0]
    assert received["headers"]["Host"] == "api.example.test"
    assert received["path"] == "/v1/chat/completions"


def test_local_model_not_running_says_how_to_start_it() -> None:
    result = run_cli(
        "-p", "local", "--max-retries", "0", "hi",
        env={"CHAT_AI_LOCAL_URL": "http://127.0.0.1:9/v1"},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "chat-ai: connection to 127.0.0.1:9 refused; "
        "start the local model with: chat-ai-local start\n"
    )
