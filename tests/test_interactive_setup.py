"""M-x ob-chat-ai-install-helper in a real interactive Emacs, as a person runs it.

It asks once; answered no, it does nothing; answered yes, pip's output
shows in *chat-ai install* while Emacs goes on taking keys, and at the
end a block answers with the new helper.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from loopback_server import LoopbackServer
from test_interactive import ROOT, Terminal, pytestmark

__all__ = ["pytestmark"]


def wait_longer(terminal: Terminal, condition: Callable[[str], bool], what: str) -> str:
    """Return the first screen of TERMINAL for which CONDITION holds, within minutes."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        screen = terminal.screen()
        if condition(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"never saw {what}; the screen was:\n{terminal.screen()}")


def clean_environment(home: Path) -> dict[str, str]:
    """Return the environment of a clean HOME: no chat-ai on PATH, pip offline.

    pip installs from the wheels that ``make venv`` put beside this Python,
    and from nowhere else: the tests use no network but loopback.
    """
    path = [
        directory
        for directory in os.environ["PATH"].split(os.pathsep)
        if not (Path(directory) / "chat-ai").exists()
    ]
    return {
        "HOME": str(home),
        "PATH": os.pathsep.join(path),
        "TERM": "xterm-256color",
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(Path(sys.executable).parent.parent / "wheelhouse"),
    }


@pytest.fixture
def emacs_at_home(tmp_path: Path, server: LoopbackServer) -> Iterator[Terminal]:
    """An interactive Emacs with the package on its load-path and a clean HOME."""
    notes = tmp_path / "notes.org"
    notes.write_text(
        f"#+begin_src chat-ai :model m :base-url {server.base_url}\n"
        "hello from a fresh install\n#+end_src\n",
        encoding="utf-8",
    )
    init = (
        "(progn (setq inhibit-startup-screen t org-confirm-babel-evaluate nil)"
        " (require 'ob-chat-ai-setup))"
    )
    terminal = Terminal(
        ["emacs", "-nw", "-Q", "-L", str(ROOT), "--eval", init, str(notes)],
        clean_environment(tmp_path / "home"),
    )
    try:
        terminal.wait_for(lambda s: "hello from a fresh install" in s, "Emacs")
        yield terminal
    finally:
        terminal.close()


def test_install_asks_once_then_runs_while_emacs_takes_keys(
    emacs_at_home: Terminal, tmp_path: Path
) -> None:
    terminal = emacs_at_home
    venv = tmp_path / "home" / ".emacs.d" / "ob-chat-ai" / "venv"
    terminal.keys("M-x")
    terminal.keys("ob-chat-ai-install-helper", literal=True)
    terminal.keys("Enter")
    terminal.wait_for(
        lambda s: "Install the chat-ai helper in ~/.emacs.d/ob-chat-ai/venv/?" in s,
        "the question",
    )
    terminal.keys("n")
    terminal.wait_for(lambda s: "(y or n) n" in s, "the answer no")
    assert not venv.exists()
    assert "*chat-ai install*" not in terminal.screen()

    terminal.keys("M-x")
    terminal.keys("ob-chat-ai-install-helper", literal=True)
    terminal.keys("Enter")
    terminal.wait_for(lambda s: s.rstrip().endswith("(y or n)"), "the question again")
    terminal.keys("y")
    terminal.wait_for(lambda s: "-m venv" in s, "the install buffer")
    # Emacs is not waiting for pip: typed text shows in the Org buffer at once.
    terminal.keys("M->")
    terminal.keys("typed while pip works", literal=True)
    screen = terminal.wait_for(
        lambda s: "typed while pip works" in s, "the text typed during the install"
    )
    assert "blocks use it now" not in screen
    # pip may take minutes on a busy machine; its last line shows in the window.
    wait_longer(
        terminal,
        lambda s: (
            "chat-ai: the helper is installed in ~/.emacs.d/ob-chat-ai/venv/;" in s
        ),
        "the end of the install",
    )
    assert (venv / "bin" / "chat-ai").exists()

    terminal.keys("M-<")
    terminal.keys("C-c", "C-c")
    terminal.wait_for(
        lambda s: ": hello from a fresh install" in s, "the block's answer"
    )
