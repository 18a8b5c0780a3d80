"""A big document: many blocks at once, a long document, a long session, a big file.

Run with ``make bench``.  Starts the loopback server (tests/loopback_server.py),
counting the requests it serves at once, and runs bench/big-document.el in a
real batch Emacs for each case, all in the same run:

1. N asynchronous blocks run by ``org-babel-execute-buffer`` whose replies
   stream at once (model ``slow``: 3-character deltas, paced), for N = 1 and
   N = 200: wall time against N times the one block's (the serial time),
   and against the serial time over the helper's concurrency (at most
   ``DEFAULT_MAX_CONCURRENT`` requests in flight per origin); how long
   ``org-babel-execute-buffer`` itself takes to start them (a command:
   Emacs is busy until it returns, as with any Babel language); then,
   while the replies stream in, the lateness of a 10 ms repeating timer
   (max and p99), Emacs' garbage collections (a timer cannot fire during
   one), and the most requests the server saw in flight at once.
2. BUSY blocks (40) against a server that works on 4 requests at once
   and answers 429 with ``retry-after`` beyond (model ``busy-4``, each
   reply ``CHAT_AI_BENCH_BUSY_DELAY`` seconds, 0.5 by default): how many
   were answered, the 429s the server sent, and the wall time against
   the ideal, BUSY times one such block's time alone over 4.
3. The cost of starting a block, from executing it to its request line
   handed to the helper: block 1,000 of a 1,000-block document against
   block 1, and a block with 100 earlier turns in its ``:session`` against
   one in a fresh session (medians).
4. One block at the end of a 10 MB Org file streaming a reply of 5,000
   deltas, against the same block alone in a small file: timer lateness.

Prints Org tables with the ratios; nothing here is pass/fail.  ``--only
CASE`` (``stream``, ``busy``, ``start`` or ``big``) runs one case alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helper_bench import compiled_lisp, table  # noqa: E402
from loopback_server import Handler, LoopbackServer  # noqa: E402

from chat_ai_helper.concurrency import DEFAULT_MAX_CONCURRENT  # noqa: E402

ROUNDS = int(os.environ.get("CHAT_AI_BENCH_ROUNDS", "5"))
MANY = int(os.environ.get("CHAT_AI_BENCH_MANY", "200"))
BUSY = int(os.environ.get("CHAT_AI_BENCH_BUSY", "40"))
BUSY_LIMIT = 4
BUSY_DELAY = os.environ.get("CHAT_AI_BENCH_BUSY_DELAY", "0.5")
BIG = 10_000_000
HELPER = Path(sys.executable).parent / "chat-ai"
EMACS_SCRIPT = ROOT / "bench" / "big-document.el"


class CountingHandler(Handler):
    """The loopback server's handler, counting the requests served at once."""

    server: CountingServer

    def do_POST(self) -> None:
        """Answer one POST, counted as served meanwhile."""
        with self.server.lock:
            self.server.serving += 1
            self.server.peak = max(self.server.peak, self.server.serving)
        try:
            super().do_POST()
        finally:
            with self.server.lock:
                self.server.serving -= 1


class CountingServer(LoopbackServer):
    """The loopback server, noting the most requests it served at once.

    Its own ``in_flight`` and ``refused`` count only ``busy-K`` requests.
    """

    def __init__(self) -> None:
        super().__init__()
        self.RequestHandlerClass = CountingHandler
        self.serving = 0
        self.peak = 0


def run_emacs(server: CountingServer, case: str) -> dict[str, Any]:
    """Run one CASE of the Emacs script and return what it printed."""
    server.peak = 0
    result = subprocess.run(
        ["emacs", "-Q", "--batch", "-L", compiled_lisp(), "-l", str(EMACS_SCRIPT)],
        env={
            **os.environ,
            "CHAT_AI_BENCH_URL": server.base_url,
            "CHAT_AI_BENCH_HELPER": str(HELPER),
            "CHAT_AI_BENCH_CASE": case,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def percentile(values: list[float], share: float) -> float:
    """Return the value below which SHARE of VALUES lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0


def ms(seconds: float) -> str:
    """Return SECONDS as milliseconds, for a table."""
    return f"{seconds * 1000:.1f}"


def gc_cell(run: dict[str, Any]) -> str:
    """Return the garbage collections of RUN and their mean length, for a table."""
    count = run["gcs"]
    return f"{count} ({run['gc-seconds'] / count * 1000:.0f})" if count else "0"


def many_blocks(server: CountingServer) -> None:
    """Stream 1 and MANY replies at once and print the table."""
    rows = []
    one = run_emacs(server, "stream 1")
    one_peak = server.peak
    many = run_emacs(server, f"stream {MANY}")
    many_peak = server.peak
    serial = one["seconds"] * MANY
    for count, run, peak in ((1, one, one_peak), (MANY, many, many_peak)):
        bound = one["seconds"] * count / min(count, DEFAULT_MAX_CONCURRENT)
        rows.append(
            [
                str(count),
                f"{run['answered']}/{count}",
                f"{run['command']:.2f}",
                f"{run['command'] / count * 1000:.1f}",
                f"{run['seconds']:.2f}",
                f"{run['seconds'] / (one['seconds'] * count):.3f}",
                f"{run['seconds'] / bound:.2f}",
                ms(percentile(run["lateness"], 0.99)),
                ms(max(run["lateness"], default=0)),
                gc_cell(run),
                str(peak),
            ]
        )
    table(
        f"Replies streaming at once through org-babel-execute-buffer "
        f"(serial time: {MANY} x one block's, {serial:.1f} s; "
        f"at most {DEFAULT_MAX_CONCURRENT} in flight)",
        [
            "blocks",
            "answered",
            "command (s)",
            "per block (ms)",
            "wall (s)",
            "wall / serial",
            "wall / (serial / in flight)",
            "timer late p99 (ms)",
            "timer late max (ms)",
            "GCs (ms each)",
            "peak in flight",
        ],
        rows,
    )


def busy_server(server: CountingServer) -> None:
    """Run 1 and BUSY blocks against a server taking BUSY_LIMIT at once."""
    model = f"busy-{BUSY_LIMIT}"
    delay = os.environ.get("CHAT_AI_TEST_DELAY")
    os.environ["CHAT_AI_TEST_DELAY"] = BUSY_DELAY
    try:
        one = run_emacs(server, f"stream 1 {model}")
        server.refused = server.peak_in_flight = 0
        many = run_emacs(server, f"stream {BUSY} {model}")
        refused, peak = server.refused, server.peak_in_flight
    finally:
        if delay is None:
            del os.environ["CHAT_AI_TEST_DELAY"]
        else:
            os.environ["CHAT_AI_TEST_DELAY"] = delay
    ideal = BUSY * one["seconds"] / BUSY_LIMIT
    table(
        f"A server that takes {BUSY_LIMIT} requests at once and answers 429 "
        f"(retry-after-ms: 200) beyond, each reply {BUSY_DELAY} s "
        f"(one block alone: {one['seconds']:.2f} s)",
        [
            "blocks",
            "answered",
            "429s received",
            "wall (s)",
            f"ideal: {BUSY} x one / {BUSY_LIMIT} (s)",
            "wall / ideal",
            "server peak in flight",
        ],
        [
            [
                str(BUSY),
                f"{many['answered']}/{BUSY}",
                str(refused),
                f"{many['seconds']:.2f}",
                f"{ideal:.2f}",
                f"{many['seconds'] / ideal:.2f}",
                str(peak),
            ]
        ],
    )


def start_cost(server: CountingServer) -> None:
    """Time starting blocks far down a document and deep in a session."""
    run = run_emacs(server, f"start {ROUNDS}")
    median = {name: statistics.median(values) for name, values in run.items()}
    table(
        f"Starting a block, until its request line is handed to the helper "
        f"(median of {ROUNDS})",
        ["block", "ms", "ratio"],
        [
            ["block 1 of 1,000", ms(median["first"]), "1.00"],
            [
                "block 1,000 of 1,000",
                ms(median["thousandth"]),
                f"{median['thousandth'] / median['first']:.2f}",
            ],
            ["a fresh :session", ms(median["fresh"]), "1.00"],
            [
                "a :session of 100 turns",
                ms(median["long"]),
                f"{median['long'] / median['fresh']:.2f}",
            ],
        ],
    )


def big_file(server: CountingServer) -> None:
    """Stream a long reply at the end of a big file and of a small one."""
    runs = {size: run_emacs(server, f"big {size}") for size in (0, BIG)}
    small_max = max(runs[0]["lateness"], default=0)
    small_p99 = percentile(runs[0]["lateness"], 0.99)
    rows = []
    for size, label in ((0, "a small file"), (BIG, "after 10 MB of Org")):
        run = runs[size]
        worst = max(run["lateness"], default=0)
        p99 = percentile(run["lateness"], 0.99)
        rows.append(
            [
                label,
                "yes" if run["whole"] else "no",
                f"{run['seconds']:.2f}",
                f"{run['seconds'] / runs[0]['seconds']:.2f}",
                ms(p99),
                f"{p99 / small_p99:.2f}" if small_p99 else "-",
                ms(worst),
                f"{worst / small_max:.2f}" if small_max else "-",
                gc_cell(run),
            ]
        )
    table(
        "A reply of 5,000 deltas streaming into one block",
        [
            "block",
            "whole reply",
            "seconds",
            "/ small",
            "timer late p99 (ms)",
            "/ small",
            "timer late max (ms)",
            "/ small",
            "GCs (ms each)",
        ],
        rows,
    )


CASES = {
    "stream": many_blocks,
    "busy": busy_server,
    "start": start_cost,
    "big": big_file,
}


def main() -> None:
    """Measure and print the tables, of every case or of the one asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=CASES, help="run this case alone")
    only = parser.parse_args().only
    os.environ.setdefault("CHAT_AI_TEST_DELAY", "0.05")
    server = CountingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name, case in CASES.items():
        if only in (None, name):
            case(server)
    server.shutdown()


if __name__ == "__main__":
    main()
