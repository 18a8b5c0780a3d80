"""The usage log: a row per request, its cost, and ``chat-ai usage``."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY, run_cli
from loopback_server import LoopbackServer
from test_protocol import serve

from chat_ai_helper.usage import (
    DEFAULT_PRICES,
    cost_of,
    load_prices,
    price_for,
    token_counts,
)


def rows() -> list[dict[str, Any]]:
    path = Path(os.environ["XDG_STATE_HOME"]) / "chat-ai" / "usage.sqlite3"
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM requests ORDER BY id")]


def write_prices(prices: dict[str, Any]) -> None:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "chat-ai" / "prices.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(prices), encoding="utf-8")


def envelope(server: LoopbackServer, request_id: str, model: str, **more: Any) -> Any:
    return {
        "id": request_id,
        "base_url": server.base_url,
        "api_key": TEST_KEY,
        "body": {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": "hello"}],
        },
        **more,
    }


def test_a_done_request_from_emacs_is_logged_with_its_cost(
    server: LoopbackServer,
) -> None:
    write_prices({"priced-*": {"input": 1_000_000, "output": 2_000_000}})
    events = serve(
        envelope(server, "a", "priced-model", org_file="/tmp/notes.org", block="ask")
    )
    sent = server.received[0]["body"]
    assert sent["stream_options"] == {"include_usage": True}
    [row] = rows()
    assert row["origin"] == "emacs"
    assert row["provider"] == "openai"
    assert row["model"] == "priced-model"
    assert row["endpoint"] == server.base_url + "/chat/completions"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 5)
    assert row["total_tokens"] == 10
    assert row["usage_reported"] == 1
    assert row["cost"] == pytest.approx(5 * 1 + 5 * 2)
    assert events[-1]["cost"] == pytest.approx(15)
    assert row["outcome"] == "done"
    assert row["org_file"] == "/tmp/notes.org"
    assert row["block"] == "ask"
    assert row["latency"] >= row["first_token"] >= 0
    assert row["prompt"] is None and row["reply"] is None


def test_an_error_and_a_missing_usage_are_logged(server: LoopbackServer) -> None:
    serve(
        envelope(server, "e", "error-500"),
        {
            **envelope(server, "n", "m"),
            "body": {**envelope(server, "n", "m")["body"], "stream_options": {}},
        },
    )
    by_model = {row["model"]: row for row in rows()}
    assert by_model["error-500"]["outcome"] == "error"
    assert by_model["error-500"]["error_kind"] == "api"
    assert by_model["m"]["usage_reported"] == 0
    assert by_model["m"]["cost"] is None


def test_a_cancelled_request_is_logged(server: LoopbackServer) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "chat_ai_helper", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert process.stdin and process.stdout
    process.stdin.write((json.dumps(envelope(server, "h", "hang")) + "\n").encode())
    process.stdin.flush()
    assert json.loads(process.stdout.readline())["type"] == "delta"
    process.stdin.write(b'{"type": "cancel", "id": "h"}\n')
    process.stdin.close()
    process.wait(timeout=30)
    [row] = rows()
    assert row["outcome"] == "cancelled"


def test_the_cli_logs_its_requests_and_usage_totals_them(
    server: LoopbackServer,
) -> None:
    write_prices({"m": {"input": 1_000_000, "output": 1_000_000}})
    env = {"OPENAI_API_KEY": TEST_KEY}
    for prompt in ("one", "three"):
        done = run_cli("--base-url", server.base_url, "-m", "m", prompt, env=env)
        assert done.returncode == 0
    failed = run_cli("--base-url", server.base_url, "-m", "error-401", "x", env=env)
    assert failed.returncode == 1
    assert [row["origin"] for row in rows()] == ["cli"] * 3
    assert [row["outcome"] for row in rows()] == ["done", "done", "error"]
    report = run_cli("usage", "--json")
    assert report.returncode == 0
    totals = {t["model"]: t for t in json.loads(report.stdout)["totals"]}
    assert totals["m"]["requests"] == 2
    assert totals["m"]["total_tokens"] == 6 + 10
    assert totals["m"]["cost"] == pytest.approx(16)
    assert totals["error-401"]["cost"] is None
    text = run_cli("usage").stdout.decode()
    assert "$16.0000" in text
    assert "price unknown" in text
    assert (
        run_cli("usage", "--since", "2999-01-01")
        .stdout.decode()
        .startswith("No requests")
    )


def test_no_key_is_written_under_the_state_and_config_directories(
    server: LoopbackServer,
) -> None:
    os.environ["CHAT_AI_LOG_TEXT"] = "1"
    try:
        serve(envelope(server, "k", "error-401"), envelope(server, "d", "m"))
    finally:
        del os.environ["CHAT_AI_LOG_TEXT"]
    assert rows()[-1]["prompt"] is not None
    for root in ("XDG_STATE_HOME", "XDG_CONFIG_HOME"):
        for path in Path(os.environ[root]).rglob("*"):
            if path.is_file():
                assert TEST_KEY.encode() not in path.read_bytes()
                assert b"SECRET" not in path.read_bytes()


def test_an_unwritable_log_still_answers_with_one_warning(
    server: LoopbackServer,
) -> None:
    state = Path(os.environ["XDG_STATE_HOME"])
    state.mkdir(parents=True)
    (state / "chat-ai").write_text("not a directory")
    result = subprocess.run(
        [sys.executable, "-m", "chat_ai_helper", "--serve"],
        input="".join(
            json.dumps(envelope(server, str(i), "m")) + "\n" for i in range(3)
        ).encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events].count("done") == 3
    assert result.stderr.decode().count("warning") == 1


def test_cost_counts_cached_and_reasoning_tokens_at_their_prices() -> None:
    counts = token_counts(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 40},
            "completion_tokens_details": {"reasoning_tokens": 30},
        }
    )
    price = {"input": 1.0, "cached": 0.5, "output": 2.0, "reasoning": 3.0}
    assert cost_of(counts, price) == pytest.approx(
        (60 * 1.0 + 40 * 0.5 + 20 * 2.0 + 30 * 3.0) / 1_000_000
    )
    assert cost_of(counts, None) is None


def test_every_default_price_says_when_and_where_it_was_read() -> None:
    for model, price in DEFAULT_PRICES.items():
        assert datetime.date.fromisoformat(price["date"]), model
        assert price["source"].startswith("https://"), model
        assert price["input"] > 0 and price["output"] >= price["input"], model
        assert price.get("cached", price["input"]) <= price["input"], model


def test_a_snapshot_costs_its_model_and_a_neighbour_is_not_confused() -> None:
    prices = load_prices(os.environ)
    assert price_for("gpt-5-mini-2025-08-07", prices) is DEFAULT_PRICES["gpt-5-mini"]
    assert price_for("gpt-4.1-nano", prices) is DEFAULT_PRICES["gpt-4.1-nano"]
    assert price_for("gpt-4o", prices) is None
    assert price_for("gpt-4-0613", prices) is None


def test_the_users_prices_come_before_the_defaults() -> None:
    write_prices({"gpt-5-*": {"input": 9.0, "output": 9.0}})
    prices = load_prices(os.environ)
    assert price_for("gpt-5-nano", prices) == {"input": 9.0, "output": 9.0}
    assert price_for("gpt-4.1-nano", prices) is DEFAULT_PRICES["gpt-4.1-nano"]
