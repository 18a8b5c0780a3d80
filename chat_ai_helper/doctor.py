"""``chat-ai doctor``: what the helper runs on, where requests go, if they arrive.

The report lists the helper (its version, protocol and Python), each
provider as it resolves (base URL, model, where its key comes from,
shown masked), the proxy settings in effect, and a live check of the
chosen provider: one small chat request, with its latency and result.
Each problem comes with its fix.  ``M-x ob-chat-ai-doctor`` in Emacs
shows the same report, read from ``chat-ai doctor --json``; it hands
over, on standard input, the keys that only Emacs knows (auth-source).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from chat_ai_helper import __version__
from chat_ai_helper.errors import APIError, ChatAIError, ConfigError, NetworkError
from chat_ai_helper.protocol import PROTOCOL_VERSION

PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
)
CHECK_PROMPT = "Reply with the one word: ok"
CHECK_TIMEOUT = 30.0
DEFAULT_MODEL = "gpt-4o-mini"


def mask(key: str) -> str:
    """Return KEY shown the way the report shows keys: its first three and last two."""
    if len(key) < 12:
        return "…"
    return f"{key[:3]}…{key[-2:]}"


def provider_facts(
    environ: Mapping[str, str], given_keys: Mapping[str, Mapping[str, str]]
) -> list[dict[str, Any]]:
    """Return each provider as the resolver sees it, its key from GIVEN_KEYS or ENVIRON.

    GIVEN_KEYS maps a provider name to ``{"key": …, "source": …}``: keys
    found where only the caller looks (Emacs's auth-source); they come first,
    as they do when Emacs sends a request.  Each entry holds the provider's
    ``name``, ``base_url``, ``model``, ``key_source``, ``key`` (masked),
    ``key_header``, ``request`` (the envelope fields that send a request
    there), and a ``problem`` with its ``fix`` when it cannot be used.
    """
    from chat_ai_helper.providers import (
        defined_in,
        listing,
        providers_file,
        resolve,
    )

    try:
        profiles = listing(environ)
    except ConfigError as error:
        return [
            {
                "name": "providers.json",
                "problem": str(error),
                "fix": f"correct or remove {providers_file(environ)}",
            }
        ]
    facts = []
    for profile in profiles:
        name = profile.name
        given = given_keys.get(name) or {}
        envelope: dict[str, Any] = {"provider": name}
        if given.get("key"):
            envelope["api_key"] = given["key"]
        fact: dict[str, Any] = {
            "name": name,
            "defined_in": defined_in(name, environ),
            "base_url": profile.base_url,
            "model": profile.default_model(environ),
            "key_header": profile.key_header,
            "key_source": None,
            "key": None,
            "request": dict(envelope),
        }
        try:
            route = resolve(envelope, environ, require_key=False)
        except ConfigError as error:
            fact["problem"] = str(error)
            fact["fix"] = (
                "set $AZURE_OPENAI_ENDPOINT to https://NAME.openai.azure.com "
                "and $OPENAI_API_VERSION (e.g. 2024-10-21)"
                if profile.api == "azure" and not profile.base_url
                else f"correct the {name} provider in {providers_file(environ)}"
            )
            facts.append(fact)
            continue
        if given.get("key"):
            fact["key_source"] = given.get("source") or "given"
            fact["key"] = mask(given["key"])
        elif route.api_key:
            fact["key_source"] = f"${profile.key_variable}"
            fact["key"] = mask(route.api_key)
        elif route.headers:
            fact["key_source"] = "none; the headers in providers.json authenticate"
        elif route.origin.is_loopback:
            fact["key_source"] = "none needed on loopback"
        else:
            fact["problem"] = f"no API key: ${profile.key_variable} is not set"
            fact["fix"] = (
                f"set ${profile.key_variable}, or (for Emacs) add to auth-source "
                f"(~/.authinfo.gpg): machine {route.origin.host} password KEY"
            )
        facts.append(fact)
    return facts


def proxy_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """Return the proxy and certificate settings in ENVIRON, passwords masked."""
    settings = {}
    for name in PROXY_VARIABLES:
        for spelling in (name, name.lower()):
            if environ.get(spelling):
                settings[spelling] = _without_password(environ[spelling])
    return settings


def _without_password(value: str) -> str:
    parts = urlsplit(value)
    if not parts.password:
        return value
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def check(fact: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Send one small chat request to the provider of FACT; say how it went."""
    from chat_ai_helper.client import Client, Delta
    from chat_ai_helper.request import parse_request

    model = environ.get("CHAT_AI_MODEL") or fact.get("model") or DEFAULT_MODEL
    envelope = {
        **fact["request"],
        "max_retries": 0,
        "timeout": CHECK_TIMEOUT,
        "body": {
            "model": model,
            "stream": False,
            "messages": [{"role": "user", "content": CHECK_PROMPT}],
        },
    }
    result: dict[str, Any] = {"provider": fact["name"], "model": model}
    started = time.monotonic()
    client = Client()
    try:
        request = parse_request(envelope, environ)
        result["url"] = request.url
        reply = "".join(
            event.text
            for event in client.complete(request)
            if isinstance(event, Delta) and event.choice == 0
        )
    except ChatAIError as error:
        result.update(ok=False, result=str(error), fix=_fix(error, fact))
    else:
        result.update(ok=True, result=f"{model} answered {_snippet(reply)!r}")
    finally:
        client.close()
    result["latency_ms"] = round((time.monotonic() - started) * 1000)
    return result


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:39] + "…"


def _fix(error: ChatAIError, fact: dict[str, Any]) -> str:
    if isinstance(error, ConfigError):
        return str(fact.get("fix") or error)
    if isinstance(error, APIError):
        if error.status in (401, 403):
            return f"the server refused the key from {fact['key_source']}; replace it"
        if error.status == 404:
            return (
                "check the base URL (requests go to BASE_URL/chat/completions) "
                "and the model name"
            )
        return error.hint or "see the server's message above"
    if isinstance(error, NetworkError):
        if fact["name"] == "local":
            return "start the local model with: chat-ai-local start"
        return "check the base URL, the network, and the proxy settings above"
    return "see the message above"


def _helper_path() -> str:
    program = sys.argv[0]
    if os.path.basename(program).startswith("chat-ai"):
        return os.path.abspath(program)
    return f"{sys.executable} -m chat_ai_helper"


def report(
    environ: Mapping[str, str],
    chosen: str,
    *,
    live: bool = True,
    given_keys: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Return the doctor's findings for ENVIRON, with a check of provider CHOSEN."""
    facts = provider_facts(environ, given_keys or {})
    found: dict[str, Any] = {
        "helper": {
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "path": _helper_path(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
        },
        "providers": [
            {key: value for key, value in fact.items() if key != "request"}
            for fact in facts
        ],
        "proxy": proxy_settings(environ),
        "chosen": chosen,
        "check": None,
    }
    if live:
        fact = next((f for f in facts if f["name"] == chosen), None)
        if fact is None and "base_url" not in facts[0]:
            found["check"] = {"provider": chosen, "ok": False, **facts[0]}
            found["check"]["result"] = found["check"].pop("problem")
        elif fact is None:
            known = ", ".join(f["name"] for f in facts)
            found["check"] = {
                "provider": chosen,
                "ok": False,
                "result": f"unknown provider {chosen!r}",
                "fix": f"choose one of: {known}",
            }
        else:
            found["check"] = check(fact, environ)
    return found


def healthy(found: dict[str, Any]) -> bool:
    """Return whether the report FOUND has no problem with the chosen provider."""
    chosen = [p for p in found["providers"] if p["name"] == found["chosen"]]
    if any("problem" in p for p in chosen):
        return False
    return found["check"] is None or bool(found["check"]["ok"])


def render(found: dict[str, Any]) -> str:
    """Return the report FOUND as text for a terminal."""
    helper = found["helper"]
    lines = [
        f"helper:  chat-ai {helper['version']} (protocol {helper['protocol']}) "
        f"at {helper['path']}",
        f"python:  {helper['python']} at {helper['executable']}",
        "providers:",
    ]
    for fact in found["providers"]:
        if "base_url" in fact:
            key = fact["key_source"] or "no key"
            if fact["key"]:
                key += f" {fact['key']}"
            lines.append(
                f"  {fact['name']}: {fact['base_url'] or '(no endpoint)'}, key: {key}"
            )
        else:
            lines.append(f"  {fact['name']}:")
        if "problem" in fact:
            lines += [f"    problem: {fact['problem']}", f"    fix: {fact['fix']}"]
    proxy = found["proxy"]
    lines.append(
        "proxy:   "
        + (", ".join(f"{name}={value}" for name, value in proxy.items()) or "none")
    )
    result = found["check"]
    if result is not None:
        status = "ok" if result["ok"] else "FAILED"
        latency = f" in {result['latency_ms']} ms" if "latency_ms" in result else ""
        lines.append(
            f"check:   {result['provider']}: {status}{latency}: {result['result']}"
        )
        if not result["ok"]:
            lines.append(f"    fix: {result['fix']}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``chat-ai doctor``."""
    parser = argparse.ArgumentParser(
        prog="chat-ai doctor",
        description="Say what the helper runs on, where each provider's requests "
        "go and where its key comes from, and check that the chosen provider answers.",
        epilog="To ask a model the one-word prompt 'doctor', write: chat-ai -- doctor",
    )
    parser.add_argument(
        "-p", "--provider", default="openai", help="the provider to check (openai)"
    )
    parser.add_argument(
        "--no-check", action="store_true", help="send nothing; only list the settings"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--keys-on-stdin",
        action="store_true",
        help='read {"keys": {PROVIDER: {"key": …, "source": …}}} on standard input '
        "(for Emacs, which finds keys in auth-source)",
    )
    return parser


def _given_keys(stdin: IO[bytes]) -> dict[str, dict[str, str]]:
    try:
        given = json.loads(stdin.read().decode("utf-8") or "{}")
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"--keys-on-stdin: not JSON: {error}") from None
    keys = given.get("keys") if isinstance(given, dict) else None
    if not isinstance(keys, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("key"), str)
        for entry in keys.values()
    ):
        raise ConfigError('--keys-on-stdin: expected {"keys": {NAME: {"key": …}}}')
    return keys


def main(argv: list[str], out: IO[str], stdin: IO[bytes]) -> int:
    """Run ``chat-ai doctor`` with ARGV; return 0 when nothing is wrong, else 1."""
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        raise ConfigError(
            f"doctor takes no {' '.join(extra)!r}; to ask a model a prompt "
            "that starts with 'doctor', write: chat-ai -- doctor …"
        )
    given = _given_keys(stdin) if args.keys_on_stdin else {}
    found = report(os.environ, args.provider, live=not args.no_check, given_keys=given)
    if args.json:
        out.write(json.dumps(found, ensure_ascii=False, indent=2) + "\n")
    else:
        out.write(render(found))
    return 0 if healthy(found) else 1
