"""Keys go only where they belong, whatever a request names: over real loopback HTTP.

Two loopback servers stand for two origins: the first is the provider's
own ($OPENAI_BASE_URL), the second one that a document names.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_KEY, run_cli
from loopback_server import LoopbackServer

from chat_ai_helper.client import Client
from chat_ai_helper.errors import APIError, ConfigError, redact
from chat_ai_helper.providers import listing
from chat_ai_helper.request import parse_request


@pytest.fixture
def other() -> Iterator[LoopbackServer]:
    """Run a second loopback chat server: another origin than ``server``."""
    httpd = LoopbackServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def serve(
    *requests: dict[str, Any], env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run ``chat-ai --serve`` on REQUESTS with ENV added; return its events."""
    import os

    result = subprocess.run(
        [sys.executable, "-m", "chat_ai_helper", "--serve"],
        input="".join(json.dumps(r) + "\n" for r in requests).encode(),
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def ask(base_url: str | None = None, **fields: Any) -> dict[str, Any]:
    """Return a request envelope as Emacs sends it, to BASE_URL when given."""
    envelope: dict[str, Any] = {"id": "k", "body": body("m"), **fields}
    if base_url:
        envelope["base_url"] = base_url
    return envelope


def test_serve_sends_the_environment_key_to_its_own_origin_only(
    server: LoopbackServer, other: LoopbackServer
) -> None:
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": TEST_KEY}
    events = serve(ask(id="own"), ask(other.base_url, id="other"), env=env)
    assert [event["type"] for event in events].count("done") == 2
    assert server.received[0]["headers"]["Authorization"] == f"Bearer {TEST_KEY}"
    assert "Authorization" not in other.received[0]["headers"]
    assert TEST_KEY not in json.dumps(other.received)


def test_a_providers_headers_stay_with_its_own_origin(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    providers = tmp_path / "providers.json"
    entry = {"base_url": server.base_url, "headers": {"openai-event-code": "me/1"}}
    providers.write_text(json.dumps({"event": entry}))
    env = {"CHAT_AI_PROVIDERS_FILE": str(providers)}
    serve(
        ask(provider="event", id="own"),
        ask(other.base_url, provider="event", id="other"),
        env=env,
    )
    assert server.received[0]["headers"]["openai-event-code"] == "me/1"
    assert "openai-event-code" not in other.received[0]["headers"]


def test_the_cli_trusts_its_own_base_url_but_not_one_in_json_input(
    server: LoopbackServer, other: LoopbackServer
) -> None:
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": TEST_KEY}
    assert run_cli("--base-url", other.base_url, "hi", env=env).returncode == 0
    assert other.received[0]["headers"]["Authorization"] == f"Bearer {TEST_KEY}"
    result = run_cli("--json", input=json.dumps(ask(other.base_url)), env=env)
    assert result.returncode == 0, result.stderr
    assert "Authorization" not in other.received[1]["headers"]


def test_a_key_the_request_brings_goes_where_it_says(other: LoopbackServer) -> None:
    serve(ask(other.base_url, api_key="sk-from-the-document"))
    assert other.received[0]["headers"]["Authorization"] == (
        "Bearer sk-from-the-document"
    )


def test_a_key_found_for_one_host_is_not_sent_to_another(
    other: LoopbackServer,
) -> None:
    (event,) = serve(
        ask(other.base_url, api_key=TEST_KEY, api_key_host="api.openai.com")
    )
    assert event["type"] == "error"
    assert event["param"] == "api_key"
    assert event["message"] == (
        "the key found for api.openai.com is not sent to 127.0.0.1, "
        "where the request goes"
    )
    assert other.received == []
    serve(ask(other.base_url, api_key=TEST_KEY, api_key_host="127.0.0.1"))
    assert other.received[0]["headers"]["Authorization"] == f"Bearer {TEST_KEY}"


def test_a_401_without_a_key_says_which_key_was_withheld(
    server: LoopbackServer, other: LoopbackServer, tmp_path: Path
) -> None:
    env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": TEST_KEY}
    (event,) = serve(ask(other.base_url, body=body("error-401")), env=env)
    providers = tmp_path / "config" / "chat-ai" / "providers.json"
    assert event["message"] == (
        "HTTP 401 scenario_error: Scenario error 401; you sent no key. "
        f"(no API key was sent: $OPENAI_API_KEY goes only to {origin(server)}, "
        f"the openai provider's address, not to {origin(other)}; for a key there, "
        "add an auth-source entry (machine 127.0.0.1) or a provider of your own "
        f"to {providers})"
    )


def test_a_401_on_loopback_without_any_key_says_where_keys_are_looked_for(
    server: LoopbackServer,
) -> None:
    looked_in = [":api-key", "auth-source (machine 127.0.0.1 in ~/.authinfo)"]
    (event,) = serve(
        ask(body=body("error-401"), looked_in=looked_in),
        env={"OPENAI_BASE_URL": server.base_url},
    )
    assert event["message"] == (
        "HTTP 401 scenario_error: Scenario error 401; you sent no key. "
        "(no API key was sent; keys are looked for in :api-key, auth-source "
        "(machine 127.0.0.1 in ~/.authinfo) and $OPENAI_API_KEY)"
    )


def body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def origin(server: LoopbackServer) -> str:
    return server.base_url.removesuffix("/v1")


class Redirector(BaseHTTPRequestHandler):
    """Answer every POST with a redirect to the server's ``target``."""

    server: RedirectServer

    def do_POST(self) -> None:
        """Send the request elsewhere, as a compromised or odd gateway would."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(307)
        self.send_header("Location", self.server.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class RedirectServer(ThreadingHTTPServer):
    """A loopback server that redirects every request to TARGET."""

    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), Redirector)
        self.target = target


def test_a_cross_origin_redirect_is_not_followed(other: LoopbackServer) -> None:
    target = other.base_url + "/chat/completions"
    redirector = RedirectServer(target)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{redirector.server_address[1]}/v1"
    try:
        for extra in ({"provider": "azure", "api_version": "2024-10-21"}, {}):
            (event,) = serve(
                ask(
                    base_url,
                    api_key=TEST_KEY,
                    headers={"openai-event-code": "me/1"},
                    **extra,
                )
            )
            assert event["message"] == (
                f"HTTP 307: the server tried to send the request to {target}; "
                "redirects are not followed, so that no key or header goes where "
                "you did not send it (if you trust that address, make it the "
                "base URL)"
            )
        result = run_cli(
            "--base-url", base_url, "-H", "X-Custom: 1", "hi",
            env={"OPENAI_API_KEY": TEST_KEY},
        )  # fmt: skip
        assert result.returncode == 1
        assert f"tried to send the request to {target}" in result.stderr.decode()
    finally:
        redirector.shutdown()
        redirector.server_close()
    assert other.received == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "file:///etc/passwd",
            "base_url must be an http:// or https:// address, not file://",
        ),
        (
            "api.example.test/v1",
            "base_url api.example.test/v1 has no scheme; write it as "
            "https://api.example.test/v1 (or http:// for a server without TLS)",
        ),
        (
            "http://attacker.example\\@api.openai.com/v1",
            "base_url must not contain a backslash: programs disagree on which "
            "host such an address names",
        ),
        (
            "http://user:pw@api.openai.com/v1",
            "base_url must not carry a user name or password (user@host); give "
            "the key with :api-key or auth-source instead",
        ),
        ("http://exa mple.test/v1", "base_url must be one plain ASCII address"),
        ("http://héllo.test/v1", "base_url must be one plain ASCII address"),
        ("http://h.test:0/v1", "base_url has a malformed port: 0 (1 to 65535)"),
        ("http://h.test/v1?x=1", "base_url must not have a query"),
        ("http:///v1", "base_url has no host"),
        ("http://a_b.test/v1", "base_url has a malformed host: a_b.test"),
    ],
)
def test_a_base_url_that_could_be_misread_is_refused(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_request(ask(url, api_key="k"), {})
    assert str(caught.value).startswith(message)
    assert caught.value.param == "base_url"
    assert "pw" not in str(caught.value)


def test_the_backslash_url_sends_nothing_even_through_a_proxy(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_PROXY")
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    url = "http://attacker.example\\@api.openai.com/v1"
    (event,) = serve(
        ask(url, api_key=TEST_KEY, api_key_host="api.openai.com"),
        env={"HTTP_PROXY": proxy},
    )
    assert event["type"] == "error"
    assert event["param"] == "base_url"
    assert server.received == []


def test_a_key_for_a_host_goes_there_through_a_proxy(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_PROXY")
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    events = serve(
        ask(
            "http://api.example.test/v1",
            api_key=TEST_KEY,
            api_key_host="api.example.test",
        ),
        env={"HTTP_PROXY": proxy},
    )
    assert events[-1]["type"] == "done"
    received = server.received[0]
    assert received["headers"]["Host"] == "api.example.test"
    assert received["headers"]["Authorization"] == f"Bearer {TEST_KEY}"


def test_previews_mask_every_credential_header() -> None:
    result = run_cli(
        "--dry-run", "--base-url", "https://api.example.test/v1",
        "-H", f"Authorization: Bearer {TEST_KEY}",
        "-H", f"x-api-key: {TEST_KEY}",
        "-H", f"X-Session-Token: {TEST_KEY}",
        "-H", f"My-Secret: {TEST_KEY}",
        "-H", "openai-event-code: hackathon/me",
        "hi",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    headers = json.loads(result.stdout)["headers"]
    assert headers["Authorization"] == "Bearer ***"
    assert headers["x-api-key"] == "***"
    assert headers["X-Session-Token"] == "***"
    assert headers["My-Secret"] == "***"
    assert headers["openai-event-code"] == "hackathon/me"
    assert TEST_KEY not in result.stdout.decode()


@pytest.mark.parametrize("name", ["Bad Header", "Bad:Header", "Bad\tHeader", "É"])
def test_invalid_header_names_are_refused_before_sending(
    server: LoopbackServer, name: str
) -> None:
    (event,) = serve(ask(server.base_url, headers={name: "y"}))
    assert event["type"] == "error"
    assert event["param"] == "headers"
    assert event["message"].startswith("headers must have valid names;")
    assert server.received == []


def test_an_error_answer_does_not_leave_its_connection_for_the_next_request(
    server: LoopbackServer,
) -> None:
    client = Client()
    for model in ("m", "m", "error-400", "m"):
        request = parse_request(ask(server.base_url, body=body(model)), {})
        with contextlib.suppress(APIError):
            list(client.complete(request))
    client.close()
    assert server.connections == 2


def test_the_providers_request_lists_every_provider(tmp_path: Path) -> None:
    providers = tmp_path / "providers.json"
    providers.write_text(
        json.dumps(
            {
                "ollama": {"base_url": "http://127.0.0.1:11434/v1", "model": "l"},
                "broken": {"model": "no base_url"},
            }
        )
    )
    env = {"CHAT_AI_PROVIDERS_FILE": str(providers), "CHAT_AI_LOCAL_PORT": "9999"}
    (event,) = serve({"type": "providers", "id": "p"}, env=env)
    assert event["type"] == "providers"
    assert event["file"] == str(providers)
    assert [(p["name"], p["base_url"], p["model"]) for p in event["providers"]] == [
        ("openai", "https://api.openai.com/v1", "gpt-4o-mini"),
        ("azure", None, "gpt-4o-mini"),
        ("local", "http://127.0.0.1:9999/v1", "smollm2"),
        ("ollama", "http://127.0.0.1:11434/v1", "l"),
    ]
    providers.write_text("{not json")
    (event,) = serve({"type": "providers", "id": "p"}, env=env)
    assert event["type"] == "error"
    assert event["message"].startswith(f"cannot read the providers file {providers}")


def test_a_broken_entry_spoils_only_itself(tmp_path: Path) -> None:
    providers = tmp_path / "providers.json"
    providers.write_text(json.dumps({"broken": {"model": "m"}}))
    environ = {"CHAT_AI_PROVIDERS_FILE": str(providers)}
    assert [p.name for p in listing(environ)] == ["openai", "azure", "local"]
    request = parse_request(ask("http://127.0.0.1:9/v1"), environ)
    assert request.url == "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(ConfigError, match=r'"broken" .* needs a base_url'):
        parse_request(ask(provider="broken"), environ)


@pytest.mark.parametrize(
    "echo",
    [
        f"Incorrect API key provided: {TEST_KEY}.",
        f"Incorrect API key provided: {TEST_KEY[:14]}…{TEST_KEY[-6:]}.",
        f"Incorrect API key provided: {TEST_KEY[:12]}**********{TEST_KEY[-4:]}.",
        f'{{"key": "{TEST_KEY[3:20]}"}}',
    ],
)
def test_an_echoed_key_is_masked_whole(echo: str) -> None:
    masked = redact(echo, TEST_KEY)
    assert "***" in masked
    for start in range(len(TEST_KEY) - 3):
        assert TEST_KEY[start : start + 4] not in masked
