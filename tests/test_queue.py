"""The helper's per-origin queue: bounded concurrency, shared backoff, quota stop."""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY, run_cli
from loopback_server import LoopbackServer

from chat_ai_helper.concurrency import OriginQueue, Place, _duration
from chat_ai_helper.errors import APIError, Cancelled
from chat_ai_helper.usage import totals

PATIENCE = 60.0


class Helper:
    """A ``chat-ai --serve`` process, fed line by line, its events read as they come."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat_ai_helper", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.events: list[dict[str, Any]] = []
        self.arrived: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.arrived.put(json.loads(line))
        self.arrived.put(None)

    def send(self, *messages: dict[str, Any]) -> None:
        """Write MESSAGES, one line each."""
        assert self.process.stdin is not None
        for message in messages:
            self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def until(self, wanted: Any) -> dict[str, Any]:
        """Return the first event for which WANTED is true, reading on for it."""
        for seen in self.events:
            if wanted(seen):
                return seen
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            try:
                event = self.arrived.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            assert event is not None, "the helper exited"
            self.events.append(event)
            if wanted(event):
                return event
        raise AssertionError(f"no such event; got {self.events}")

    def finish(self) -> list[dict[str, Any]]:
        """Close the helper's input, wait for it to exit, and return every event."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=PATIENCE)
        while True:
            event = self.arrived.get(timeout=PATIENCE)
            if event is None:
                return self.events
            self.events.append(event)

    def of(self, request_id: str) -> list[dict[str, Any]]:
        """Return the events read so far about REQUEST_ID."""
        return [event for event in self.events if event.get("id") == request_id]


@pytest.fixture
def helper() -> Any:
    process = Helper()
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


def ask(
    server: LoopbackServer, request_id: str, model: str = "m", **fields: Any
) -> dict[str, Any]:
    return {
        "id": request_id,
        "base_url": server.base_url,
        "api_key": TEST_KEY,
        "body": {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": f"question {request_id}"}],
        },
        **fields,
    }


def answered(events: list[dict[str, Any]], request_id: str) -> bool:
    mine = [e for e in events if e.get("id") == request_id]
    text = "".join(e["text"] for e in mine if e["type"] == "delta")
    return mine[-1]["type"] == "done" and text == f"question {request_id}"


def test_forty_requests_to_a_server_taking_four_are_all_answered(
    server: LoopbackServer, helper: Helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_AI_TEST_DELAY", "0.2")
    helper.send(*(ask(server, str(n), "busy-4") for n in range(40)))
    events = helper.finish()
    assert all(answered(events, str(n)) for n in range(40))
    assert not [e for e in events if e["type"] == "error"]
    assert server.refused > 0
    # On a loaded machine a reused connection may also fail and be tried
    # again; what matters is that the 429s were shared.
    retries = [e for e in events if e["type"] == "retry" and e["status"] == 429]
    assert any(e["shared"] for e in retries)


def test_at_most_max_concurrent_requests_are_in_flight(
    server: LoopbackServer, helper: Helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_AI_TEST_DELAY", "0.3")
    helper.send(*(ask(server, str(n), "busy-100") for n in range(40)))
    events = helper.finish()
    assert all(answered(events, str(n)) for n in range(40))
    assert server.peak_in_flight <= 6
    queued = [e for e in events if e["type"] == "queued"]
    assert queued, "40 requests at once, 6 at a time: some must wait"
    for event in queued:
        mine = helper.of(event["id"])
        assert [e["type"] for e in mine].count("started") == 1
    assert max(e["ahead"] for e in queued) >= 1


def test_max_concurrent_of_the_request_and_of_the_provider(
    server: LoopbackServer, helper: Helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_AI_TEST_DELAY", "0.2")
    helper.send(*(ask(server, str(n), "busy-100", max_concurrent=2) for n in range(8)))
    events = helper.finish()
    assert all(answered(events, str(n)) for n in range(8))
    assert server.peak_in_flight <= 2


def test_a_429_pauses_the_whole_origin_and_every_request_is_answered(
    server: LoopbackServer, helper: Helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_AI_TEST_DELAY", "0.2")
    helper.send(*(ask(server, str(n), "busy-2") for n in range(12)))
    events = helper.finish()
    assert all(answered(events, str(n)) for n in range(12))
    paused = [e for e in events if e["type"] == "queued" and "wait" in e]
    assert paused, "requests waiting in the queue are told the origin pauses"
    assert all(0 < e["wait"] <= 1 for e in paused)


def test_a_queued_request_cancelled_is_never_sent(
    server: LoopbackServer, helper: Helper
) -> None:
    helper.send(ask(server, "blocker", "hang", max_concurrent=1))
    helper.until(lambda e: e["id"] == "blocker" and e["type"] == "delta")
    helper.send(ask(server, "waiting", max_concurrent=1))
    helper.until(lambda e: e["id"] == "waiting" and e["type"] == "queued")
    helper.send({"type": "cancel", "id": "waiting"})
    helper.send(ask(server, "next", max_concurrent=1))
    queued = helper.until(lambda e: e["id"] == "next" and e["type"] == "queued")
    assert queued["ahead"] == 0, "the cancelled request left the queue at once"
    helper.send({"type": "cancel", "id": "blocker"})
    helper.until(lambda e: e["id"] == "next" and e["type"] == "done")
    events = helper.finish()
    assert [e["type"] for e in helper.of("waiting")] == ["queued"]
    assert answered(events, "next")
    asked = [r["body"]["messages"][0]["content"] for r in server.received]
    assert asked == ["question blocker", "question next"]


def test_insufficient_quota_stops_the_origin_queue(
    server: LoopbackServer, helper: Helper
) -> None:
    helper.send(ask(server, "blocker", "hang", max_concurrent=1))
    helper.until(lambda e: e["id"] == "blocker" and e["type"] == "delta")
    helper.send(ask(server, "broke", "error-429-insufficient_quota", max_concurrent=1))
    for n in range(3):
        helper.send(ask(server, str(n), max_concurrent=1))
    helper.until(lambda e: e["id"] == "2" and e["type"] == "queued")
    helper.send({"type": "cancel", "id": "blocker"})
    for n in range(3):
        helper.until(lambda e, n=n: e["id"] == str(n) and e["type"] == "error")
    helper.send(ask(server, "later", max_concurrent=1))
    helper.until(lambda e: e["id"] == "later" and e["type"] == "error")
    helper.finish()
    assert [e["type"] for e in helper.of("broke")][-1] == "error"
    for request_id in ("0", "1", "2", "later"):
        (error,) = [e for e in helper.of(request_id) if e["type"] == "error"]
        assert error["code"] == "insufficient_quota"
        assert "stopped" in error["message"] and "nothing was sent" in error["message"]
        assert "\n" not in error["message"]
    assert not [e for e in helper.events if e["type"] == "retry"]
    models = [r["body"]["model"] for r in server.received]
    assert models == ["hang", "error-429-insufficient_quota"]
    logged = sum(row["requests"] for row in totals(os.environ, None, None))
    assert logged == 2, "the requests never sent have no row in the usage log"


def test_rate_limit_headers_slow_the_origin_before_a_429(
    server: LoopbackServer, helper: Helper
) -> None:
    helper.send(ask(server, "blocker", "hang", max_concurrent=1))
    helper.until(lambda e: e["id"] == "blocker" and e["type"] == "delta")
    helper.send(ask(server, "spent", "spent", max_concurrent=1))
    helper.send(ask(server, "after", max_concurrent=1))
    helper.until(lambda e: e["id"] == "after" and e["type"] == "queued")
    helper.send({"type": "cancel", "id": "blocker"})
    helper.until(lambda e: e["id"] == "after" and e["type"] == "done")
    helper.finish()
    queued = [e for e in helper.of("after") if e["type"] == "queued"]
    waits = [e["wait"] for e in queued if "wait" in e]
    assert waits and 0 < waits[0] <= 1
    assert server.refused == 0


def test_the_command_line_takes_max_concurrent(server: LoopbackServer) -> None:
    result = run_cli("--base-url", server.base_url, "--max-concurrent", "0", "hi")
    assert result.returncode != 0
    assert b"max_concurrent must be a whole number from 1 to 64" in result.stderr
    result = run_cli("--base-url", server.base_url, "--max-concurrent", "2", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi\n"


def test_a_provider_s_max_concurrent_is_checked(tmp_path: Path) -> None:
    providers = tmp_path / "providers.json"
    providers.write_text(
        json.dumps({"mine": {"base_url": "http://127.0.0.1:9/v1", "max_concurrent": 0}})
    )
    result = run_cli(
        "--provider", "mine", "hi", env={"CHAT_AI_PROVIDERS_FILE": str(providers)}
    )
    assert result.returncode != 0
    assert b"max_concurrent must be a whole number from 1 to 64, not 0" in result.stderr


def test_the_window_halves_once_per_pause_and_grows_by_one() -> None:
    origin = OriginQueue(8, 8)
    origin.pause(0.5)
    assert origin.limit == 4
    origin.pause(0.5)
    assert origin.limit == 4, "429s during the same pause halve it once"
    origin.paused_until = 0.0
    origin.pause(0.0)
    assert origin.limit == 2
    origin.paused_until = 0.0
    for _ in range(3):
        origin.pause(0.0)
        origin.paused_until = 0.0
    assert origin.limit == 1
    origin.running = 1
    origin.give_back(ok=True)
    assert origin.limit == 2
    for _ in range(20):
        origin.give_back(ok=True)
    assert origin.limit == 8


def test_rate_limit_headers_narrow_the_window() -> None:
    origin = OriginQueue(6, 6)
    origin.read_limits({"x-ratelimit-remaining-requests": "3"})
    assert origin.limit == 3
    origin.read_limits(
        {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}
    )
    assert origin.paused_until - time.monotonic() > 59


def test_a_stopped_origin_refuses_new_requests_until_one_succeeds() -> None:
    origin = OriginQueue(2, 2)
    origin.stop(APIError("quota", status=429, code="insufficient_quota"))
    with pytest.raises(APIError):
        origin.take(Place(), lambda: False)
    origin.give_back(ok=True)
    assert origin.take(Place(), lambda: False) == 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("0.5", 0.5), ("1h2m3.5s", 3723.5)],
)
def test_reset_durations_are_read(text: str, seconds: float) -> None:
    assert _duration(text) == pytest.approx(seconds)


def test_an_unreadable_reset_duration_is_none() -> None:
    assert _duration("soon") is None


def places_told(events: list[dict[str, Any]]) -> list[dict[str, int]]:
    """Return, after each event, the place each request in line was last told."""
    places: dict[str, int] = {}
    seen = []
    for event in events:
        if event["type"] == "queued":
            places[event["id"]] = event["ahead"]
        elif event["type"] in ("started", "done", "error"):
            places.pop(event["id"], None)
        seen.append(dict(places))
    return seen


def test_no_two_requests_in_line_are_ever_told_the_same_place(
    server: LoopbackServer, helper: Helper, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_AI_TEST_DELAY", "0.1")
    helper.send(*(ask(server, str(n), "busy-1") for n in range(12)))
    events = helper.finish()
    assert all(answered(events, str(n)) for n in range(12))
    assert [e for e in events if e["type"] == "retry" and e["status"] == 429]
    for places in places_told(events):
        assert len(set(places.values())) == len(places), places


def test_a_request_refused_with_a_429_waits_in_line_at_its_place(
    server: LoopbackServer, helper: Helper
) -> None:
    helper.send(ask(server, "held", "held", max_concurrent=2))
    helper.until(lambda e: e["id"] == "held" and e["type"] == "delta")
    helper.send(ask(server, "refused", "flaky-1-429", max_concurrent=2))
    helper.until(lambda e: e["id"] == "refused" and e["type"] == "retry")
    helper.send(ask(server, "after", max_concurrent=2))
    helper.until(lambda e: e["id"] == "after" and e["type"] == "queued")
    assert places_told(helper.events)[-1] == {"refused": 0, "after": 1}
    server.release()
    helper.until(lambda e: e["id"] == "after" and e["type"] == "done")
    events = helper.finish()
    started = [e["id"] for e in events if e["type"] == "started"]
    assert started == ["refused", "after"]
    models = [r["body"]["model"] for r in server.received]
    assert sorted(models[2:]) == ["flaky-1-429", "m"], "both may be in flight at once"
    assert models[:2] == ["held", "flaky-1-429"]


def test_a_request_in_line_is_told_its_place_again_while_it_waits(
    server: LoopbackServer, helper: Helper
) -> None:
    helper.send(ask(server, "blocker", "hang", max_concurrent=1))
    helper.until(lambda e: e["id"] == "blocker" and e["type"] == "delta")
    helper.send(ask(server, "waiting", max_concurrent=1, timeout=1))
    for told in range(1, 4):
        helper.until(
            lambda e, told=told: (
                len([e for e in helper.of("waiting") if e["type"] == "queued"]) >= told
            )
        )
    queued = [e for e in helper.of("waiting") if e["type"] == "queued"]
    assert [e["ahead"] for e in queued] == [0] * len(queued)
    helper.send({"type": "cancel", "id": "blocker"})
    helper.until(lambda e: e["id"] == "waiting" and e["type"] == "done")
    helper.finish()


def test_places_stay_true_when_one_leaves_and_the_ceiling_shrinks(
    server: LoopbackServer, helper: Helper
) -> None:
    for blocker in ("a", "b"):
        helper.send(ask(server, blocker, "hang", max_concurrent=2))
        helper.until(lambda e, b=blocker: e["id"] == b and e["type"] == "delta")
    for waiting in ("w1", "w2", "w3"):
        helper.send(ask(server, waiting, max_concurrent=2))
        helper.until(lambda e, w=waiting: e["id"] == w and e["type"] == "queued")
    helper.send(ask(server, "narrow", max_concurrent=1))
    helper.until(lambda e: e["id"] == "narrow" and e["type"] == "queued")
    assert places_told(helper.events)[-1] == {"w1": 0, "w2": 1, "w3": 2, "narrow": 3}
    helper.send({"type": "cancel", "id": "w2"})
    helper.until(lambda e: e["id"] == "narrow" and e.get("ahead") == 2)
    helper.send({"type": "cancel", "id": "a"})
    helper.send({"type": "cancel", "id": "b"})
    helper.until(lambda e: e["id"] == "narrow" and e["type"] == "done")
    events = helper.finish()
    assert [e["type"] for e in helper.of("w2")] == ["queued"]
    # Emacs forgets a request when it cancels it; the helper says nothing more.
    for places in places_told([e for e in events if e["id"] != "w2"]):
        assert len(set(places.values())) == len(places), places
    asked = [r["body"]["messages"][0]["content"] for r in server.received]
    assert asked == [f"question {n}" for n in ("a", "b", "w1", "w3", "narrow")]


def places_noted(count: int, note: Callable[[int, int], None]) -> list[Place]:
    """Return COUNT places; the Nth calls NOTE with N and each place it is told."""

    def noting(n: int) -> Callable[[int, float | None], None]:
        return lambda ahead, wait: note(n, ahead)

    return [Place(queued=noting(n)) for n in range(count)]


def test_a_long_line_is_told_its_places_all_at_once_not_at_every_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("chat_ai_helper.concurrency.ANNOUNCE_SPACING", 3600.0)
    origin = OriginQueue(1, 1)
    told: list[tuple[int, int]] = []
    places = places_noted(50, lambda n, ahead: told.append((n, ahead)))
    with origin.lock:
        for place in places:
            origin._join(place)
            origin._announce()
        assert told == [(n, n) for n in range(50)], "each one is told as it comes"
        told.clear()
        for _ in range(10):
            origin.waiting.pop(0)
            origin._announce()
        assert told == [] and origin.stale
        origin.announced = (-math.inf, 0.0)
        origin._announce()
    assert sorted(told) == [(n, n - 10) for n in range(10, 50)]
    assert not origin.stale


def test_a_line_told_later_is_told_by_the_requests_that_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("chat_ai_helper.concurrency.ANNOUNCE_SPACING", 0.5)
    origin = OriginQueue(1, 1)
    origin.take(Place(), lambda: False)
    told: dict[int, int] = {}
    places = places_noted(5, told.__setitem__)
    left = threading.Event()

    def wait_in_line(place: Place) -> None:
        with contextlib.suppress(Cancelled):
            origin.take(place, left.is_set)

    threads = [
        threading.Thread(target=wait_in_line, args=(place,), daemon=True)
        for place in places
    ]
    for thread in threads:
        thread.start()
        deadline = time.monotonic() + PATIENCE
        while len(told) < threads.index(thread) + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert told == {n: n for n in range(5)}
    origin.leave(places[0])
    deadline = time.monotonic() + PATIENCE
    while told != {0: 0, 1: 0, 2: 1, 3: 2, 4: 3} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert told == {0: 0, 1: 0, 2: 1, 3: 2, 4: 3}
    left.set()
    origin.wake()
    for thread in threads[1:]:
        thread.join(PATIENCE)
