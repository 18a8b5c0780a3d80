"""docs/protocol.org, the helper and ob-chat-ai-process.el describe one protocol."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from loopback_server import LoopbackServer

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "protocol.org").read_text(encoding="utf-8")
EVENTS_SECTION = DOC[DOC.index("* Events") : DOC.index("* Many requests")]
ELISP = (ROOT / "ob-chat-ai-process.el").read_text(encoding="utf-8")


def elisp_function(name: str) -> str:
    """Return the text of the Elisp function NAME in ob-chat-ai-process.el."""
    text = ELISP[ELISP.index(f"(defun {name} ") :]
    return text[: text.index("\n(defun ")]


# Events reach requests through the dispatch; the hello, through the handshake.
DISPATCH = elisp_function("ob-chat-ai--dispatch") + elisp_function(
    "ob-chat-ai--handshake"
)


def emitted_types() -> set[str]:
    """Return the event types that the helper's source writes.

    request.py and attachments.py are left out: a ``type`` there is a
    field of the request body or a content part's; so are messages quoted
    in docstrings (````{"type": …}````).
    """
    found: set[str] = set()
    for path in (ROOT / "chat_ai_helper").glob("*.py"):
        if path.name not in ("request.py", "attachments.py"):
            text = path.read_text(encoding="utf-8")
            found |= set(re.findall(r'(?<!``\{)"type": "(\w+)"', text))
    return found


def documented_types() -> set[str]:
    """Return the event types that the Events section describes, one bullet each."""
    return set(re.findall(r"^- =(\w+)=:", EVENTS_SECTION, re.MULTILINE))


def test_every_event_type_the_helper_emits_is_documented_and_handled() -> None:
    emitted = emitted_types()
    assert {"retry", "preview", "delta", "done", "error", "providers"} <= emitted
    assert emitted == documented_types()
    for event_type in emitted:
        assert f'"{event_type}"' in DISPATCH, event_type


def test_every_field_of_every_event_is_documented(server: LoopbackServer) -> None:
    def ask(
        request_id: str,
        model: str,
        stream: bool = False,
        content: str = "hi",
        **fields: Any,
    ) -> dict[str, Any]:
        body = {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": content}],
        }
        return {"id": request_id, "base_url": server.base_url, "body": body, **fields}

    requests = [
        ask("reply", "m"),
        ask("stream", "m", stream=True),
        ask("thinking", "reasoning_content", stream=True),
        ask("retried", "flaky-1-503"),
        ask("refused", "error-401-invalid_api_key"),
        ask("invalid", "m", timeout=-1),
        ask("preview", "m", dry_run=True),
        {
            **ask("tool", "tool-call", stream=True),
            "body": {
                "model": "tool-call",
                "stream": True,
                "messages": [{"role": "user", "content": "{}"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
        },
        # The second waits for the first, which takes a second or more.
        ask("first", "slow", stream=True, max_concurrent=1, content="x" * 60),
        ask("second", "m", max_concurrent=1),
        {"type": "providers", "id": "providers"},
        {"type": "hello", "id": "hello"},
        {"type": "usage", "id": "usage"},
    ]
    result = subprocess.run(
        [sys.executable, "-m", "chat_ai_helper", "--serve"],
        input="".join(json.dumps(r) + "\n" for r in requests).encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    seen = {event["type"] for event in events}
    assert seen == emitted_types()
    for event in events:
        for name in event:
            assert f"={name}=" in EVENTS_SECTION or f'"{name}"' in EVENTS_SECTION, (
                event["type"],
                name,
            )
