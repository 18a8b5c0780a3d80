"""An OpenAI-compatible chat server on 127.0.0.1 for tests and benchmarks.

It answers ``POST /v1/chat/completions`` (any prefix before
``/chat/completions`` works), the legacy ``/completions`` (the prompt
echoed as ``text``, streamed or not; ``error-STATUS`` models fail as
below), ``/images/generations`` and ``/images/edits`` (``n`` images as
``b64_json``, or as URLs it serves itself when the model's name starts
with ``url``: on ``localhost`` rather than 127.0.0.1, another origin, for
``url-elsewhere``), and records every request it receives.  What
it answers is chosen by the request's model name:

- any ordinary name: the reply is the last user message, echoed exactly;
  streamed in small deltas when ``stream`` is true, each event's bytes
  split in two HTTP chunks (so multi-byte characters arrive split);
- ``error-STATUS`` or ``error-STATUS-CODE``: an OpenAI error object with
  that status (and code); its message quotes the Authorization header, as
  some servers do, so tests can prove the key is masked; a
  ``retry-after-ms: 1`` header keeps clients' retries quick;
- ``flaky-N-STATUS`` or ``flaky-N-STATUS-CODE``: the first N requests
  with this model name get that error (with ``retry-after-ms: 20``),
  the next ones the echo;
- ``html``: status 200 with an HTML page instead of JSON;
- ``cut``: streams a little, then drops the connection mid-chunk;
- ``no-done``: streams the reply but never sends ``data: [DONE]``;
- ``stream-error``: streams a little, then an error object in the stream;
- ``slow``: waits ``CHAT_AI_TEST_DELAY`` seconds (default 0.05) per delta;
- ``empty``: a reply with no text at all;
- ``long-N``: replies with N numbered words, one delta each;
- ``sse-as-json`` / ``sse-untyped``: streams with a Content-Type of
  application/json / with none;
- ``azure-filter``: streams after a first chunk with empty ``choices`` and
  ``prompt_filter_results``, as Azure OpenAI does;
- ``length`` / ``content_filter``: the reply stops with that finish reason;
- ``tool_calls``: no text, the reply stops with finish reason ``tool_calls``;
- ``tool-call`` / ``tool-two`` / ``tool-loop``: call the request's first
  tool (``tool-two``: its first two, or the first twice), with the last
  user message as the arguments when it is a JSON object, else ``{}``;
  streamed, each call's arguments split across many chunks, or whole.
  Once a ``tool`` message follows the last user message, ``tool-call`` and
  ``tool-two`` answer ``Tool results: `` and the contents of the tool
  messages since then, joined by `` | ``; ``tool-loop`` calls again forever;
  ``tool-other-NAME`` does as ``tool-call`` does, but calls NAME, offered
  or not;
- ``reasoning_content`` / ``reasoning``: thinks first ("Let me think: " and
  the prompt), sending the thinking in that field of the deltas or the
  message, then replies;
- ``think-tag``: replies with ``<think>`` and the thinking, ``</think>``,
  then the reply, all in the content (cut in three-character deltas);
- ``hang``: streams the first delta, then waits until the client closes
  the connection (counted in ``hung_up``), at most 30 seconds;
- ``held`` or ``held-MODEL``: answers as an ordinary name does, or as
  MODEL, but holds the answer until the test releases it (``release``):
  a stream stops halfway through its thinking when it has some, else
  halfway through the reply (rounded up, so a reply of one delta is all
  sent and only its end held); any other answer is held before it
  starts.  A client that hangs up meanwhile ends it.  Released, every
  held answer goes on at once, and those that come later are not held,
  until ``hold`` makes the server hold them again.  So a test can look
  at a reply mid-stream, or at a request still open, however fast or
  slow the machine;
- ``busy-K``: a server that works on at most K such requests at once:
  each takes ``CHAT_AI_TEST_DELAY`` seconds (default 0.05) before its
  echo, and one beyond K gets a 429 (``rate_limit_exceeded``, with
  ``retry-after: 1`` and ``retry-after-ms: 200``, counted in
  ``refused``); ``in_flight`` is how many it works on now,
  ``peak_in_flight`` the most it ever did at once;
- ``spent``: the echo, with headers saying that no request is left
  until ``x-ratelimit-reset-requests: 1s``.

It counts the connections it accepted in ``connections``.

Run as a script, it prints ``{"port": N}`` and then one JSON line per
request received, so a test in another process (Emacs) can check them.
It reads ``release`` and ``hold`` lines on its standard input, and
answers each with ``{"control": LINE}`` once it has taken effect.
"""

from __future__ import annotations

import base64
import email.policy
import json
import os
import select
import socket
import sys
import threading
import time
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class LoopbackServer(ThreadingHTTPServer):
    """The HTTP server, keeping what it received in ``received``."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port: int = 0, echo: bool = False) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.received: list[dict[str, Any]] = []
        self.hung_up = 0
        self.connections = 0
        self.seen: dict[str, int] = {}
        self.in_flight = 0
        self.peak_in_flight = 0
        self.refused = 0
        self.echo = echo
        self.lock = threading.Lock()
        self.released = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up; report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        """Return the base URL clients should use."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def release(self) -> None:
        """Let every held answer go on, and hold none until `hold`."""
        self.released.set()

    def hold(self) -> None:
        """Hold ``held`` answers again until the next `release`."""
        self.released.clear()

    def record(self, entry: dict[str, Any]) -> None:
        """Remember ENTRY, and print it when echoing."""
        with self.lock:
            self.received.append(entry)
            if self.echo:
                sys.stdout.write(json.dumps(entry, ensure_ascii=False) + "\n")
                sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    """Answer chat-completion requests according to the model name."""

    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def setup(self) -> None:
        """Send each write at once, as production servers do (no Nagle delay)."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_POST(self) -> None:
        """Answer one POST."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            body = None
        content_type = self.headers.get("Content-Type", "")
        form = None
        if content_type.startswith("multipart/form-data"):
            body = form = parse_form(content_type, raw)
        self.server.record(
            {
                "path": url.path,
                "query": url.query,
                "headers": dict(self.headers.items()),
                "body": None if form else body,
                **({"form": form} if form else {}),
            }
        )
        legacy = url.path.endswith("/completions") and "/chat/" not in url.path
        if url.path.endswith(("/images/generations", "/images/edits")):
            self.answer_images(body)
        elif isinstance(body, dict) and legacy:
            self.answer_completion(body)
        elif not url.path.endswith("/chat/completions"):
            self.send_json(404, error_object("no such path", "invalid_request_error"))
        elif not isinstance(body, dict):
            self.send_json(
                400,
                error_object(
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                ),
            )
        else:
            self.answer(body)

    def answer(self, body: dict[str, Any]) -> None:
        """Answer a well-formed request BODY."""
        model = str(body.get("model", ""))
        held = model == "held" or model.startswith("held-")
        if model.startswith("held-"):
            model = model[len("held-") :]
            body = {**body, "model": model}
        streamed = body.get("stream") and not (
            model.startswith(("error-", "flaky-")) or model == "html"
        )
        if held and not streamed and not self.wait_for_release():
            return
        with self.server.lock:
            self.server.seen[model] = self.server.seen.get(model, 0) + 1
            seen = self.server.seen[model]
        if model.startswith("flaky-"):
            failures, _, error = model[len("flaky-") :].partition("-")
            if seen <= int(failures):
                self.send_error_scenario(error, retry_after_ms="20")
                return
        if model.startswith("error-"):
            self.send_error_scenario(model[len("error-") :], retry_after_ms="1")
            return
        if model.startswith("busy-") and not self.work_busy(int(model[5:])):
            return
        if model == "html":
            page = b"<html><head><title>502 Bad Gateway</title></head></html>"
            self.send_bytes(200, "text/html", page)
            return
        calls = tool_calls_for(body)
        if calls:
            self.answer_tool_calls(body, model, calls)
            return
        reply = reply_for(body)
        thinking = f"Let me think: {reply}" if model in THINKING_MODELS else ""
        if model == "think-tag":
            reply = f"<think>{thinking}</think>\n\n{reply}"
        count = body.get("n", 1)
        texts = [reply if i == 0 else f"{reply} #{i + 1}" for i in range(count)]
        usage = {
            "prompt_tokens": sum(len(str(m.get("content"))) for m in body["messages"]),
            "completion_tokens": sum(len(text) for text in texts),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            self.stream(body, model, texts, usage, thinking, held)
            return
        self.send_json(
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": i,
                        "message": message_for(model, text, thinking),
                        "finish_reason": finish_reason(model),
                    }
                    for i, text in enumerate(texts)
                ],
                "usage": usage,
            },
            rate_headers(model),
        )

    def answer_tool_calls(
        self, body: dict[str, Any], model: str, calls: list[dict[str, Any]]
    ) -> None:
        """Reply with CALLS, streamed in pieces when BODY asks for a stream."""
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            self.send_json(200, {"model": model, "choices": [choice]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.send_event({"model": model, "choices": [chunk(0, {"role": "assistant"})]})
        for number, call in enumerate(calls):
            function = call["function"]
            head = {
                "index": number,
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": ""},
            }
            self.send_event(
                {"model": model, "choices": [chunk(0, {"tool_calls": [head]})]}
            )
            for piece in split_reply(model, function["arguments"]):
                more = {"index": number, "function": {"arguments": piece}}
                self.send_event(
                    {"model": model, "choices": [chunk(0, {"tool_calls": [more]})]}
                )
        self.send_event({"model": model, "choices": [chunk(0, {}, "tool_calls")]})
        self.send_chunk(b"data: [DONE]\n\n")
        self.send_chunk(b"")

    def do_GET(self) -> None:
        """Serve an image that an images reply named by URL."""
        url = urlsplit(self.path)
        self.server.record(
            {
                "path": url.path,
                "query": url.query,
                "headers": dict(self.headers.items()),
            }
        )
        name = url.path.rsplit("/", 1)[-1]
        self.send_bytes(200, "image/png", image_bytes(name))

    def answer_images(self, body: Any) -> None:
        """Answer an images request BODY: each image as b64_json, or as a URL.

        An edit's multipart form is recorded as ``form``: each field's
        text, or a list of files, each its name, type and base64 bytes.
        """
        if not isinstance(body, dict):
            self.send_json(400, error_object("no body", "invalid_request_error"))
            return
        model = str(body.get("model", ""))
        if model.startswith("error-"):
            self.send_error_scenario(model[len("error-") :], retry_after_ms="1")
            return
        names = [f"{model}-{i + 1}.png" for i in range(int(body.get("n", 1)))]
        host = "localhost" if model == "url-elsewhere" else "127.0.0.1"
        prefix = f"http://{host}:{self.server.server_address[1]}/files/"
        if model.startswith("url"):
            data = [{"url": prefix + name} for name in names]
        else:
            data = [
                {"b64_json": base64.b64encode(image_bytes(name)).decode()}
                for name in names
            ]
        self.send_json(200, {"created": 0, "data": data})

    def answer_completion(self, body: dict[str, Any]) -> None:
        """Answer a legacy completion BODY: its prompt, echoed, as ``text``."""
        model = str(body.get("model", ""))
        if model.startswith("error-"):
            self.send_error_scenario(model[len("error-") :], retry_after_ms="1")
            return
        prompt = body.get("prompt", "")
        text = "".join(prompt) if isinstance(prompt, list) else str(prompt)
        text += str(body.get("suffix", ""))
        if not body.get("stream"):
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
            completion = {"object": "text_completion", "model": model}
            self.send_json(200, {**completion, "choices": [choice]})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in split_reply(model, text):
            choice = {"index": 0, "text": piece, "finish_reason": None}
            self.send_event({"model": model, "choices": [choice]})
        final = {"index": 0, "text": "", "finish_reason": finish_reason(model)}
        self.send_event({"model": model, "choices": [final]})
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": len(text), "completion_tokens": len(text)}
            usage["total_tokens"] = 2 * len(text)
            self.send_event({"model": model, "choices": [], "usage": usage})
        self.send_chunk(b"data: [DONE]\n\n")
        self.send_chunk(b"")

    def stream(
        self,
        body: dict[str, Any],
        model: str,
        texts: list[str],
        usage: dict[str, int],
        thinking: str = "",
        held: bool = False,
    ) -> None:
        """Stream TEXTS as chat-completion chunks, after THINKING if any.

        A HELD stream stops halfway until the test releases it.
        """
        self.send_response(200)
        content_type = {
            "sse-as-json": "application/json",
            "sse-untyped": None,
        }.get(model, "text/event-stream; charset=utf-8")
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in rate_headers(model).items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if model == "azure-filter":
            self.send_event({"choices": [], "prompt_filter_results": [{"index": 0}]})
        delay = float(os.environ.get("CHAT_AI_TEST_DELAY", "0.05"))
        pieces = [
            (i, piece)
            for i, text in enumerate(texts)
            for piece in split_reply(model, text)
        ]
        if model in ("cut", "stream-error"):
            pieces = pieces[:2]
        if model == "hang":
            try:
                self.send_event(
                    {"model": model, "choices": [chunk(0, {"content": "…"})]}
                )
            except ConnectionError:
                self.count_hang_up()
                return
            self.wait_for_hang_up()
            return
        thoughts = (
            [
                (i, {model: piece})
                for i in range(len(texts))
                for piece in split_reply(model, thinking)
            ]
            if model in ("reasoning_content", "reasoning")
            else []
        )
        events = thoughts + [(i, {"content": piece}) for i, piece in pieces]
        hold_after = ((len(thoughts) or len(events)) + 1) // 2 if held else -1
        if hold_after == 0 and not self.wait_for_release():
            return
        for sent, (i, delta) in enumerate(events, start=1):
            self.send_event({"model": model, "choices": [chunk(i, delta)]})
            if sent == hold_after and not self.wait_for_release():
                return
            if sent <= len(thoughts) or model == "slow":
                time.sleep(delay)
        if model == "cut":
            self.wfile.write(b'40\r\ndata: {"choi')
            self.wfile.flush()
            self.close_connection = True
            return
        if model == "stream-error":
            self.send_event(
                error_object("Scenario error in the stream", "server_error")
            )
        else:
            finals = [chunk(i, {}, finish_reason(model)) for i in range(len(texts))]
            self.send_event({"model": model, "choices": finals})
            if (body.get("stream_options") or {}).get("include_usage"):
                self.send_event({"model": model, "choices": [], "usage": usage})
            if model != "no-done":
                self.send_chunk(b"data: [DONE]\n\n")
        self.send_chunk(b"")

    def work_busy(self, limit: int) -> bool:
        """Work on a ``busy-LIMIT`` request, or refuse it with a 429 beyond LIMIT.

        Return whether it was taken.  It counts as in flight until its
        reply starts, so that a client cannot see it end before then.
        """
        with self.server.lock:
            taken = self.server.in_flight < limit
            if taken:
                self.server.in_flight += 1
                self.server.peak_in_flight = max(
                    self.server.peak_in_flight, self.server.in_flight
                )
            else:
                self.server.refused += 1
        if not taken:
            payload = error_object(
                "Rate limit reached; please try again later.",
                "requests",
                "rate_limit_exceeded",
            )
            headers = {"retry-after": "1", "retry-after-ms": "200"}
            self.send_json(429, payload, headers)
            return False
        time.sleep(float(os.environ.get("CHAT_AI_TEST_DELAY", "0.05")))
        with self.server.lock:
            self.server.in_flight -= 1
        return True

    def send_error_scenario(self, error: str, retry_after_ms: str) -> None:
        """Send the error that ERROR, ``STATUS`` or ``STATUS-CODE``, describes."""
        status, _, code = error.partition("-")
        auth = self.headers.get("Authorization", "no key")
        message = f"Scenario error {status}; you sent {auth}."
        payload = error_object(message, "scenario_error", code or None)
        self.send_json(int(status), payload, {"retry-after-ms": retry_after_ms})

    def wait_for_hang_up(self) -> None:
        """Wait until the client closes the connection, then count it."""
        self.connection.settimeout(30)
        try:
            hung_up = self.rfile.read(1) == b""
        except ConnectionError:
            hung_up = True
        except OSError:
            hung_up = False
        self.close_connection = True
        if hung_up:
            self.count_hang_up()

    def count_hang_up(self) -> None:
        """Count a client that closed the connection before the reply ended."""
        self.close_connection = True
        with self.server.lock:
            self.server.hung_up += 1

    def wait_for_release(self) -> bool:
        """Wait until the test releases held answers; False if the client left first.

        The client is given up on after 60 seconds too, so that a test that
        never releases leaves no thread behind for long.
        """
        deadline = time.monotonic() + 60
        while not self.server.released.wait(0.02):
            if self.client_left() or time.monotonic() > deadline:
                self.close_connection = True
                return False
        return True

    def client_left(self) -> bool:
        """Return True when the client has closed the connection."""
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            data: bytes = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True
        return data == b""

    def send_event(self, payload: dict[str, Any]) -> None:
        """Send PAYLOAD as one SSE event, its bytes split across two chunks."""
        data = f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()
        middle = len(data) // 2 + 1
        self.send_chunk(data[:middle])
        self.send_chunk(data[middle:])

    def send_chunk(self, data: bytes) -> None:
        """Send DATA as one HTTP chunk; empty DATA ends the body."""
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def send_json(
        self,
        status: int,
        payload: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send PAYLOAD as a JSON response with STATUS and any extra HEADERS."""
        data = json.dumps(payload).encode()
        self.send_bytes(status, "application/json", data, headers)

    def send_bytes(
        self,
        status: int,
        content_type: str,
        data: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send DATA as a whole response, with any extra HEADERS."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def rate_headers(model: str) -> dict[str, str]:
    """Return the rate-limit headers of a reply of MODEL: ``spent`` has none left."""
    if model != "spent":
        return {}
    return {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }


def image_bytes(name: str) -> bytes:
    """Return the bytes of the image the server makes under NAME."""
    return b"\x89PNG\r\n\x1a\n" + name.encode() + bytes(range(256))


def parse_form(content_type: str, raw: bytes) -> dict[str, Any]:
    """Return the fields of the multipart form RAW, files as objects."""
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        filename = part.get_filename()
        if filename:
            form.setdefault(str(name), []).append(
                {
                    "filename": filename,
                    "type": part.get_content_type(),
                    "b64": base64.b64encode(data).decode(),
                }
            )
        else:
            form[str(name)] = data.decode()
    return form


def chunk(
    index: int, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    """Return one streamed choice."""
    return {"index": index, "delta": delta, "finish_reason": finish}


THINKING_MODELS = ("reasoning_content", "reasoning", "think-tag")


def message_for(model: str, text: str, thinking: str) -> dict[str, Any]:
    """Return the whole reply message TEXT of MODEL, with its THINKING apart if so."""
    message = {"role": "assistant", "content": text}
    if model in ("reasoning_content", "reasoning"):
        message[model] = thinking
    return message


def finish_reason(model: str) -> str:
    """Return why the reply for MODEL stops."""
    return model if model in ("length", "content_filter", "tool_calls") else "stop"


def error_object(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    """Return an OpenAI-style error object."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


TOOL_MODELS = ("tool-call", "tool-two", "tool-loop")


def is_tool_model(model: str) -> bool:
    """Return True when MODEL is one of the ``tool-…`` models."""
    return model in TOOL_MODELS or model.startswith("tool-other-")


def tool_calls_for(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the tool calls that a ``tool-…`` model makes for BODY, if any."""
    model = str(body.get("model", ""))
    tools = body.get("tools") or []
    if not is_tool_model(model) or not tools:
        return []
    messages = body["messages"]
    last_user = max(
        (i for i, m in enumerate(messages) if m.get("role") == "user"), default=0
    )
    answered = any(m.get("role") == "tool" for m in messages[last_user:])
    if answered and model != "tool-loop":
        return []
    prompt = str(messages[last_user].get("content"))
    try:
        arguments = json.loads(prompt)
    except ValueError:
        arguments = {}
    if not isinstance(arguments, dict):
        arguments = {}
    names = [tool["function"]["name"] for tool in tools]
    if model.startswith("tool-other-"):
        names = [model[len("tool-other-") :]]
    chosen = (names * 2)[:2] if model == "tool-two" else names[:1]
    turn = sum(1 for m in messages if m.get("role") == "assistant")
    return [
        {
            "id": f"call_{turn}_{number}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
        for number, name in enumerate(chosen)
    ]


def reply_for(body: dict[str, Any]) -> str:
    """Return the reply text for BODY."""
    model = str(body.get("model", ""))
    if is_tool_model(model):
        messages = body["messages"]
        last_user = max(
            (i for i, m in enumerate(messages) if m.get("role") == "user"), default=0
        )
        results = [
            str(m.get("content"))
            for m in messages[last_user:]
            if m.get("role") == "tool"
        ]
        return "Tool results: " + " | ".join(results)
    if model in ("empty", "tool_calls"):
        return ""
    if model.startswith("long-"):
        return "".join(f"word{i} " for i in range(int(model[len("long-") :])))
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return str(users[-1]["content"]) if users else ""


def split_reply(model: str, text: str) -> list[str]:
    """Return TEXT cut into the deltas the server streams."""
    if model.startswith("long-"):
        return [f"{word} " for word in text.split()]
    return [text[i : i + 3] for i in range(0, len(text), 3)]


def main() -> None:
    """Serve until killed, printing the port and each request as JSON lines."""
    server = LoopbackServer(echo=True)
    sys.stdout.write(json.dumps({"port": server.server_address[1]}) + "\n")
    sys.stdout.flush()
    threading.Thread(target=obey, args=(server,), daemon=True).start()
    server.serve_forever()


def obey(server: LoopbackServer) -> None:
    """Take ``release`` and ``hold`` lines on stdin, answering each once done."""
    for line in sys.stdin:
        command = line.strip()
        if command == "release":
            server.release()
        elif command == "hold":
            server.hold()
        else:
            continue
        with server.lock:
            sys.stdout.write(json.dumps({"control": command}) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
