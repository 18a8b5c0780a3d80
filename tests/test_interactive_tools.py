"""A block's tool calls in a real interactive Emacs: the user answers the prompt.

``emacs -nw`` under tmux runs a chat-ai block whose model (the loopback
server's ``tool-call``) calls a block of the document; Emacs asks before
running it, and the answer typed decides what the model is told.
"""

from __future__ import annotations

from pathlib import Path

from loopback_server import LoopbackServer
from test_interactive import open_in_emacs, pytestmark

__all__ = ["pytestmark"]


def test_the_user_answers_the_tool_prompt(
    server: LoopbackServer, tmp_path: Path
) -> None:
    notes = tmp_path / "tools.org"
    notes.write_text(
        f"#+begin_src chat-ai :model tool-call :tools lookup-price "
        f":base-url {server.base_url}\n"
        '{"item": "plum"}\n#+end_src\n\n'
        "Look up the price of an item.\n"
        "#+name: lookup-price\n"
        '#+begin_src emacs-lisp :var item="pear"\n'
        '(format "%s costs 3" item)\n#+end_src\n',
        encoding="utf-8",
    )
    terminal = open_in_emacs(notes)
    try:
        terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")
        terminal.keys("C-c", "C-c")
        terminal.wait_for(
            lambda s: 'run tool lookup-price {"item": "plum"}?' in s,
            "the question before the tool runs",
        )
        terminal.keys("n")
        terminal.wait_for(
            lambda s: ": Tool results: The user declined to run this tool." in s,
            "the model told that the user declined",
        )
        assert len(server.received) == 2

        terminal.keys("C-c", "C-c")
        terminal.wait_for(
            lambda s: 'run tool lookup-price {"item": "plum"}?' in s,
            "the question again",
        )
        terminal.keys("a")
        terminal.wait_for(
            lambda s: ": Tool results: plum costs 3" in s, "the value of the block"
        )
        # Always for this block: the third run asks nothing.
        terminal.keys("C-c", "C-c")
        terminal.wait_for(lambda s: len(server.received) == 6, "the third exchange")
        terminal.keys("C-x", "C-s")
        terminal.wait_for(lambda s: "Wrote " in s, "the file saved")
        saved = notes.read_text(encoding="utf-8")
        assert saved.count("#+RESULTS:") == 1
        assert ": Tool results: plum costs 3\n" in saved
        assert "declined" not in saved
        assert server.received[-1]["body"]["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_0_0",
            "content": "plum costs 3",
        }
    finally:
        terminal.close()


def test_ctrl_g_stops_the_tool_question_and_a_tool_that_never_ends(
    server: LoopbackServer, tmp_path: Path
) -> None:
    notes = tmp_path / "tools.org"
    tool = (
        "Loop forever.\n#+name: spin\n"
        '#+begin_src emacs-lisp :var item="pear"\n(while t)\n#+end_src\n'
    )
    notes.write_text(
        f"#+begin_src chat-ai :model tool-call :tools spin "
        f":base-url {server.base_url}\n"
        '{"item": "plum"}\n#+end_src\n\n' + tool,
        encoding="utf-8",
    )
    terminal = open_in_emacs(notes)
    cancelled = ": [chat-ai: cancelled; the reply is incomplete]"
    try:
        terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")
        terminal.keys("C-c", "C-c")
        terminal.wait_for(
            lambda s: 'run tool spin {"item": "plum"}?' in s, "the question"
        )
        terminal.keys("C-g")
        terminal.wait_for(lambda s: cancelled in s, "the question quit")

        terminal.keys("C-c", "C-c")
        terminal.wait_for(
            lambda s: 'run tool spin {"item": "plum"}?' in s, "the question again"
        )
        terminal.keys("y")
        terminal.wait_for(
            lambda s: "chat-ai: running tool spin..." in s, "the tool running"
        )
        terminal.keys("C-g")
        screen = terminal.wait_for(
            lambda s: cancelled in s and "running tool" not in s,
            "the endless tool block stopped",
        )
        assert screen.count(cancelled) == 1
        terminal.keys("M->")
        terminal.keys("typed after", literal=True)
        terminal.keys("C-x", "C-s")
        terminal.wait_for(lambda s: "Wrote " in s, "the file saved")
        saved = notes.read_text(encoding="utf-8")
        assert saved.endswith(tool + "typed after\n") or saved.endswith(
            tool + "typed after"
        )
        assert "plum" not in saved.split("#+end_src", 1)[1]
        assert len(server.received) == 2
    finally:
        terminal.close()


def test_two_blocks_ask_their_tool_questions_one_after_the_other(
    server: LoopbackServer, tmp_path: Path
) -> None:
    notes = tmp_path / "tools.org"
    blocks = "".join(
        f"#+begin_src chat-ai :model tool-call :tools lookup-price "
        f":base-url {server.base_url}\n"
        f'{{"item": "{item}"}}\n#+end_src\n\n'
        for item in ("plum", "fig")
    )
    notes.write_text(
        blocks + "Look up the price of an item.\n#+name: lookup-price\n"
        '#+begin_src emacs-lisp :var item="pear"\n'
        '(format "%s costs 3" item)\n#+end_src\n',
        encoding="utf-8",
    )
    terminal = open_in_emacs(notes)

    def question(screen: str) -> str | None:
        for item in ("plum", "fig"):
            if f'run tool lookup-price {{"item": "{item}"}}?' in screen:
                return item
        return None

    try:
        terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")
        terminal.keys("C-c", "C-v", "b")
        first = question(
            terminal.wait_for(lambda s: question(s) is not None, "the first question")
        )
        terminal.keys("y")
        terminal.wait_for(
            lambda s: f": Tool results: {first} costs 3" in s, "the first reply"
        )
        screen = terminal.wait_for(
            lambda s: question(s) not in (None, first), "the second question"
        )
        second = question(screen)
        terminal.keys("n")
        terminal.wait_for(
            lambda s: ": Tool results: The user declined to run this tool." in s,
            "the second reply",
        )
        terminal.keys("C-x", "C-s")
        terminal.wait_for(lambda s: "Wrote " in s, "the file saved")
        saved = notes.read_text(encoding="utf-8")
        assert f"{first} costs 3" in saved
        assert f"{second} costs 3" not in saved
        assert len(server.received) == 4
    finally:
        terminal.close()
