"""The local usage log: what every request cost, kept in SQLite.

Each request the helper sends, from Emacs or from the ``chat-ai``
command, becomes one row of ``$XDG_STATE_HOME/chat-ai/usage.sqlite3``
(``~/.local/state/…``): when, where, which model, the tokens, the cost,
how it ended and how long it took.  Never the key; the prompt and the
reply only with ``CHAT_AI_LOG_TEXT=1``.  Writing the log never fails a
request: a database that cannot be written is one warning on stderr.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from chat_ai_helper.errors import ConfigError

DEFAULT_PRICES: dict[str, dict[str, Any]] = {
    # USD per million tokens, standard tier, as OpenAI's own model page said
    # on `date` (the day the page was read).  Only figures read on the
    # provider's page are here; DeepSeek's are left to prices.json, as its
    # price depends on the hour of the day (peak and off-peak) since
    # 2026-08-16 and its older model names were retired.
    "gpt-5.1": {
        "input": 1.25,
        "cached": 0.125,
        "output": 10.00,
        "date": "2026-11-23",
        "source": "https://developers.openai.com/zh-Hans/api/docs/models/gpt-5.1",
    },
    "gpt-5-mini": {
        "input": 0.25,
        "cached": 0.025,
        "output": 2.00,
        "date": "2026-11-23",
        "source": "https://developers.openai.com/ko-KR/api/docs/models/gpt-5-mini",
    },
    "gpt-5-nano": {
        "input": 0.05,
        "cached": 0.005,
        "output": 0.40,
        "date": "2026-11-23",
        "source": "https://developers.openai.com/api/docs/models/gpt-5-nano.md",
    },
    "gpt-4.1-nano": {
        "input": 0.10,
        "cached": 0.025,
        "output": 0.40,
        "date": "2026-11-23",
        "source": "https://developers.openai.com/ko-KR/api/docs/models/gpt-4.1-nano",
    },
    "gpt-4-turbo": {
        "input": 10.00,
        "output": 30.00,
        "date": "2026-11-23",
        "source": "https://developers.openai.com/api/docs/models/gpt-4-turbo.md",
    },
    "gpt-4": {
        "input": 30.00,
        "output": 60.00,
        "date": "2026-11-23",
        "source": "https://developers.openai.com/api/docs/models/gpt-4.md",
    },
    "gpt-3.5-turbo": {
        "input": 0.50,
        "output": 1.50,
        "date": "2026-11-23",
        "source": "https://developers.openai.com/api/docs/models/gpt-3.5-turbo.md",
    },
    "gpt-3.5-turbo-instruct": {
        "input": 1.50,
        "output": 2.00,
        "date": "2026-11-23",
        "source": (
            "https://developers.openai.com/api/docs/models/gpt-3.5-turbo-instruct.md"
        ),
    },
}
"""The helper's own prices, by model name or shell-style pattern."""

SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")
"""The date that ends a snapshot's model name."""

COLUMNS = (
    "time",
    "provider",
    "origin",
    "model",
    "endpoint",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "total_tokens",
    "usage_reported",
    "cost",
    "outcome",
    "error_kind",
    "latency",
    "first_token",
    "org_file",
    "block",
    "prompt",
    "reply",
)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, time TEXT, "
    "provider TEXT, origin TEXT, model TEXT, endpoint TEXT, prompt_tokens INTEGER, "
    "completion_tokens INTEGER, reasoning_tokens INTEGER, cached_tokens INTEGER, "
    "total_tokens INTEGER, usage_reported INTEGER, cost REAL, outcome TEXT, "
    "error_kind TEXT, latency REAL, first_token REAL, org_file TEXT, block TEXT, "
    "prompt TEXT, reply TEXT)"
)


def state_dir(environ: Mapping[str, str]) -> Path:
    """Return the directory of the usage log."""
    state = environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "chat-ai"


def log_file(environ: Mapping[str, str]) -> Path:
    """Return the usage log's database file."""
    return state_dir(environ) / "usage.sqlite3"


def prices_file(environ: Mapping[str, str]) -> Path:
    """Return the user's prices file."""
    config = environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config) / "chat-ai" / "prices.json"


def load_prices(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Return the prices by model or pattern: the user's file's first, then ours.

    An entry of the user's, a name or a pattern, hides our entries it
    matches, so that ``gpt-5-*`` in the file prices every GPT-5 model.
    """
    path = prices_file(environ)
    user: dict[str, dict[str, Any]] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ConfigError(f"{path} cannot be read as JSON: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a JSON object of models")
        user = {
            str(name): price for name, price in data.items() if isinstance(price, dict)
        }
    shadowed = {
        name
        for name in DEFAULT_PRICES
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in user)
    }
    return {
        **user,
        **{k: v for k, v in DEFAULT_PRICES.items() if k not in shadowed},
    }


def price_for(
    model: str | None, prices: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """Return the price of MODEL: its exact name, the first pattern, its undated name.

    A dated snapshot (``gpt-5-mini-2025-08-07``) costs what its model
    costs unless an entry names the snapshot itself.
    """
    if not model:
        return None
    if model in prices:
        return prices[model]
    for pattern, price in prices.items():
        if fnmatch.fnmatchcase(model, pattern):
            return price
    undated = SNAPSHOT_DATE.sub("", model)
    return prices.get(undated) if undated != model else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def token_counts(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Return the prompt, completion, reasoning, cached and total tokens of USAGE."""
    usage = usage or {}
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "reasoning_tokens": _count(
            completion_details.get("reasoning_tokens")
            if isinstance(completion_details, dict)
            else None
        ),
        "cached_tokens": _count(
            prompt_details.get("cached_tokens")
            if isinstance(prompt_details, dict)
            else None
        ),
        "total_tokens": _count(usage.get("total_tokens")) or prompt + completion,
    }


def cost_of(counts: Mapping[str, int], price: Mapping[str, Any] | None) -> float | None:
    """Return the USD cost of token COUNTS at PRICE, or None when it is unknown.

    Cached prompt tokens cost the cached price (else the input price);
    reasoning tokens, which the completion tokens include, cost the
    reasoning price (else the output price).
    """
    if price is None:
        return None

    def rate(name: str, fallback: str) -> float:
        value = price.get(name, price.get(fallback, 0))
        return float(value) if isinstance(value, int | float) else 0.0

    cached = min(counts["cached_tokens"], counts["prompt_tokens"])
    reasoning = min(counts["reasoning_tokens"], counts["completion_tokens"])
    total = (
        (counts["prompt_tokens"] - cached) * rate("input", "input")
        + cached * rate("cached", "input")
        + (counts["completion_tokens"] - reasoning) * rate("output", "output")
        + reasoning * rate("reasoning", "output")
    )
    return total / 1_000_000


@dataclass
class Meter:
    """What one request did, measured as it runs, for its row in the log."""

    origin: str
    provider: str = ""
    model: str | None = None
    endpoint: str = ""
    org_file: str | None = None
    block: str | None = None
    prompt: str | None = None
    started: float = field(default_factory=time.monotonic)
    first: float | None = None
    reply: list[str] = field(default_factory=list)

    def text(self, text: str) -> None:
        """Note that TEXT of the reply (or thinking) has come."""
        if self.first is None:
            self.first = time.monotonic()
        if len(self.reply) < 10_000:
            self.reply.append(text)

    def row(
        self,
        outcome: str,
        error_kind: str | None,
        usage: Mapping[str, Any] | None,
        model: str | None,
        prices: Mapping[str, Mapping[str, Any]],
        keep_text: bool,
    ) -> dict[str, Any]:
        """Return the log row of the request that ended with OUTCOME."""
        counts = token_counts(usage)
        model = model or self.model
        return {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "provider": self.provider,
            "origin": self.origin,
            "model": model,
            "endpoint": self.endpoint,
            **counts,
            "usage_reported": int(usage is not None),
            "cost": cost_of(counts, price_for(model, prices))
            if usage is not None
            else None,
            "outcome": outcome,
            "error_kind": error_kind,
            "latency": round(time.monotonic() - self.started, 3),
            "first_token": None
            if self.first is None
            else round(self.first - self.started, 3),
            "org_file": self.org_file,
            "block": self.block,
            "prompt": self.prompt if keep_text else None,
            "reply": "".join(self.reply) if keep_text else None,
        }


def meter_for(origin: str, request: Any, envelope: Mapping[str, Any]) -> Meter:
    """Return the meter of REQUEST, a parsed ENVELOPE, sent from ORIGIN."""
    org_file = envelope.get("org_file")
    block = envelope.get("block")
    return Meter(
        origin=origin,
        provider=request.provider_name,
        model=request.body.get("model"),
        endpoint=request.url.split("?")[0],
        org_file=org_file if isinstance(org_file, str) else None,
        block=block if isinstance(block, str) else None,
        prompt=json.dumps(request.body.get("messages"), ensure_ascii=False),
    )


class UsageLog:
    """The usage log of one helper process; it warns once when it cannot write."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.lock = threading.Lock()
        self.warned = False
        self.unwritten = 0
        self.written = threading.Condition()

    @property
    def keeps_text(self) -> bool:
        """Return whether the user asked for prompts and replies to be kept."""
        return self.environ.get("CHAT_AI_LOG_TEXT", "") not in ("", "0", "no")

    def prices(self) -> dict[str, dict[str, Any]]:
        """Return the prices, or ours alone when the user's file is unreadable."""
        try:
            return load_prices(self.environ)
        except ConfigError as error:
            self._warn(str(error))
            return dict(DEFAULT_PRICES)

    def end(
        self,
        meter: Meter | None,
        outcome: str,
        error_kind: str | None = None,
        usage: Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> dict[str, Any] | None:
        """Record how the request of METER ended; return its row (None if unsent)."""
        row = self.row(meter, outcome, error_kind, usage, model)
        if row is not None:
            self.record(row)
        return row

    def row(
        self,
        meter: Meter | None,
        outcome: str,
        error_kind: str | None = None,
        usage: Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> dict[str, Any] | None:
        """Return the row of METER's request, ended with OUTCOME; None if unsent."""
        if meter is None:
            return None
        try:
            row = meter.row(
                outcome, error_kind, usage, model, self.prices(), self.keeps_text
            )
        except Exception as error:  # the log never fails a request
            self._warn(f"the usage log could not be written: {error}")
            return None
        with self.written:
            self.unwritten += 1
        return row

    def settle(self, timeout: float = 2.0) -> None:
        """Wait until the rows made by `row` are written, at most TIMEOUT seconds.

        A request's row is written just after its final event, so a
        caller who asks for the totals after an answer finds it in them.
        """
        with self.written:
            self.written.wait_for(lambda: self.unwritten <= 0, timeout)

    def record(self, row: Mapping[str, Any]) -> None:
        """Add ROW to the log; a failure is a warning, once per process."""
        try:
            self._insert(row)
        finally:
            with self.written:
                self.unwritten -= 1
                self.written.notify_all()

    def _insert(self, row: Mapping[str, Any]) -> None:
        with self.lock:
            try:
                path = log_file(self.environ)
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                with contextlib.closing(sqlite3.connect(path, timeout=0.5)) as db:
                    db.execute(SCHEMA)
                    db.execute(
                        f"INSERT INTO requests ({', '.join(COLUMNS)}) "
                        f"VALUES ({', '.join('?' for _ in COLUMNS)})",
                        [row.get(name) for name in COLUMNS],
                    )
                    db.commit()
            except (OSError, sqlite3.Error) as error:
                self._warn(
                    f"the usage log {log_file(self.environ)} was not written: {error}"
                )

    def _warn(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            sys.stderr.write(f"chat-ai: warning: {message}\n")
            sys.stderr.flush()


def totals(
    environ: Mapping[str, str], since: str | None = None, org_file: str | None = None
) -> list[dict[str, Any]]:
    """Return the log's totals by model (and block, for ORG_FILE), from SINCE on."""
    path = log_file(environ)
    if not path.exists():
        return []
    where, args = [], []
    if since:
        where.append("time >= ?")
        args.append(since)
    if org_file:
        where.append("org_file = ?")
        args.append(org_file)
    query = (
        "SELECT model, block, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
        "SUM(reasoning_tokens), SUM(total_tokens), SUM(cost), "
        "SUM(CASE WHEN cost IS NULL THEN 1 ELSE 0 END) FROM requests"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " GROUP BY model, block ORDER BY block, model"
    )
    with contextlib.closing(sqlite3.connect(path, timeout=2)) as db:
        rows = db.execute(query, args).fetchall()
    names = (
        "model",
        "block",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "total_tokens",
        "cost",
        "unpriced",
    )
    return [dict(zip(names, row, strict=True)) for row in rows]
