"""A reasoning model's thinking, told apart from its answer by the helper."""

from __future__ import annotations

import pytest
from conftest import TEST_KEY, run_cli
from loopback_server import LoopbackServer
from test_protocol import serve

from chat_ai_helper.reasoning import ThinkSplitter, split_whole

PROMPT = "Why is the sky blue? é🎉"


def ask(server: LoopbackServer, model: str, stream: bool) -> dict[str, object]:
    return {
        "id": model,
        "base_url": server.base_url,
        "api_key": TEST_KEY,
        "body": {
            "model": model,
            "stream": stream,
            "messages": [{"role": "user", "content": PROMPT}],
        },
    }


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("model", ["reasoning_content", "reasoning", "think-tag"])
def test_thinking_comes_as_reasoning_events_apart_from_the_reply(
    server: LoopbackServer, model: str, stream: bool
) -> None:
    events = serve(ask(server, model, stream))
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "done"
    thinking = "".join(e["text"] for e in events if e["type"] == "reasoning")
    reply = "".join(e["text"] for e in events if e["type"] == "delta")
    assert thinking == f"Let me think: {PROMPT}"
    assert reply == PROMPT
    assert kinds.index("reasoning") < kinds.index("delta")
    assert all(e["choice"] == 0 for e in events if e["type"] == "reasoning")


def test_a_reply_without_thinking_has_no_reasoning_event(
    server: LoopbackServer,
) -> None:
    events = serve(ask(server, "m", True))
    assert "reasoning" not in {event["type"] for event in events}


def split_at(text: str, size: int) -> tuple[str, str]:
    splitter = ThinkSplitter()
    parts: list[tuple[bool, str]] = []
    for start in range(0, len(text), size):
        parts += splitter.feed(text[start : start + size])
    parts += splitter.finish()
    thinking = "".join(part for is_thinking, part in parts if is_thinking)
    answer = "".join(part for is_thinking, part in parts if not is_thinking)
    return thinking, answer


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 100])
def test_think_tags_are_found_wherever_the_stream_is_cut(size: int) -> None:
    assert split_at("\n<think>a < b </th</think>\n\nThe answer", size) == (
        "a < b </th",
        "The answer",
    )
    assert split_at("<thinking is fun>", size) == ("", "<thinking is fun>")
    assert split_at("Answer <think>not thinking</think>", size) == (
        "",
        "Answer <think>not thinking</think>",
    )
    assert split_at("<think>cut off before the end", size) == (
        "cut off before the end",
        "",
    )
    assert split_at("<thi", size) == ("", "<thi")


def test_a_whole_reply_is_split_the_same_way() -> None:
    assert split_whole("<think>hmm</think> yes") == ("hmm", "yes")
    assert split_whole("plain") == ("", "plain")


def test_the_cli_hides_thinking_unless_asked(server: LoopbackServer) -> None:
    args = ("--base-url", server.base_url, "-m", "think-tag", PROMPT)
    key = {"OPENAI_API_KEY": TEST_KEY}
    hidden = run_cli(*args, env=key)
    assert hidden.returncode == 0
    assert hidden.stdout.decode() == PROMPT + "\n"
    assert "think" not in hidden.stderr.decode()
    shown = run_cli("--reasoning", *args, env=key)
    assert shown.returncode == 0
    assert shown.stdout.decode() == PROMPT + "\n"
    assert f"Let me think: {PROMPT}" in shown.stderr.decode()


@pytest.mark.parametrize("stream", [[], ["--no-stream"]])
def test_the_cli_shows_the_thinking_of_every_choice(
    server: LoopbackServer, stream: list[str]
) -> None:
    shown = run_cli(
        "--reasoning", "--base-url", server.base_url, "-m", "reasoning_content",
        "-o", "n=2", *stream, "Why?",
        env={"OPENAI_API_KEY": TEST_KEY},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.decode() == "Why?\n\n[choice 2]\nWhy? #2\n"
    assert shown.stderr.decode() == (
        "Let me think: Why?\n[choice 2 thinking]\nLet me think: Why?\n"
    )
