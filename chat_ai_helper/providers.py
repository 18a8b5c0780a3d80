"""Provider profiles: where a request goes, how it carries its key, its model.

- ``openai``: ``$OPENAI_BASE_URL`` or OpenAI's API, key ``$OPENAI_API_KEY``
  as ``Authorization: Bearer``;
- ``azure``: Azure OpenAI at ``$AZURE_OPENAI_ENDPOINT``, key
  ``$AZURE_OPENAI_API_KEY`` in an ``api-key`` header; the model names the
  deployment (``/openai/deployments/MODEL/chat/completions``) and
  ``$OPENAI_API_VERSION`` the ``api-version``, unless the endpoint is the
  newer ``…/openai/v1`` form, which takes neither;
- ``local``: the small model that ``chat-ai-local`` serves on loopback
  (``$CHAT_AI_LOCAL_URL``, else port ``$CHAT_AI_LOCAL_PORT`` or 8765),
  where no key is needed.

Users add their own in a JSON file, ``$CHAT_AI_PROVIDERS_FILE`` or else
``$XDG_CONFIG_HOME/chat-ai/providers.json`` (``~/.config/…``); an entry
with a built-in name replaces that provider::

    {"ollama": {"base_url": "http://127.0.0.1:11434/v1", "model": "llama3.2"},
     "event": {"base_url": "https://proxy.example/api/v1",
               "headers": {"openai-event-code": "hackathon/me"}},
     "work": {"base_url": "https://llm.example.com/v1",
              "api_key_env": "WORK_LLM_KEY", "max_concurrent": 2}}

``max_concurrent`` is how many requests may be in flight to the
provider at once (`chat_ai_helper.concurrency`).

`resolve` is the one place that decides where a request goes and which
key and headers it carries, for Emacs and the command line alike:

- a key from the environment and a provider's own headers go only to
  that provider's own origin (scheme, host and port), never to another
  base URL that a request names;
- a key that the request brings itself goes where the request says; one
  that Emacs found in auth-source carries the host it was found for, and
  goes only there;
- the command line's own ``--base-url`` is the user's: it counts as the
  provider's own address.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chat_ai_helper.concurrency import DEFAULT_MAX_CONCURRENT, MAX_CONCURRENT
from chat_ai_helper.errors import ConfigError, shown
from chat_ai_helper.urls import Origin, origin

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_LOCAL_PORT = 8765
DEFAULT_MODEL = "gpt-4o-mini"
LOCAL_MODEL = "smollm2"
BUILT_IN = ("openai", "azure", "local")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


@dataclass(frozen=True)
class Provider:
    """Where a provider's requests go, how they carry the key, its default model."""

    name: str
    base_url: str | None
    model: str | None = None
    key_variable: str = "OPENAI_API_KEY"
    key_header: str = "Authorization"
    api_version: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    api: str = "openai"
    max_concurrent: int = DEFAULT_MAX_CONCURRENT

    def describe(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """Return what a caller may know of this provider, as a JSON-ready object."""
        return {
            "name": self.name,
            "api": self.api,
            "base_url": self.base_url,
            "model": self.default_model(environ),
            "key_variable": self.key_variable,
        }

    def default_model(self, environ: Mapping[str, str]) -> str:
        """Return the model of requests that name none, as ENVIRON says."""
        return environ.get("CHAT_AI_MODEL") or self.model or DEFAULT_MODEL


def local_url(environ: Mapping[str, str]) -> str:
    """Return the base URL of the local model server that ENVIRON points at."""
    if environ.get("CHAT_AI_LOCAL_URL"):
        return environ["CHAT_AI_LOCAL_URL"]
    return loopback_url(int(environ.get("CHAT_AI_LOCAL_PORT") or DEFAULT_LOCAL_PORT))


def loopback_url(port: int) -> str:
    """Return the base URL of an OpenAI-compatible server on loopback PORT."""
    return f"http://127.0.0.1:{port}/v1"


def provider(name: str, environ: Mapping[str, str]) -> Provider:
    """Return the provider called NAME, as ENVIRON and the user's file configure it."""
    path, entries = _user_entries(environ)
    if name in entries:
        return _user_provider(path, name, entries[name], environ)
    if name in BUILT_IN:
        return _built_in(name, environ)
    known = ", ".join(
        [*BUILT_IN, *(str(key) for key in entries if key not in BUILT_IN)]
    )
    raise ConfigError(f"unknown provider {shown(name)}; known: {known}", "provider")


def _built_in(name: str, environ: Mapping[str, str]) -> Provider:
    if name == "local":
        return Provider(name, local_url(environ), LOCAL_MODEL, api="local")
    if name == "azure":
        return Provider(
            name,
            environ.get("AZURE_OPENAI_ENDPOINT") or None,
            key_variable="AZURE_OPENAI_API_KEY",
            key_header="api-key",
            api_version=environ.get("OPENAI_API_VERSION") or None,
            api="azure",
        )
    return Provider(name, environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)


def listing(environ: Mapping[str, str]) -> list[Provider]:
    """Return every provider ENVIRON and the user's file define, built-in ones first.

    An entry of the file that is malformed is left out; asking for it by
    name says what is wrong with it.
    """
    found = {name: _built_in(name, environ) for name in BUILT_IN}
    for name in _user_entries(environ)[1]:
        try:
            found[name] = provider(name, environ)
        except ConfigError:
            found.pop(name, None)
    return list(found.values())


def providers_file(environ: Mapping[str, str]) -> Path:
    """Return where the user's provider profiles are kept."""
    if environ.get("CHAT_AI_PROVIDERS_FILE"):
        return Path(environ["CHAT_AI_PROVIDERS_FILE"])
    config = environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config) / "chat-ai" / "providers.json"


def defined_in(name: str, environ: Mapping[str, str]) -> str:
    """Return where provider NAME is defined: the user's file, or built in."""
    path, entries = _user_entries(environ)
    return str(path) if name in entries else "built in"


def _user_entries(environ: Mapping[str, str]) -> tuple[Path, dict[str, Any]]:
    path = providers_file(environ)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return path, {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the providers file {path}: {error}") from None
    if not isinstance(entries, dict):
        raise ConfigError(f"the providers file {path} must hold a JSON object")
    return path, entries


def _user_provider(
    path: Path, name: str, entry: Any, environ: Mapping[str, str]
) -> Provider:
    where = f"provider {shown(name)} in {path}"
    if not isinstance(entry, dict) or not isinstance(entry.get("base_url"), str):
        raise ConfigError(f"{where} needs a base_url")
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(value, str) for value in headers.values()
    ):
        raise ConfigError(f"{where}: headers must map names to strings")
    for header in headers:
        if not HEADER_NAME.match(str(header)):
            raise ConfigError(f"{where}: {shown(header)} is not a valid header name")
    base = _built_in(name, environ) if name in BUILT_IN else Provider(name, None)
    max_concurrent = entry.get("max_concurrent", base.max_concurrent)
    if (
        isinstance(max_concurrent, bool)
        or not isinstance(max_concurrent, int)
        or not 1 <= max_concurrent <= MAX_CONCURRENT
    ):
        raise ConfigError(
            f"{where}: max_concurrent must be a whole number from 1 to "
            f"{MAX_CONCURRENT}, not {shown(max_concurrent)}"
        )
    return Provider(
        name,
        entry["base_url"],
        model=entry.get("model") or base.model,
        key_variable=str(entry.get("api_key_env") or base.key_variable),
        key_header=base.key_header,
        api_version=base.api_version,
        headers={str(key): value for key, value in headers.items()},
        api=base.api,
        max_concurrent=max_concurrent,
    )


def uses_deployments(base_url: str) -> bool:
    """Return whether Azure endpoint BASE_URL wants the deployment in the path."""
    return not base_url.rstrip("/").endswith("/openai/v1")


@dataclass(frozen=True)
class Route:
    """Where one request goes, and the key and headers it carries there."""

    provider: Provider
    base_url: str
    origin: Origin
    api_key: str | None = field(repr=False)
    headers: dict[str, str]
    api_version: str | None
    model: str
    missing_key: str | None = None

    @property
    def deployments(self) -> bool:
        """Return whether the model names an Azure deployment in the URL."""
        return self.provider.api == "azure" and uses_deployments(self.base_url)


def resolve(
    envelope: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    trusted: bool = False,
    require_key: bool = True,
) -> Route:
    """Return where ENVELOPE's request goes and what it carries, as ENVIRON says.

    The envelope's ``provider`` (``openai`` by default) gives the
    address, the key variable and the headers of the user's own
    configuration; its ``base_url``, ``api_key``, ``headers`` and
    ``api_version`` come from the request itself.  Unless TRUSTED (the
    base URL is the user's own command line), a key from the environment
    and the provider's headers go only to the provider's own origin.
    With REQUIRE_KEY, a request to the provider's own origin off
    loopback with no key and no headers is refused.
    """
    name = envelope.get("provider") or "openai"
    if not isinstance(name, str):
        raise ConfigError("provider must be a name", "provider")
    profile = provider(name, environ)
    given_url = envelope.get("base_url") or None
    url = given_url or profile.base_url
    if not url and profile.api == "azure":
        raise ConfigError(
            "azure needs an endpoint: set AZURE_OPENAI_ENDPOINT or base_url",
            "base_url",
        )
    where = origin(given_url) if given_url else _own_origin(profile)
    if where is None:
        raise ConfigError(f"the {name} provider has no base_url", "base_url")
    own = where if trusted or not given_url else _own_origin(profile)
    at_home = own == where
    headers = {**(profile.headers if at_home else {}), **_headers(envelope)}
    api_key = _given_key(envelope, where)
    if api_key is None and at_home:
        api_key = environ.get(profile.key_variable) or None
    looked_in = _looked_in(envelope, profile)
    if (
        api_key is None
        and require_key
        and at_home
        and not headers
        and not where.is_loopback
    ):
        raise ConfigError(
            f"no API key for {where.host}; looked in {looked_in}"
            if envelope.get("looked_in")
            else f"no API key for {where.host}: set {profile.key_variable}",
            "api_key",
        )
    missing_key = None
    if api_key is None:
        missing_key = (
            f"no API key was sent; keys are looked for in {looked_in}"
            if at_home or own is None
            else f"no API key was sent: ${profile.key_variable} goes only to "
            f"{own}, the {name} provider's address, not to {where}; for a key "
            f"there, add an auth-source entry (machine {where.host}) or a "
            f"provider of your own to {providers_file(environ)}"
        )
    api_version = envelope.get("api_version") or profile.api_version
    if api_version is not None and not isinstance(api_version, str):
        raise ConfigError("api_version must be a string", "api_version")
    return Route(
        provider=profile,
        base_url=str(url),
        origin=where,
        api_key=api_key,
        headers=headers,
        api_version=api_version,
        model=profile.default_model(environ),
        missing_key=missing_key,
    )


def _own_origin(profile: Provider) -> Origin | None:
    """Return the origin of PROFILE's own address, None when it has none."""
    if not profile.base_url:
        return None
    try:
        return origin(profile.base_url, f"the {profile.name} provider's base_url")
    except ConfigError as error:
        raise ConfigError(str(error), "base_url") from None


def _headers(envelope: Mapping[str, Any]) -> dict[str, str]:
    """Return the request's own headers, refusing names and values HTTP forbids."""
    given = envelope.get("headers") or {}
    if not isinstance(given, dict) or not all(
        isinstance(value, str) and not set(value) & {"\n", "\r", "\0"}
        for value in given.values()
    ):
        raise ConfigError("headers must map names to one-line strings", "headers")
    for header in given:
        if not HEADER_NAME.match(header):
            raise ConfigError(
                f"headers must have valid names; {shown(header)} is not one (letters, "
                "digits and !#$%&'*+-.^_`|~ only, no spaces)",
                "headers",
            )
    return dict(given)


def _given_key(envelope: Mapping[str, Any], where: Origin) -> str | None:
    """Return the key the request brings, if it may go to WHERE."""
    api_key = envelope.get("api_key") or None
    if api_key is None:
        return None
    if not isinstance(api_key, str) or set(api_key) & {"\n", "\r", "\0"}:
        raise ConfigError("api_key must be a one-line string", "api_key")
    key_host = envelope.get("api_key_host")
    if key_host is not None and (
        not isinstance(key_host, str) or key_host.strip("[]").lower() != where.host
    ):
        raise ConfigError(
            f"the key found for {key_host} is not sent to {where.host}, where "
            "the request goes",
            "api_key",
        )
    return api_key


def _looked_in(envelope: Mapping[str, Any], profile: Provider) -> str:
    """Return where keys are looked for, as words: the caller's places, then ours."""
    places = envelope.get("looked_in") or []
    if not isinstance(places, list) or not all(isinstance(p, str) for p in places):
        raise ConfigError("looked_in must be a list of strings", "looked_in")
    places = [*places, f"${profile.key_variable}"]
    return " and ".join([", ".join(places[:-1]), places[-1]] if places[:-1] else places)
