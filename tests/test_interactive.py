"""C-c C-c in a real interactive Emacs (``emacs -nw`` under tmux), as a person uses it.

The loopback server holds the reply halfway (model ``held``) until the
test releases it, while keys typed after C-c C-c show up: Emacs is not
waiting for the model, however fast or slow the machine.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loopback_server import LoopbackServer

ROOT = Path(__file__).resolve().parent.parent
LINES = [f"line {i:02}" for i in range(1, 13)]

pytestmark = pytest.mark.skipif(
    not (shutil.which("tmux") and shutil.which("emacs")),
    reason="needs tmux and emacs (scripts/install-system-deps installs them)",
)


class Terminal:
    """A tmux session running one program, read and typed into like a screen."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.name = f"chat-ai-test-{uuid.uuid4().hex[:8]}"
        exports = [f"{key}={value}" for key, value in env.items()]
        session = ["new-session", "-d", "-s", self.name, "-x", "100", "-y", "45"]
        subprocess.run(["tmux", *session, "env", *exports, *command], check=True)

    def screen(self) -> str:
        """Return the text on the screen now."""
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", self.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        """Press KEYS (tmux key names), or type them as text when LITERAL."""
        flags = ["-l"] if literal else []
        subprocess.run(
            ["tmux", "send-keys", "-t", self.name, *flags, *keys], check=True
        )

    def wait_for(self, condition: Callable[[str], bool], what: str) -> str:
        """Return the first screen for which CONDITION holds."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = self.screen()
            if condition(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"never saw {what}; the screen was:\n{self.screen()}")

    def close(self) -> None:
        """End the session and what runs in it."""
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False)


def open_in_emacs(notes: Path) -> Terminal:
    """Start an interactive Emacs on the Org file NOTES, in a tmux session."""
    helper = Path(sys.executable).parent / "chat-ai"
    init = ROOT / "tests" / "interactive-init.el"
    return Terminal(
        ["emacs", "-nw", "-Q", "-L", str(ROOT), "-l", str(init), str(notes)],
        {"CHAT_AI_TEST_HELPER": str(helper), "TERM": "xterm-256color"},
    )


@pytest.fixture
def terminal_emacs(
    server: LoopbackServer, tmp_path: Path
) -> Iterator[tuple[Terminal, Path]]:
    notes = tmp_path / "notes.org"
    notes.write_text(
        f"#+begin_src chat-ai :model held :base-url {server.base_url}\n"
        + "\n".join(LINES)
        + "\n#+end_src\n\n* Notes\n",
        encoding="utf-8",
    )
    terminal = open_in_emacs(notes)
    try:
        yield terminal, notes
    finally:
        terminal.close()


def results(screen: str) -> list[str]:
    """Return the fixed-width result lines on SCREEN."""
    return [line[2:] for line in screen.splitlines() if line.startswith(": ")]


def test_reply_streams_while_the_user_keeps_typing(
    terminal_emacs: tuple[Terminal, Path], server: LoopbackServer
) -> None:
    terminal, notes = terminal_emacs
    terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")

    terminal.keys("C-c", "C-c")
    terminal.keys("M->")
    terminal.keys("typed while streaming", literal=True)

    screen = terminal.wait_for(
        lambda s: "typed while streaming" in s, "the text typed after C-c C-c"
    )
    assert screen.count(LINES[-1]) == 1, "Emacs waited for the whole reply"

    streaming = terminal.wait_for(
        lambda s: LINES[0] in results(s) and "chat-ai[1:" in s,
        "the first lines of the reply, and progress in the mode line",
    )
    assert LINES[-1] not in results(streaming)

    server.release()
    finished = "#+begin_example\n" + "\n".join(LINES) + "\n#+end_example\n"
    terminal.wait_for(
        lambda s: finished in s and "chat-ai[" not in s,
        "the whole reply, as Babel shows a long result",
    )
    terminal.keys("C-x", "C-s")
    terminal.wait_for(lambda s: "Wrote " in s, "the file saved")

    saved = notes.read_text(encoding="utf-8")
    assert "#+end_src\n\n#+RESULTS:\n" + finished + "\n* Notes\n" in saved
    assert saved.endswith("* Notes\ntyped while streaming\n")
    assert "waiting for" not in saved


def test_ctrl_g_cancels_a_block_that_waits(
    server: LoopbackServer, tmp_path: Path
) -> None:
    notes = tmp_path / "wait.org"
    notes.write_text(
        f"#+begin_src chat-ai :model hang :async no :base-url {server.base_url}\n"
        "never answered\n#+end_src\n",
        encoding="utf-8",
    )
    terminal = open_in_emacs(notes)
    try:
        terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")
        terminal.keys("C-c", "C-c")
        terminal.wait_for(lambda s: "chat-ai: waiting for hang" in s, "Emacs waiting")
        deadline = time.monotonic() + 60
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.received, "the request never reached the server"
        terminal.keys("C-g")
        terminal.wait_for(lambda s: "Quit" in s, "the quit")
        terminal.keys("M->")
        terminal.keys("typed after C-g", literal=True)
        screen = terminal.wait_for(lambda s: "typed after C-g" in s, "Emacs typing")
        assert "#+RESULTS:" not in screen
        deadline = time.monotonic() + 30
        while server.hung_up < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.hung_up == 1, "the request was not dropped"
    finally:
        terminal.close()


def wait_for_file(notes: Path, condition: Callable[[str], bool], what: str) -> str:
    """Return the text of NOTES once CONDITION holds for it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = notes.read_text(encoding="utf-8")
        if condition(text):
            return text
        time.sleep(0.05)
    raise AssertionError(f"never saw {what}; the file was:\n{text}")


def echo_area(screen: str) -> str:
    """Return the last line of SCREEN, where Emacs shows its messages."""
    return screen.rstrip("\n").splitlines()[-1]


def shows_error(count: int) -> Callable[[str], bool]:
    """Return a test of a screen with COUNT error results, one in the echo area."""

    def test(screen: str) -> bool:
        return screen.count(": chat-ai error: HTTP 400") == count and echo_area(
            screen
        ).startswith("chat-ai error: HTTP 400")

    return test


NEXT_BLOCK = "#+name: next\n#+begin_src emacs-lisp\n(+ 1 2)\n#+end_src\n"


def test_rerun_edit_save_and_undo_while_a_reply_streams(
    server: LoopbackServer, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.org"
    block = (
        f"#+begin_src chat-ai :model held :base-url {server.base_url}\n"
        + "\n".join(LINES)
        + "\n#+end_src\n\n"
    )
    notes.write_text(
        block + "#+RESULTS:\n: old answer\n\n" + NEXT_BLOCK + "\n* Notes\n",
        encoding="utf-8",
    )
    terminal = open_in_emacs(notes)
    try:
        terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")
        terminal.keys("C-c", "C-c")
        terminal.wait_for(lambda s: LINES[0] in results(s), "the reply streaming")
        terminal.keys("C-c", "C-c")
        terminal.wait_for(
            lambda s: "earlier request of this block is cancelled" in s,
            "the first request dropped",
        )
        terminal.keys("C-s")
        terminal.keys("old answer", literal=True)
        terminal.keys("Enter")
        terminal.keys(" edited", literal=True)
        terminal.keys("M->")
        terminal.keys("typed below", literal=True)
        terminal.keys("C-x", "C-s")
        screen = terminal.wait_for(lambda s: "Wrote " in s, "the file saved")
        assert "chat-ai[1:" in screen, "the reply had finished before the save"

        saved = wait_for_file(notes, lambda t: "edited" in t, "the edits saved")
        assert saved == (
            block
            + "#+RESULTS:\n: old answer edited\n\n"
            + NEXT_BLOCK
            + "\n* Notes\ntyped below\n"
        )
        server.release()

        finished = "#+begin_example\n" + "\n".join(LINES) + "\n#+end_example\n"
        terminal.wait_for(
            lambda s: finished in s and "chat-ai[" not in s, "the whole reply"
        )
        terminal.keys("C-x", "C-s")
        expected = (
            block
            + "#+RESULTS:\n"
            + finished
            + "\n"
            + NEXT_BLOCK
            + "\n* Notes\ntyped below\n"
        )
        assert wait_for_file(notes, lambda t: t == expected, "the reply saved") == (
            expected
        )

        terminal.keys("C-x", "u")
        terminal.wait_for(
            lambda s: ": old answer edited" in s and "#+begin_example" not in s,
            "one undo taking the whole reply back",
        )
        terminal.keys("C-x", "C-s")
        assert wait_for_file(notes, lambda t: t == saved, "the undo saved") == saved
        assert len(server.received) == 2
    finally:
        terminal.close()


def test_errors_stay_in_the_echo_area(server: LoopbackServer, tmp_path: Path) -> None:
    notes = tmp_path / "errors.org"
    url = server.base_url
    notes.write_text(
        f"#+begin_src chat-ai :model m :temperature 9 :base-url {url}\n"
        "hot\n#+end_src\n\n"
        f"#+begin_src chat-ai :model error-400 :base-url {url}\nfails\n#+end_src\n\n"
        f"#+begin_src chat-ai :model error-400 :async no :base-url {url}\n"
        "waits and fails\n#+end_src\n",
        encoding="utf-8",
    )
    terminal = open_in_emacs(notes)
    try:
        terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")
        terminal.keys("C-c", "C-c")
        screen = terminal.wait_for(
            lambda s: ":temperature" in echo_area(s), "the invalid request refused"
        )
        assert "#+RESULTS:" not in screen
        assert not server.received

        for count, search in enumerate(("fails", "waits and fails"), start=1):
            terminal.keys("C-s")
            terminal.keys(search, literal=True)
            terminal.keys("Enter")
            terminal.keys("C-c", "C-c")
            terminal.wait_for(
                shows_error(count), f"the error of {search!r} in results and echo area"
            )
    finally:
        terminal.close()


def test_execute_buffer_asks_a_session_in_order(
    server: LoopbackServer, tmp_path: Path
) -> None:
    notes = tmp_path / "session.org"
    notes.write_text(
        "* Trip\n:PROPERTIES:\n"
        f":header-args:chat-ai: :session trip :model held :base-url {server.base_url}\n"
        ":END:\n"
        "#+begin_src chat-ai\nWhere should I go in May?\n#+end_src\n\n"
        "#+begin_src chat-ai\nHow do I get there?\n#+end_src\n",
        encoding="utf-8",
    )
    terminal = open_in_emacs(notes)
    try:
        terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")
        terminal.keys("C-c", "C-v", "b")
        terminal.wait_for(
            lambda s: "waiting for the earlier blocks of session trip..." in s,
            "the second block waiting for the first",
        )
        deadline = time.monotonic() + 30
        while not server.received and time.monotonic() < deadline:
            time.sleep(0.05)
        terminal.wait_for(lambda s: ": Where" in s, "the first reply streaming")
        assert "waiting for the earlier blocks of session trip..." in terminal.screen()
        assert len(server.received) == 1, "the second block did not wait"
        server.release()
        terminal.wait_for(
            lambda s: ": How do I get there?" in s and "chat-ai[" not in s,
            "both replies",
        )
        assert len(server.received) == 2
        assert server.received[1]["body"]["messages"] == [
            {"role": "user", "content": "Where should I go in May?"},
            {"role": "assistant", "content": "Where should I go in May?"},
            {"role": "user", "content": "How do I get there?"},
        ]
        terminal.keys("C-x", "C-s")
        terminal.wait_for(lambda s: "Wrote " in s, "the file saved")
        saved = notes.read_text(encoding="utf-8")
        assert "waiting for" not in saved
        assert saved.endswith(
            "#+begin_src chat-ai\nHow do I get there?\n#+end_src\n\n"
            "#+RESULTS:\n: How do I get there?\n"
        )
    finally:
        terminal.close()


def test_header_args_and_their_values_complete(
    server: LoopbackServer, tmp_path: Path
) -> None:
    notes = tmp_path / "complete.org"
    notes.write_text(
        f"#+begin_src chat-ai :base-url {server.base_url}\nhi\n#+end_src\n",
        encoding="utf-8",
    )
    terminal = open_in_emacs(notes)
    try:
        terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")
        terminal.keys("C-c", "C-v", "j")
        terminal.wait_for(lambda s: "Header Arg:" in s, "the header arg prompt")
        terminal.keys("form", literal=True)
        terminal.keys("Tab")
        terminal.wait_for(lambda s: "Header Arg: format" in s, "format completed")
        terminal.keys("Enter")
        terminal.wait_for(lambda s: "Value:" in s, "the value prompt")
        terminal.keys("o", literal=True)
        terminal.keys("Tab")
        terminal.wait_for(lambda s: "Value: org" in s, "org completed")
        terminal.keys("Enter")
        terminal.wait_for(
            lambda s: "#+begin_src chat-ai :base-url" in s and " :format org\n" in s,
            "the header arg inserted",
        )
        assert "Wrong type argument" not in terminal.screen()
    finally:
        terminal.close()


def test_execute_buffer_over_many_blocks_queues_them_and_sums_up(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_AI_TEST_DELAY", "0.3")
    notes = tmp_path / "many.org"
    blocks = [
        f"* Question {n}\n#+begin_src chat-ai :model busy-2 :base-url "
        f"{server.base_url}\nquestion {n}\n#+end_src\n"
        for n in range(1, 21)
    ]
    notes.write_text("\n".join(blocks), encoding="utf-8")
    terminal = open_in_emacs(notes)
    try:
        terminal.wait_for(lambda s: "#+begin_src chat-ai" in s, "the Org file")
        terminal.keys("C-c", "C-v", "b")
        terminal.wait_for(
            lambda s: "chat-ai: 20 answered, 0 failed," in s and "chat-ai[" not in s,
            "every block answered, and the summary in the echo area",
        )
        terminal.keys("C-x", "C-s")
        terminal.wait_for(lambda s: "Wrote " in s, "the file saved")
        saved = notes.read_text(encoding="utf-8")
        answered = [
            block.replace("#+end_src\n", f"#+end_src\n\n#+RESULTS:\n: question {n}\n")
            for n, block in enumerate(blocks, 1)
        ]
        assert saved == "\n".join(answered)
        assert server.peak_in_flight <= 2
        assert len(server.received) == 20 + server.refused
    finally:
        terminal.close()
