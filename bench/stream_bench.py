"""Streaming a long reply into an Emacs buffer, next to curl reading the same stream.

Run with ``make bench``.  Starts the loopback server (tests/loopback_server.py),
which streams a reply of N one-word deltas as fast as it can, and measures in
the same run, alternating, median of several rounds:

- curl -N reading the stream to /dev/null;
- a real batch Emacs evaluating an asynchronous chat-ai block that streams the
  same reply into an Org buffer, from C-c C-c to the finished result, with a
  10 ms repeating timer noting how late it fires meanwhile.

Prints a table with the ratios; nothing here is pass/fail.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helper_bench import compiled_lisp  # noqa: E402
from loopback_server import LoopbackServer  # noqa: E402

ROUNDS = int(os.environ.get("CHAT_AI_BENCH_ROUNDS", "5"))
SIZES = (2000, 8000)
CURL = ["curl", "-sSN", "-o", "/dev/null", "-H", "Content-Type: application/json"]
EMACS_SCRIPT = ROOT / "bench" / "stream-into-buffer.el"


def time_curl(base_url: str, model: str, body_file: Path) -> float:
    """Return the seconds curl takes to read the whole stream."""
    started = time.perf_counter()
    subprocess.run(
        [*CURL, "--data-binary", f"@{body_file}", f"{base_url}/chat/completions"],
        check=True,
    )
    return time.perf_counter() - started


def time_emacs(base_url: str, model: str) -> dict[str, Any]:
    """Return seconds, timer lateness and size of one stream into Emacs."""
    helper = Path(sys.executable).parent / "chat-ai"
    result = subprocess.run(
        ["emacs", "-Q", "--batch", "-L", compiled_lisp(), "-l", str(EMACS_SCRIPT)],
        env={
            **os.environ,
            "CHAT_AI_BENCH_URL": base_url,
            "CHAT_AI_BENCH_MODEL": model,
            "CHAT_AI_BENCH_HELPER": str(helper),
        },
        capture_output=True,
        text=True,
        check=True,
    )
    run: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return run


def percentile(values: list[float], share: float) -> float:
    """Return the value below which SHARE of VALUES lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0


def main() -> None:
    """Measure and print the table."""
    server = LoopbackServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in SIZES:
            model = f"long-{size}"
            body_file = Path(scratch) / f"{model}.json"
            body_file.write_text(
                json.dumps(
                    {
                        "model": model,
                        "stream": True,
                        "messages": [{"role": "user", "content": "Go."}],
                    }
                )
            )
            curl_times: list[float] = []
            emacs_times: list[float] = []
            lateness: list[float] = []
            for _ in range(ROUNDS):
                curl_times.append(time_curl(server.base_url, model, body_file))
                run = time_emacs(server.base_url, model)
                emacs_times.append(run["seconds"])
                lateness.extend(run["lateness"])
            rows.append(
                (
                    size,
                    statistics.median(curl_times),
                    statistics.median(emacs_times),
                    percentile(lateness, 0.99),
                    max(lateness),
                )
            )
    server.shutdown()
    print(f"Streaming a reply of N one-word deltas; median of {ROUNDS} rounds.")
    print()
    header = (
        "| deltas | curl -N (s) | Emacs buffer (s) | Emacs / curl "
        "| timer late p99 (ms) | timer late max (ms) |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for size, curl, emacs, p99, worst in rows:
        print(
            f"| {size:6} | {curl:11.3f} | {emacs:16.3f} | {emacs / curl:12.2f} "
            f"| {p99 * 1000:19.1f} | {worst * 1000:19.1f} |"
        )
    (small, _, small_emacs, _, _), (large, _, large_emacs, _, _) = rows
    growth = (large_emacs / large) / (small_emacs / small)
    print()
    print(
        f"Emacs time per delta at {large} deltas / at {small} deltas: {growth:.2f} "
        "(1.00 is linear; above 1, insertion slows as the reply grows)"
    )


if __name__ == "__main__":
    main()
