"""One queue per origin: how many requests go to a server at once, and when.

At most ``max_concurrent`` requests (6 by default) are in flight to one
origin (scheme, host and port); the others wait in order.  The number
in flight adapts as TCP's window does (AIMD): a 429 pauses the whole
origin for the wait the server asked for and halves the number (at
least 1), each reply that ends well raises it by one again, up to
``max_concurrent``.  The rate-limit headers of any answer
(``x-ratelimit-remaining-requests`` / ``-tokens`` and their
``x-ratelimit-reset-…``) slow the origin down before a 429 comes.  A
429 saying ``insufficient_quota`` stops the origin: every request
waiting for it, and every later one, ends with that error, until a
request already in flight ends well or the helper restarts.

A request refused with a 429 waits for the pause in the line, at the
place it had, so that the requests behind it are told it is ahead of
them.  While a request waits, it is told where it stands whenever that
changes, and again at least every ``heartbeat`` seconds: a request in
the line is alive, however long the line.  A long line is told at
most every ``ANNOUNCE_SPACING`` seconds per request in it, all at
once: each start moves every request in it up by one, and telling
them all each time would make a number of events that grows with the
square of its length.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from chat_ai_helper.errors import APIError, Cancelled

DEFAULT_MAX_CONCURRENT = 6
MAX_CONCURRENT = 64
MAX_PAUSE = 60.0
HEARTBEAT = 30.0
ANNOUNCE_SPACING = 0.01


def _nothing_queued(ahead: int, wait: float | None) -> None:
    pass


def _nothing() -> None:
    pass


_arrivals = itertools.count()


@dataclass
class Place:
    """How a request is told where it stands while it waits for its turn.

    QUEUED is called with the number of requests ahead of it and, while
    the origin is paused, the seconds left; again whenever either
    changes, and at least every HEARTBEAT seconds while it waits.
    STARTED is called when a request that waited is sent, TAKEN
    whenever a request has its turn, whether it waited or not.
    Requests wait in the ORDER they came in, which is also their place
    when they wait again after a 429.
    """

    queued: Callable[[int, float | None], None] = _nothing_queued
    started: Callable[[], None] = _nothing
    taken: Callable[[], None] = _nothing
    order: int = field(default_factory=lambda: next(_arrivals))
    heartbeat: float = HEARTBEAT


@dataclass(eq=False)
class _Waiter:
    place: Place
    told: tuple[int, float] | None = None
    told_at: float = 0.0


@dataclass
class OriginQueue:
    """The requests to one origin: how many are in flight, and who waits."""

    ceiling: int = DEFAULT_MAX_CONCURRENT
    limit: int = DEFAULT_MAX_CONCURRENT
    running: int = 0
    paused_until: float = 0.0
    stopped: APIError | None = None
    waiting: list[_Waiter] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    turns: int = 0
    announced: tuple[float, float] = (-math.inf, 0.0)
    stale: bool = False

    def set_ceiling(self, ceiling: int) -> None:
        """Allow at most CEILING requests in flight from now on."""
        with self.lock:
            if ceiling != self.ceiling:
                widened = self.limit == self.ceiling
                self.ceiling = ceiling
                self.limit = ceiling if widened else max(1, min(self.limit, ceiling))
                self.lock.notify_all()

    def take(self, place: Place, is_cancelled: Callable[[], bool]) -> int:
        """Wait for a turn to send a request, and return how many are then in flight.

        A request waits behind those that came in before it.  It raises
        `Cancelled` when IS_CANCELLED says so (call `wake` to have it
        looked at), and the origin's quota error when it is stopped.
        """
        with self.lock:
            waiter = next((w for w in self.waiting if w.place is place), None)
            try:
                if waiter is None:
                    if is_cancelled():
                        raise Cancelled("cancelled")
                    if self.stopped is not None:
                        raise _stopped_error(self.stopped)
                    if not self.waiting and self._open(time.monotonic()):
                        self.running += 1
                        self.turns += 1
                        place.taken()
                        return self.running
                    waiter = self._join(place)
                self._announce()
                while True:
                    if is_cancelled():
                        raise Cancelled("cancelled")
                    if self.stopped is not None:
                        raise _stopped_error(self.stopped)
                    now = time.monotonic()
                    if self.waiting[0] is waiter and self._open(now):
                        self.waiting.pop(0)
                        self.running += 1
                        self.turns += 1
                        place.started()
                        place.taken()
                        self._announce()
                        self.lock.notify_all()
                        return self.running
                    if now - waiter.told_at >= place.heartbeat:
                        waiter.told = None
                        self._announce()
                    elif self.stale:
                        self._announce()
                    pause = self.paused_until - now
                    beat = waiter.told_at + place.heartbeat - now
                    if self.stale:
                        beat = min(beat, self.announced[0] + self._spacing() - now)
                    self.lock.wait(min(pause, beat) if pause > 0 else beat)
            finally:
                if waiter is not None and waiter in self.waiting:
                    self.waiting.remove(waiter)
                    self._announce()
                    self.lock.notify_all()

    def give_back(self, ok: bool = False) -> None:
        """End a turn; OK when its reply ended well, which widens the window by one."""
        with self.lock:
            self.running = max(0, self.running - 1)
            if ok:
                self.limit = min(self.ceiling, self.limit + 1)
                self.stopped = None
            self.lock.notify_all()

    def pause(self, seconds: float) -> None:
        """Hold every request for SECONDS after a 429, and halve the window.

        The window halves once per pause: the other 429s that come while
        the origin is paused only make the pause longer, if they ask.
        """
        with self.lock:
            self._pause(seconds)
            self._announce()
            self.lock.notify_all()

    def refuse(self, place: Place, seconds: float) -> None:
        """End the turn of the request at PLACE, refused with a 429 asking SECONDS.

        The origin pauses (see `pause`), and the request waits for its
        next turn in line, at its PLACE: the next `take` of that place
        goes on waiting there, and tells the line; `leave` takes it out.
        """
        with self.lock:
            self.running = max(0, self.running - 1)
            if not any(w.place is place for w in self.waiting):
                self._join(place)
            self._pause(seconds)
            self.lock.notify_all()

    def leave(self, place: Place) -> None:
        """Take the request at PLACE out of line, if it waits there."""
        with self.lock:
            waiter = next((w for w in self.waiting if w.place is place), None)
            if waiter is not None:
                self.waiting.remove(waiter)
                self._announce()
                self.lock.notify_all()

    def _pause(self, seconds: float) -> None:
        seconds = min(max(seconds, 0.0), MAX_PAUSE)
        now = time.monotonic()
        if now >= self.paused_until:
            self.limit = max(1, self.limit // 2)
        self.paused_until = max(self.paused_until, now + seconds)

    def _join(self, place: Place) -> _Waiter:
        """Put the request at PLACE in line behind those that came before it."""
        waiter = _Waiter(place)
        before = [w for w in self.waiting if w.place.order < place.order]
        self.waiting.insert(len(before), waiter)
        return waiter

    def read_limits(self, headers: Mapping[str, str]) -> None:
        """Slow down as the rate-limit HEADERS of an answer say, before a 429.

        With no request or no token left, the origin waits until the
        matching reset; with fewer requests left than the window, the
        window shrinks to what is left.
        """
        waits: list[float] = []
        for kind in ("requests", "tokens"):
            left = _whole(headers.get(f"x-ratelimit-remaining-{kind}"))
            if left is None:
                continue
            if left <= 0:
                reset = _duration(headers.get(f"x-ratelimit-reset-{kind}"))
                waits.append(1.0 if reset is None else reset)
            elif kind == "requests":
                with self.lock:
                    self.limit = max(1, min(self.limit, left))
        if waits:
            seconds = min(max(waits), MAX_PAUSE)
            with self.lock:
                self.paused_until = max(self.paused_until, time.monotonic() + seconds)
                self._announce()
                self.lock.notify_all()

    def stop(self, error: APIError) -> None:
        """Stop the origin for ERROR, a quota error: nobody waiting is sent."""
        with self.lock:
            self.stopped = error
            self.lock.notify_all()

    def wake(self) -> None:
        """Have the waiting requests look again whether they were cancelled."""
        with self.lock:
            self.lock.notify_all()

    def _open(self, now: float) -> bool:
        return self.running < self.limit and now >= self.paused_until

    def _spacing(self) -> float:
        """Return the seconds between two announcements to the line as it is."""
        return ANNOUNCE_SPACING * len(self.waiting)

    def _announce(self) -> None:
        """Tell each waiting request where it stands, when that changed.

        Those that moved back are told first, the last first, so that
        no two requests are ever told the same place.  Unless one of
        them was never told, or the origin's pause began or ended, the
        line is told no sooner than `_spacing` after the last time: it
        is then `stale`, and the first waiting request to wake up after
        that tells it.  Call with the lock held.
        """
        now = time.monotonic()
        paused = self.paused_until if self.paused_until > now + 0.001 else 0.0
        last, last_paused = self.announced
        if (
            now - last < self._spacing()
            and (paused == 0.0) == (last_paused == 0.0)
            and all(waiter.told is not None for waiter in self.waiting)
        ):
            if not self.stale:
                self.stale = True
                self.lock.notify_all()
            return
        self.announced, self.stale = (now, paused), False
        line = list(enumerate(self.waiting))
        back = [(a, w) for a, w in line if w.told is not None and w.told[0] < a]
        moved = {id(w) for _, w in back}
        rest = [(a, w) for a, w in line if id(w) not in moved]
        for ahead, waiter in [*reversed(back), *rest]:
            told = (ahead, paused)
            if waiter.told != told:
                waiter.told = told
                waiter.told_at = now
                waiter.place.queued(ahead, round(paused - now, 3) if paused else None)


class OriginQueues:
    """The queues of every origin that one helper sends to."""

    def __init__(self) -> None:
        self._queues: dict[str, OriginQueue] = {}
        self._lock = threading.Lock()

    def get(self, origin: str, ceiling: int) -> OriginQueue:
        """Return the queue of ORIGIN, allowing CEILING requests in flight."""
        with self._lock:
            queue = self._queues.get(origin)
            if queue is None:
                queue = OriginQueue(ceiling, ceiling)
                self._queues[origin] = queue
        queue.set_ceiling(ceiling)
        return queue


def _stopped_error(error: APIError) -> APIError:
    """Return the error a request gets when its origin stopped for ERROR."""
    copy = APIError(
        f"{error.message} (requests to this server are stopped until one "
        "succeeds or the helper restarts; nothing was sent)",
        status=error.status,
        type=error.type,
        code=error.code,
    )
    copy.advice = error.advice
    return copy


def _whole(value: str | None) -> int | None:
    """Return header VALUE as a whole number, or None when it is not one."""
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(value: str | None) -> float | None:
    """Return VALUE, a reset time (``1s``, ``6m0s``, ``20ms``, ``0.5``), in seconds."""
    if value is None:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _UNITS[unit] for number, unit in parts)
