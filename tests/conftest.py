"""Shared fixtures: an isolated environment and the loopback chat server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from loopback_server import LoopbackServer

ISOLATED_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CHAT_AI_MODEL",
    "CHAT_AI_LOCAL_URL",
    "CHAT_AI_LOCAL_PORT",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
    "CHAT_AI_PROVIDERS_FILE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
TEST_KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's keys, endpoints, proxies and configuration out of every test."""
    for name in ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("CHAT_AI_LOG_TEXT", raising=False)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """Run the loopback chat server for one test."""
    httpd = LoopbackServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def run_cli(
    *args: str, input: bytes | str = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m chat_ai_helper`` with ARGS, as a user would from a shell."""
    data = input.encode("utf-8") if isinstance(input, str) else input
    return subprocess.run(
        [sys.executable, "-m", "chat_ai_helper", *args],
        input=data,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )
