"""The handshake: a ``--serve`` helper answers hello with who it is."""

from __future__ import annotations

import json
import subprocess
import sys

from loopback_server import LoopbackServer

from chat_ai_helper import __version__
from chat_ai_helper.protocol import PROTOCOL_VERSION


def test_hello_is_answered_with_the_versions_and_requests_go_on(
    server: LoopbackServer,
) -> None:
    request = {
        "id": "1",
        "base_url": server.base_url,
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    lines = [{"type": "hello", "id": "hello"}, request]
    result = subprocess.run(
        [sys.executable, "-m", "chat_ai_helper", "--serve"],
        input="".join(json.dumps(line) + "\n" for line in lines).encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    hello = events[0]
    assert (hello["id"], hello["type"]) == ("hello", "hello")
    assert (hello["version"], hello["protocol"]) == (__version__, PROTOCOL_VERSION)
    assert hello["python"] == sys.version.split()[0]
    assert [e["type"] for e in events[1:]] == ["delta", "done"]
    assert len(server.received) == 1
