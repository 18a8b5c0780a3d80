"""The HTTP side: send a chat request and turn the reply into events."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests import Response

from chat_ai_helper import __version__
from chat_ai_helper.concurrency import OriginQueue, OriginQueues, Place
from chat_ai_helper.errors import (
    APIError,
    Cancelled,
    ChatAIError,
    NetworkError,
    StreamError,
    redact,
    shown,
)
from chat_ai_helper.reasoning import ThinkSplitter, reasoning_text, split_whole
from chat_ai_helper.request import CONNECT_TIMEOUT, ChatRequest
from chat_ai_helper.urls import origin

USER_AGENT = f"ob-chat-ai/{__version__}"
SSE_STARTS = (b"data:", b":", b"event:", b"id:", b"retry:")
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass
class Delta:
    """A piece of reply text for one choice."""

    text: str
    choice: int = 0


@dataclass
class Reasoning:
    """A piece of a reasoning model's thinking for one choice, apart from its reply."""

    text: str
    choice: int = 0


@dataclass
class ToolCall:
    """A whole call of a tool that the model asks for in one choice of its reply."""

    call_id: str
    name: str
    arguments: str
    choice: int = 0


@dataclass
class Done:
    """The end of a reply: why each choice stopped, and the tokens used."""

    finish_reasons: list[str | None] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    model: str | None = None
    files: list[str] | None = None


@dataclass
class Retry:
    """A failed attempt that will be made again after WAIT seconds.

    A SHARED retry is a 429 that came while other requests to the same
    origin were in flight: the origin's queue waits, and the request's
    own retries are not used up.  STATUS is the HTTP status, if any.
    """

    attempt: int
    retries: int
    wait: float
    message: str
    status: int | None = None
    shared: bool = False


Event = Delta | Reasoning | ToolCall | Done | Retry


def retry_line(retry: Retry) -> str:
    """Return one line telling the user about RETRY."""
    if retry.shared:
        return (
            f"{retry.message}; waiting {retry.wait:.1f} s with the other "
            "requests to this server"
        )
    return (
        f"{retry.message}; retrying in {retry.wait:.1f} s "
        f"({retry.attempt} of {retry.retries})"
    )


NOT_RETRIED = (requests.exceptions.SSLError, requests.exceptions.ProxyError)
RETRY_STATUSES = (408, 409, 429, 500, 502, 503, 504)
BACKOFF_START = 0.5
BACKOFF_CAP = 8.0
MAX_SERVER_WAIT = 60.0


class Cancel:
    """A switch that stops a request from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._responses: list[requests.Response] = []
        self._wakers: list[Callable[[], None]] = []

    def __call__(self) -> None:
        """Stop the request: shut its connection down, so that a blocked read ends."""
        with self._lock:
            self._event.set()
            responses, self._responses = self._responses, []
            wakers = list(self._wakers)
        for response in responses:
            _hang_up(response)
        for wake in wakers:
            wake()

    def wakes(self, wake: Callable[[], None]) -> None:
        """Call WAKE when the request is cancelled, to stop its waiting."""
        with self._lock:
            self._wakers.append(wake)

    @property
    def is_set(self) -> bool:
        """Return whether the request was cancelled."""
        return self._event.is_set()

    def sleep(self, seconds: float) -> None:
        """Wait SECONDS, or until the request is cancelled."""
        self._event.wait(seconds)

    def watch(self, response: requests.Response) -> None:
        """Close RESPONSE when the request is cancelled, or now if it was."""
        with self._lock:
            if not self._event.is_set():
                self._responses.append(response)
                return
        _hang_up(response)


def _hang_up(response: requests.Response) -> None:
    """Shut down RESPONSE's socket, waking a thread blocked reading it.

    Closing a socket does not wake a read blocked on it in another
    thread; shutting it down does.
    """
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    response.close()


class Client:
    """Send chat requests, keeping one HTTP session per base URL.

    One client may serve several threads at once.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()
        self.queues = OriginQueues()

    def _session(self, base_url: str) -> requests.Session:
        with self._lock:
            session = self._sessions.get(base_url)
            if session is None:
                session = requests.Session()
                session.headers["User-Agent"] = USER_AGENT
                self._sessions[base_url] = session
            return session

    def close(self) -> None:
        """Close every open connection."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def complete(
        self,
        request: ChatRequest,
        before_wait: Callable[[], None] | None = None,
        cancel: Cancel | None = None,
        place: Place | None = None,
    ) -> Iterator[Event]:
        """Send REQUEST and yield the reply as `Delta`s and a final `Done`.

        BEFORE_WAIT, when given, is called each time every event of what
        has come so far was yielded and reading on may wait for the
        network: the moment for a caller to flush what it buffered.
        CANCEL, when given, stops the request from another thread; the
        request then ends with `Cancelled`.  The request waits its turn
        in its origin's queue (`chat_ai_helper.concurrency`); PLACE, when
        given, is told where it stands there.
        """
        cancel = cancel or Cancel()
        turn = _Turn(
            self.queues.get(str(origin(request.base_url)), request.max_concurrent),
            place or Place(),
            cancel,
        )
        try:
            for event in self._complete(request, before_wait or _nothing, cancel, turn):
                if isinstance(event, Done):
                    turn.end(ok=True)
                yield event
        except Exception as error:
            if cancel.is_set:
                raise Cancelled("cancelled") from None
            if isinstance(error, requests.exceptions.ContentDecodingError):
                raise StreamError(_UNDECODABLE) from None
            if isinstance(error, requests.exceptions.ChunkedEncodingError):
                raise StreamError(_CUT_SHORT) from None
            if isinstance(error, requests.RequestException):
                raise _network_error(error, request) from None
            raise
        finally:
            turn.end()

    def _post(
        self, request: ChatRequest, cancel: Cancel, turn: _Turn
    ) -> Iterator[Retry | Response]:
        """Post REQUEST, yielding a `Retry` before each new attempt, then the response.

        Each attempt waits for its TURN in the origin's queue.  Connection
        failures, rate limits and server errors are tried again, up to
        ``request.max_retries`` times, after a wait that doubles each
        time (with jitter) or that the server asks for; a 429 pauses the
        whole origin, and the request waits for it in the origin's queue,
        at its place; one that came while other requests to it were in
        flight does not count against the request's retries.
        Running out of quota and other client errors are not tried again.
        A request cancelled before it is sent is not sent.
        """
        data = request.payload()
        attempt = 0
        while True:
            last = attempt >= request.max_retries
            crowded = turn.take() > 1
            turns = turn.queue.turns
            if cancel.is_set:
                raise Cancelled("cancelled")
            status: int | None = None
            shared = False
            try:
                response = self._session(request.base_url).post(
                    request.url,
                    data=data,
                    headers=request.http_headers(),
                    timeout=(min(CONNECT_TIMEOUT, request.timeout), request.timeout),
                    stream=True,
                    allow_redirects=False,
                )
            except requests.ConnectionError as error:
                turn.end()
                if last or cancel.is_set or isinstance(error, NOT_RETRIED):
                    raise
                failure = str(_network_error(error, request))
                wait = _backoff(attempt)
            else:
                cancel.watch(response)
                turn.queue.read_limits(response.headers)
                status = response.status_code
                shared = status == 429 and (
                    crowded or turn.queue.turns != turns or turn.queue.running > 1
                )
                if status not in RETRY_STATUSES or (last and not shared):
                    yield response
                    return
                with _not_reused(response):
                    problem = _api_error(response, request.api_key)
                if not _worth_retrying(response, problem):
                    yield response
                    return
                failure = str(problem)
                wait = _server_wait(response) or _backoff(attempt)
                if status == 429:
                    turn.refused(wait)
                else:
                    turn.end()
            if not shared:
                attempt += 1
            yield Retry(attempt, request.max_retries, wait, failure, status, shared)
            if status != 429:
                cancel.sleep(wait)
            if cancel.is_set:
                raise Cancelled("cancelled")

    def _complete(
        self,
        request: ChatRequest,
        before_wait: Callable[[], None],
        cancel: Cancel,
        turn: _Turn,
    ) -> Iterator[Event]:
        for outcome in self._post(request, cancel, turn):
            if isinstance(outcome, Retry):
                yield outcome
            else:
                response = outcome
        with response:
            if cancel.is_set:
                raise Cancelled("cancelled")
            if 300 <= response.status_code < 400:
                with _not_reused(response):
                    raise _redirect_error(response, request)
            if response.status_code >= 400:
                with _not_reused(response):
                    error = _api_error(response, request.api_key)
                if error.code == "insufficient_quota":
                    turn.queue.stop(error)
                raise _missing_key_advice(error, request)
            if request.endpoint == "images":
                yield from self._read_images(response, request)
                return
            if not request.stream:
                yield from _read_completion(response, response.content, request)
                return
            chunks = _announcing_waits(_arriving(response), before_wait)
            head, is_stream = _sniff(chunks)
            if is_stream:
                yield from _read_stream(itertools.chain([head], chunks), request)
            else:
                body = head + b"".join(chunks)
                yield from _read_completion(response, body, request)

    def _read_images(self, response: Response, request: ChatRequest) -> Iterator[Event]:
        """Write the images of RESPONSE where REQUEST says, and yield a `Done`."""
        from chat_ai_helper.images import read_images

        payload = _json_body(response, response.content, request.api_key)
        if isinstance(payload, dict) and "error" in payload:
            raise _error_from_payload(payload, response.status_code, request.api_key)
        key_headers = {
            name: value
            for name, value in request.http_headers().items()
            if name.lower() not in ("content-type", "accept")
        }
        for files in read_images(
            response,
            payload,
            str(request.output),
            self._session(request.base_url),
            key_headers,
            str(origin(request.base_url)),
            request.timeout,
        ):
            usage = payload.get("usage")
            yield Done(["stop"] * len(files), usage, request.body.get("model"), files)


def _nothing() -> None:
    pass


class _Turn:
    """One request's turn in its origin's queue: taken, then given back once."""

    def __init__(self, queue: OriginQueue, place: Place, cancel: Cancel) -> None:
        self.queue = queue
        self.place = place
        self.cancel = cancel
        self.held = False
        cancel.wakes(queue.wake)

    def take(self) -> int:
        """Wait for the turn, and return how many requests are then in flight."""
        running = self.queue.take(self.place, lambda: self.cancel.is_set)
        self.held = True
        return running

    def refused(self, seconds: float) -> None:
        """Give the turn back after a 429 asking SECONDS, and wait in line again."""
        if self.held:
            self.held = False
            self.queue.refuse(self.place, seconds)

    def end(self, ok: bool = False) -> None:
        """Give the turn back, if held, else leave the line; OK: it ended well."""
        if self.held:
            self.held = False
            self.queue.give_back(ok)
        else:
            self.queue.leave(self.place)


@contextlib.contextmanager
def _not_reused(response: Response) -> Iterator[None]:
    """Close RESPONSE's connection when done with it, instead of pooling it.

    A server that answers with an error or a redirect may not have read
    the whole request, and would read its rest as the next request on
    the same connection.
    """
    connection = getattr(response.raw, "connection", None)
    try:
        yield
    finally:
        response.close()
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


def _redirect_error(response: Response, request: ChatRequest) -> APIError:
    """Return the error for a redirect, which is not followed, saying where to."""
    location = response.headers.get("Location")
    if not location:
        return APIError(
            "the server answered with a redirect but no address",
            status=response.status_code,
        )
    target = redact(_snippet(urljoin(request.url, location)), request.api_key)
    return APIError(
        f"the server tried to send the request to {target}; redirects are not "
        "followed, so that no key or header goes where you did not send it "
        "(if you trust that address, make it the base URL)",
        status=response.status_code,
    )


def _missing_key_advice(error: APIError, request: ChatRequest) -> APIError:
    """Return ERROR, saying which key was not sent when the server wants one."""
    if error.status == 401 and request.api_key is None and request.missing_key:
        error.advice = request.missing_key
    return error


def _worth_retrying(response: Response, error: APIError) -> bool:
    """Return whether ERROR, from RESPONSE, may pass when tried again.

    Running out of quota comes as a 429 like a rate limit, but waiting
    does not mend it; and the server may say itself not to try again.
    """
    return (
        response.headers.get("x-should-retry") != "false"
        and error.code != "insufficient_quota"
    )


def _backoff(attempt: int) -> float:
    """Return the wait before retry ATTEMPT + 1: doubling, capped, with jitter."""
    return min(BACKOFF_START * 2.0**attempt, BACKOFF_CAP) * random.uniform(0.75, 1.0)


def _server_wait(response: Response) -> float | None:
    """Return the seconds RESPONSE asks to wait before trying again, if it says.

    ``retry-after-ms`` and ``retry-after`` (seconds or an HTTP date) are
    honoured up to a minute; a longer or unreadable wait is ignored.
    """
    headers = response.headers
    wait: float | None = None
    with contextlib.suppress(ValueError):
        if headers.get("retry-after-ms"):
            wait = float(headers["retry-after-ms"]) / 1000
        elif headers.get("retry-after"):
            value = headers["retry-after"]
            try:
                wait = float(value)
            except ValueError:
                import email.utils

                when = email.utils.parsedate_to_datetime(value)
                wait = when.timestamp() - time.time()
    if wait is None or not 0 <= wait <= MAX_SERVER_WAIT:
        return None
    return wait


def _announcing_waits(
    chunks: Iterator[bytes], before_wait: Callable[[], None]
) -> Iterator[bytes]:
    """Yield CHUNKS, calling BEFORE_WAIT before each read that may block."""
    while True:
        before_wait()
        chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk


def _arriving(response: Response) -> Iterator[bytes]:
    """Yield the body of RESPONSE, decompressed, in pieces as they arrive.

    Whatever the framing (chunked, a Content-Length, or a body that ends
    when the server closes the connection), each read returns the bytes
    that have come, rather than waiting for a chunk or a buffer to fill.
    urllib3 before 2.3 cannot read that way: there, chunks are read as
    ``requests`` reads them.
    """
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:
        yield from response.iter_content(chunk_size=None)
        return
    from urllib3 import exceptions

    while True:
        try:
            data = read1(READ_SIZE, decode_content=True)
        except exceptions.DecodeError:
            raise StreamError(_UNDECODABLE) from None
        except exceptions.ReadTimeoutError as error:
            raise requests.exceptions.ReadTimeout(error) from None
        except exceptions.SSLError as error:
            raise requests.exceptions.SSLError(error) from None
        except (exceptions.ProtocolError, OSError):
            raise StreamError(_CUT_SHORT) from None
        if not data:
            return
        yield data


READ_SIZE = 64 * 1024
_CUT_SHORT = "the connection closed mid-stream; the reply is incomplete"
_UNDECODABLE = (
    "the reply could not be decompressed (its Content-Encoding is not what "
    "the server sent); the reply is incomplete"
)


def _sniff(chunks: Iterator[bytes]) -> tuple[bytes, bool]:
    """Read CHUNKS until their start tells a stream from a whole reply.

    Return what was read and whether it starts like Server-Sent Events.
    """
    head = b""
    for chunk in chunks:
        head += chunk
        start = head.lstrip()
        if start.startswith(UTF8_BOM):
            start = start[len(UTF8_BOM) :].lstrip()
        elif UTF8_BOM.startswith(start):
            continue
        if start.startswith(SSE_STARTS):
            return head, True
        if start and not any(prefix.startswith(start) for prefix in SSE_STARTS):
            return head, False
    return head, False


def _read_completion(
    response: requests.Response, content: bytes, request: ChatRequest
) -> Iterator[Event]:
    secret = request.api_key
    payload = _json_body(response, content, secret)

    def malformed(problem: str) -> APIError:
        return APIError(
            redact(f"the server's reply is malformed: {problem}", secret),
            status=response.status_code,
        )

    if not isinstance(payload, dict):
        raise malformed(f"it is {shown(payload)}, not an object")
    if payload.get("error") is not None:
        raise _error_from_payload(payload, response.status_code, secret)
    choices = payload.get("choices")
    if not isinstance(choices, list):
        raise APIError("the reply has no choices", status=response.status_code)
    reasons: dict[int, str | None] = {}
    for position, choice in enumerate(choices):
        where = f"choices[{position}]"
        if not isinstance(choice, dict):
            raise malformed(f"{where} is {shown(choice)}, not an object")
        index = _choice_index(choice, position, request, where, malformed)
        message = _field(choice, "message", dict, where, malformed) or {}
        text = _field(message, "content", str, f"{where}.message", malformed)
        refusal = _field(message, "refusal", str, f"{where}.message", malformed)
        legacy = _field(choice, "text", str, where, malformed)
        thinking, answer = split_whole(text or legacy or "")
        thinking = reasoning_text(message) + thinking
        if thinking:
            yield Reasoning(thinking, index)
        yield Delta(answer or refusal or "", index)
        calls = _field(message, "tool_calls", list, f"{where}.message", malformed)
        pieces = ToolCallPieces()
        for number, call in enumerate(calls or []):
            pieces.add(call, number, index, f"{where}.message.tool_calls", malformed)
        yield from pieces.calls(malformed)
        reasons[index] = _field(choice, "finish_reason", str, where, malformed)
    yield _done(reasons, payload)


def _read_stream(chunks: Iterator[bytes], request: ChatRequest) -> Iterator[Event]:
    from chat_ai_helper.sse import iter_sse_events

    secret = request.api_key
    reasons: dict[int, str | None] = {}
    last: dict[str, Any] = {}
    splitters: dict[int, ThinkSplitter] = {}
    pieces = ToolCallPieces()

    def malformed(problem: str) -> StreamError:
        return StreamError(
            redact(
                f"the stream held a malformed chunk: {problem}; "
                "the reply is incomplete",
                secret,
            )
        )

    try:
        for event_type, data in iter_sse_events(chunks):
            if data.strip() == "[DONE]":
                break
            try:
                chunk = _loads(data)
            except (ValueError, RecursionError):
                if event_type == "error":
                    raise APIError(redact(_snippet(data), secret)) from None
                raise StreamError(
                    f"the stream held something that is not JSON: "
                    f"{redact(_snippet(data), secret)}"
                ) from None
            if not isinstance(chunk, dict):
                raise malformed(f"{shown(chunk)} is not an object")
            if chunk.get("error") is not None or event_type == "error":
                raise _error_from_payload(chunk, None, secret)
            choices = chunk.get("choices")
            if choices is not None and not isinstance(choices, list):
                raise malformed(f"choices is {shown(choices)}, not a list")
            for position, choice in enumerate(choices or []):
                where = f"choices[{position}]"
                if not isinstance(choice, dict):
                    raise malformed(f"{where} is {shown(choice)}, not an object")
                index = _choice_index(choice, 0, request, where, malformed)
                delta = _field(choice, "delta", dict, where, malformed) or {}
                text = _field(delta, "content", str, f"{where}.delta", malformed)
                refusal = _field(delta, "refusal", str, f"{where}.delta", malformed)
                thinking = reasoning_text(delta)
                if thinking:
                    yield Reasoning(thinking, index)
                text = text or _field(choice, "text", str, where, malformed)
                if text:
                    splitter = splitters.setdefault(index, ThinkSplitter())
                    yield from _split_parts(splitter.feed(text), index)
                if refusal:
                    yield Delta(refusal, index)
                calls = _field(delta, "tool_calls", list, f"{where}.delta", malformed)
                for number, call in enumerate(calls or []):
                    pieces.add(
                        call, number, index, f"{where}.delta.tool_calls", malformed
                    )
                reason = _field(choice, "finish_reason", str, where, malformed)
                reasons.setdefault(index, None)
                if reason:
                    reasons[index] = reason
            for name in ("usage", "model"):
                if chunk.get(name):
                    last[name] = chunk[name]
        else:
            raise StreamError("the stream ended before [DONE]; the reply is incomplete")
    except requests.exceptions.ChunkedEncodingError:
        raise StreamError(_CUT_SHORT) from None
    # Read on to the end of the body, as OpenAI's own SDK does, so that the
    # connection goes back to the pool before the next request needs it.
    with contextlib.suppress(requests.RequestException, StreamError):
        for _ in chunks:
            pass
    for index, splitter in sorted(splitters.items()):
        yield from _split_parts(splitter.finish(), index)
    yield from pieces.calls(malformed)
    yield _done(reasons, last)


class ToolCallPieces:
    """The tool calls of a reply, put together from the pieces the server sends.

    A stream sends each call in pieces, told apart by the call's
    ``index``: the first piece has its id and name, the later ones more
    of its arguments.  A whole reply sends each call whole, in one piece.
    """

    def __init__(self) -> None:
        self.parts: dict[tuple[int, int], dict[str, str]] = {}

    def add(
        self,
        call: Any,
        position: int,
        choice: int,
        where: str,
        malformed: Callable[[str], ChatAIError],
    ) -> None:
        """Add CALL, a piece at POSITION in a list of tool calls of CHOICE."""
        where = f"{where}[{position}]"
        if not isinstance(call, dict):
            raise malformed(f"{where} is {shown(call)}, not an object")
        number = call.get("index", position)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise malformed(f"{where}.index is {shown(number)}, not a whole number")
        function = _field(call, "function", dict, where, malformed) or {}
        part = self.parts.setdefault(
            (choice, number), {"call_id": "", "name": "", "arguments": ""}
        )
        call_id = _field(call, "id", str, where, malformed)
        if call_id:
            part["call_id"] = call_id
        for name in ("name", "arguments"):
            value = _field(function, name, str, f"{where}.function", malformed)
            if value:
                part[name] += value

    def calls(self, malformed: Callable[[str], ChatAIError]) -> Iterator[ToolCall]:
        """Yield each whole call, in order; a call without a name is malformed."""
        for (choice, number), part in sorted(self.parts.items()):
            if not part["name"]:
                raise malformed(f"tool call {number} of choice {choice} has no name")
            yield ToolCall(
                part["call_id"] or f"call_{choice}_{number}",
                part["name"],
                part["arguments"] or "{}",
                choice,
            )


def _split_parts(parts: list[tuple[bool, str]], index: int) -> Iterator[Event]:
    """Yield PARTS of choice INDEX, as told by a `ThinkSplitter`, as events."""
    for thinking, text in parts:
        yield Reasoning(text, index) if thinking else Delta(text, index)


def _done(reasons: dict[int, str | None], payload: dict[str, Any]) -> Done:
    """Return the end of a reply: REASONS by choice, and what PAYLOAD says."""
    usage = payload.get("usage")
    model = payload.get("model")
    return Done(
        [reasons[index] for index in sorted(reasons)],
        usage if isinstance(usage, dict) else None,
        model if isinstance(model, str) else None,
    )


def _choice_index(
    choice: dict[str, Any],
    default: int,
    request: ChatRequest,
    where: str,
    malformed: Callable[[str], ChatAIError],
) -> int:
    """Return the index of CHOICE, DEFAULT when it has none.

    It must be a whole number below the number of choices asked for.
    """
    index = choice.get("index")
    count = request.body.get("n", 1)
    if index is None:
        if default >= count:
            raise malformed(f"{where} is a choice more than the {count} asked for")
        return default
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        expected = "0" if count == 1 else f"from 0 to {count - 1}"
        raise malformed(f"{where}.index is {shown(index)}, not {expected}")
    return index


def _field(
    holder: dict[str, Any],
    name: str,
    kind: type,
    where: str,
    malformed: Callable[[str], ChatAIError],
) -> Any:
    """Return HOLDER's NAME, None when missing or null; it must be of KIND."""
    value = holder.get(name)
    if value is not None and not isinstance(value, kind):
        raise malformed(
            f"{where}.{name} is {shown(value)}, not {KIND_NAMES.get(kind, 'valid')}"
        )
    return value


KIND_NAMES: dict[type, str] = {dict: "an object", str: "a string", list: "a list"}


def _loads(text: str | bytes) -> Any:
    """Return the JSON value of TEXT; NaN and Infinity, which are not JSON, fail."""
    return json.loads(text, parse_constant=_not_json)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_body(response: requests.Response, content: bytes, secret: str | None) -> Any:
    if not content.strip():
        raise APIError(
            "the server answered with an empty body", status=response.status_code
        )
    try:
        return _loads(content)
    except (ValueError, RecursionError):
        content_type = response.headers.get("Content-Type") or "no content type"
        text = content.decode("utf-8", errors="replace")
        raise APIError(
            f"the server answered with {content_type}, not JSON: "
            f"{redact(_snippet(text), secret)}",
            status=response.status_code,
        ) from None


def _api_error(response: requests.Response, secret: str | None) -> APIError:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        return _error_from_payload(
            payload,
            response.status_code,
            secret,
            response.headers.get("x-request-id"),
        )
    return APIError(
        redact(_snippet(response.text) or response.reason or "no details", secret),
        status=response.status_code,
        request_id=response.headers.get("x-request-id"),
    )


def _error_from_payload(
    payload: dict[str, Any],
    status: int | None,
    secret: str | None,
    request_id: str | None = None,
) -> APIError:
    error = payload.get("error", payload)
    if not isinstance(error, dict):
        error = {"message": str(error)}
    message = error.get("message") or payload.get("detail") or json.dumps(payload)

    def label(key: str) -> str | None:
        value = error.get(key)
        return None if value is None else redact(str(value), secret)

    return APIError(
        redact(str(message), secret),
        status=status,
        type=label("type"),
        code=label("code"),
        param=label("param"),
        request_id=request_id,
    )


def _network_error(
    error: requests.RequestException, request: ChatRequest
) -> NetworkError:
    where = urlsplit(request.url)
    host = where.hostname or request.url
    if where.port:
        host = f"{host}:{where.port}"
    text = str(error)
    if isinstance(error, requests.exceptions.SSLError):
        message = _tls_message(host, text)
    elif isinstance(error, requests.exceptions.ProxyError):
        message = (
            f"the proxy on the way to {host} failed: {_reason(text)} "
            "(check HTTPS_PROXY, HTTP_PROXY and NO_PROXY)"
        )
    elif isinstance(error, requests.exceptions.ConnectTimeout):
        message = f"connecting to {host} timed out; check the network and any proxy"
    elif isinstance(error, requests.exceptions.ReadTimeout) or "Read timed out" in text:
        message = (
            f"{host} stopped answering for {request.timeout:g} seconds; "
            "try again, or allow a longer timeout"
        )
    elif "NameResolution" in text or "Name or service not known" in text:
        message = f"cannot resolve the host name {where.hostname}; check the base URL"
    elif "Connection refused" in text:
        message = f"connection to {host} refused; " + (
            "start the local model with: chat-ai-local start"
            if request.provider == "local"
            else "is the server running?"
        )
    else:
        message = f"cannot reach {host}: {_reason(text)}"
    return NetworkError(redact(message, request.api_key))


def _tls_message(host: str, text: str) -> str:
    """Return one line saying what went wrong setting up TLS with HOST."""
    lowered = text.lower()
    if "certificate" in lowered:
        return (
            f"the TLS certificate of {host} could not be verified: {_reason(text)} "
            "(for a private certificate authority, point REQUESTS_CA_BUNDLE at "
            "its certificate)"
        )
    if "version" in lowered or "protocol" in lowered:
        return (
            f"{host} and this machine share no TLS version: {_reason(text)} "
            "(is it an http:// address given as https://?)"
        )
    return f"TLS failure talking to {host}: {_reason(text)}"


def _reason(text: str) -> str:
    match = re.search(r"\(([^()]*)\)+\s*$", text)
    return _snippet(match.group(1) if match else text)


def _snippet(text: str, limit: int = 200) -> str:
    title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    if title:
        text = title.group(1)
    text = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
