"""What the helper costs: per block in Emacs, at the CLI's start, over TLS, in memory.

Run with ``make bench``.  Everything talks to the loopback test server
(tests/loopback_server.py), which answers at once; each figure is printed
next to its comparison, measured in the same run, alternating, as medians,
with the ratio.  Nothing here is pass/fail.

1. Per block in Emacs: a short chat-ai block, from executing it to the
   result in the buffer, with the persistent helper, with a helper per
   request, and one curl process started from Emacs for the same request.
2. The CLI's cold start, ``chat-ai --no-stream hi``, next to
   ``python -c "import requests"``.
3. Keep-alive: 20 requests in a row through one new helper to a TLS server
   on loopback (a self-signed certificate made here), next to 20 curl runs:
   TLS handshakes counted by the server, and the time taken, the helper's
   start included.
4. Memory: the helper's resident size after 10 and after 1,000 requests,
   and its peak.
"""

from __future__ import annotations

import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from loopback_server import Handler, LoopbackServer  # noqa: E402

ROUNDS = int(os.environ.get("CHAT_AI_BENCH_ROUNDS", "15"))
_compiled: list[tempfile.TemporaryDirectory[str]] = []
BIN = Path(sys.executable).parent
HELPER = BIN / "chat-ai"


def compiled_lisp() -> str:
    """Return a directory holding ob-chat-ai byte-compiled, for Emacs' -L.

    Emacs runs the package as installed: package.el and the other
    installers byte-compile it, and code loaded from source allocates
    far more.  It is compiled once per run, in a directory that goes
    when the run ends.
    """
    if not _compiled:
        _compiled.append(tempfile.TemporaryDirectory(prefix="ob-chat-ai-bench-"))
        where = Path(_compiled[0].name)
        sources = sorted(ROOT.glob("ob-chat-ai*.el"))
        for source in sources:
            (where / source.name).write_bytes(source.read_bytes())
        subprocess.run(
            ["emacs", "-Q", "--batch", "-L", str(where), "-f", "batch-byte-compile"]
            + [str(where / source.name) for source in sources],
            check=True,
            capture_output=True,
        )
    return _compiled[0].name


class TimedHandler(Handler):
    """The loopback server's handler, noting how long each request takes it."""

    server: TimedServer

    def do_POST(self) -> None:
        """Answer one POST, noting the time it took."""
        started = time.perf_counter()
        super().do_POST()
        self.server.service_times.append(time.perf_counter() - started)


class TimedServer(LoopbackServer):
    """The loopback server, noting how long it takes over each request."""

    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = TimedHandler
        self.service_times: list[float] = []


class TLSServer(LoopbackServer):
    """The loopback server behind TLS, counting handshakes."""

    def __init__(self, certificate: Path, key: Path) -> None:
        super().__init__()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.handshakes = 0

    def get_request(self) -> Any:
        """Accept one connection (its TLS handshake done) and count it."""
        connection = super().get_request()
        self.handshakes += 1
        return connection

    @property
    def base_url(self) -> str:
        """Return the https base URL."""
        return f"https://localhost:{self.server_address[1]}/v1"


Served = TypeVar("Served", bound=LoopbackServer)


def start(server: Served) -> Served:
    """Serve SERVER in a thread and return it."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def median_ms(values: list[float]) -> float:
    """Return the median of VALUES, in milliseconds."""
    return statistics.median(values) * 1000


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Print an Org table with TITLE above it."""
    print(title)
    print()
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            + " |"
        )

    print(line(header))
    print("|" + "+".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print()


def per_block() -> None:
    """Measure one block three ways in Emacs and print the table."""
    server = start(TimedServer())
    result = subprocess.run(
        [
            "emacs",
            "-Q",
            "--batch",
            "-L",
            compiled_lisp(),
            "-l",
            "bench/block-overhead.el",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "CHAT_AI_BENCH_URL": server.base_url,
            "CHAT_AI_BENCH_HELPER": str(HELPER),
            "CHAT_AI_BENCH_ROUNDS": str(ROUNDS),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    server.shutdown()
    times = json.loads(result.stdout.strip().splitlines()[-1])
    service = median_ms(server.service_times)
    curl = median_ms(times["curl"]) - service
    rows = []
    for name, label in (
        ("persistent", "chat-ai block, persistent helper"),
        ("one-shot", "chat-ai block, helper per request"),
        ("curl", "one curl process"),
    ):
        overhead = median_ms(times[name]) - service
        rows.append([label, f"{overhead:.1f}", f"{overhead / curl:.2f}"])
    table(
        f"Per block in Emacs, minus the server's own {service:.1f} ms "
        f"(median of {ROUNDS})",
        ["way", "ms", "/ curl"],
        rows,
    )


def cold_start() -> None:
    """Measure the CLI's cold start next to importing requests."""
    server = start(LoopbackServer())
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url}
    commands = {
        "chat-ai --no-stream hi": [str(HELPER), "--no-stream", "hi"],
        'python -c "import requests"': [sys.executable, "-c", "import requests"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(ROUNDS):
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            times[name].append(time.perf_counter() - started)
    server.shutdown()
    base = median_ms(times['python -c "import requests"'])
    table(
        f"Cold start (median of {ROUNDS})",
        ["command", "ms", "/ import requests"],
        [
            [name, f"{median_ms(t):.1f}", f"{median_ms(t) / base:.2f}"]
            for name, t in times.items()
        ],
    )


class Helper:
    """A ``chat-ai --serve`` process, asked one request at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [str(HELPER), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.count = 0

    def ask(self, base_url: str) -> None:
        """Send one request and wait for its final event."""
        assert self.process.stdin and self.process.stdout
        self.count += 1
        request = {
            "id": self.count,
            "base_url": base_url,
            "body": {
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        }
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        while True:
            event = json.loads(self.process.stdout.readline())
            if event["type"] == "error":
                raise RuntimeError(event["message"])
            if event["type"] == "done":
                return

    def memory(self) -> dict[str, int]:
        """Return the helper's current and peak resident size, in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines())
        return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}

    def close(self) -> None:
        """Let the helper exit."""
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait(timeout=30)


def keep_alive() -> None:
    """Count TLS handshakes for 20 requests through one helper and 20 curls."""
    with tempfile.TemporaryDirectory() as scratch:
        certificate, key = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
                *("-days", "1", "-subj", "/CN=localhost"),
                *("-addext", "subjectAltName=DNS:localhost"),
                *("-keyout", str(key), "-out", str(certificate)),
            ],
            check=True,
            capture_output=True,
        )
        server = start(TLSServer(certificate, key))
        started = time.perf_counter()
        helper = Helper({**os.environ, "REQUESTS_CA_BUNDLE": str(certificate)})
        for _ in range(20):
            helper.ask(server.base_url)
        helper_time = time.perf_counter() - started
        helper_handshakes = server.handshakes
        started = time.perf_counter()
        for _ in range(20):
            helper.ask(server.base_url)
        warm_time = time.perf_counter() - started
        warm_handshakes = server.handshakes - helper_handshakes
        helper.close()
        server.handshakes = 0
        body = json.dumps(
            {
                "model": "m",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
        started = time.perf_counter()
        for _ in range(20):
            subprocess.run(
                [
                    *("curl", "-sSN", "--cacert", str(certificate), "-o", "/dev/null"),
                    *("-H", "Content-Type: application/json", "--data-binary", body),
                    f"{server.base_url}/chat/completions",
                ],
                check=True,
            )
        curl_time = time.perf_counter() - started
        curl_handshakes = server.handshakes
        server.shutdown()
    table(
        "Twenty requests in a row over TLS on loopback, each way from its start",
        ["way", "TLS handshakes", "total ms", "/ curl"],
        [
            [
                "one helper (chat-ai --serve)",
                str(helper_handshakes),
                f"{helper_time * 1000:.0f}",
                f"{helper_time / curl_time:.2f}",
            ],
            [
                "the same helper, 20 more",
                str(warm_handshakes),
                f"{warm_time * 1000:.0f}",
                f"{warm_time / curl_time:.2f}",
            ],
            [
                "20 curl processes",
                str(curl_handshakes),
                f"{curl_time * 1000:.0f}",
                "1.00",
            ],
        ],
    )


def memory() -> None:
    """Measure the helper's resident size over 1,000 requests."""
    server = start(LoopbackServer())
    helper = Helper(dict(os.environ))
    for _ in range(10):
        helper.ask(server.base_url)
    early = helper.memory()
    for _ in range(990):
        helper.ask(server.base_url)
    late = helper.memory()
    helper.close()
    server.shutdown()
    table(
        "Helper memory (MiB)",
        ["after 10 requests", "after 1,000", "1,000 / 10", "peak"],
        [
            [
                f"{early['VmRSS'] / 1024:.1f}",
                f"{late['VmRSS'] / 1024:.1f}",
                f"{late['VmRSS'] / early['VmRSS']:.2f}",
                f"{late['VmHWM'] / 1024:.1f}",
            ]
        ],
    )


def main() -> None:
    """Run every measurement and print the tables."""
    per_block()
    cold_start()
    keep_alive()
    memory()


if __name__ == "__main__":
    main()
