"""Telling a reasoning model's thinking from its answer.

Servers send the thinking apart, as ``reasoning_content`` (DeepSeek,
llama.cpp) or ``reasoning`` (some routers); some local models write it
into the content itself, as a leading ``<think>…</think>``.  `ThinkSplitter`
takes the content as it streams, cut anywhere, and says which part is
which.
"""

from __future__ import annotations

from typing import Any

OPEN = "<think>"
CLOSE = "</think>"
FIELDS = ("reasoning_content", "reasoning")
"""The message or delta fields that servers put thinking in, most common first."""


def reasoning_text(holder: dict[str, Any]) -> str:
    """Return the thinking that HOLDER, a message or delta, carries apart, or ""."""
    for name in FIELDS:
        value = holder.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


class ThinkSplitter:
    """Split one choice's content into thinking and answer, as it arrives.

    Content that starts (after white space) with ``<think>`` is thinking
    up to ``</think>``; the white space after it is dropped, and the rest
    is the answer.  Content that starts otherwise is all answer.
    """

    def __init__(self) -> None:
        self.state = "start"
        self.held = ""

    def feed(self, text: str) -> list[tuple[bool, str]]:
        """Return the parts of TEXT that can be told now, as (is thinking, text)."""
        self.held += text
        parts: list[tuple[bool, str]] = []
        while self.held:
            if self.state == "start":
                start = self.held.lstrip()
                if not start or (OPEN.startswith(start) and start != OPEN):
                    break
                if start.startswith(OPEN):
                    self.state = "thinking"
                    self.held = start[len(OPEN) :]
                else:
                    self.state = "answer"
            elif self.state == "thinking":
                end = self.held.find(CLOSE)
                if end >= 0:
                    parts.append((True, self.held[:end]))
                    self.held = self.held[end + len(CLOSE) :]
                    self.state = "after"
                    continue
                keep = _partial_suffix(self.held, CLOSE)
                parts.append((True, self.held[: len(self.held) - keep]))
                self.held = self.held[len(self.held) - keep :]
                break
            elif self.state == "after":
                self.held = self.held.lstrip()
                if self.held:
                    self.state = "answer"
            else:
                parts.append((False, self.held))
                self.held = ""
        return [(thinking, part) for thinking, part in parts if part]

    def finish(self) -> list[tuple[bool, str]]:
        """Return what is still held back, once the content has ended."""
        held, self.held = self.held, ""
        if not held or self.state == "after":
            return []
        return [(self.state == "thinking", held)]


def _partial_suffix(text: str, marker: str) -> int:
    """Return the length of the longest end of TEXT that begins MARKER."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def split_whole(text: str) -> tuple[str, str]:
    """Return the thinking and the answer of TEXT, a whole reply's content."""
    splitter = ThinkSplitter()
    parts = splitter.feed(text) + splitter.finish()
    thinking = "".join(part for is_thinking, part in parts if is_thinking)
    answer = "".join(part for is_thinking, part in parts if not is_thinking)
    return thinking, answer
