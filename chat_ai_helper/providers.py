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
``$XDG_CONFIG_HOME/chat-ai/providers.json`` (``~/.config/…``)::

    {"ollama": {"base_url": "http://127.0.0.1:11434/v1", "model": "llama3.2"},
     "event": {"base_url": "https://proxy.example/api/v1",
               "headers": {"openai-event-code": "hackathon/me"}},
     "work": {"base_url": "https://llm.example.com/v1",
              "api_key_env": "WORK_LLM_KEY"}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chat_ai_helper.errors import ConfigError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_LOCAL_PORT = 8765
LOCAL_MODEL = "smollm2"


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
    mine = user_providers(environ)
    if name in mine:
        return mine[name]
    if name == "openai":
        return Provider(name, environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL)
    if name == "local":
        return Provider(name, local_url(environ), LOCAL_MODEL)
    if name == "azure":
        return Provider(
            name,
            environ.get("AZURE_OPENAI_ENDPOINT") or None,
            key_variable="AZURE_OPENAI_API_KEY",
            key_header="api-key",
            api_version=environ.get("OPENAI_API_VERSION") or None,
        )
    known = ", ".join(["openai", "azure", "local", *sorted(mine)])
    raise ConfigError(f"unknown provider {name!r}; known: {known}", "provider")


def providers_file(environ: Mapping[str, str]) -> Path:
    """Return where the user's provider profiles are kept."""
    if environ.get("CHAT_AI_PROVIDERS_FILE"):
        return Path(environ["CHAT_AI_PROVIDERS_FILE"])
    config = environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config) / "chat-ai" / "providers.json"


def user_providers(environ: Mapping[str, str]) -> dict[str, Provider]:
    """Return the user's provider profiles, by name; none when there is no file."""
    path = providers_file(environ)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the providers file {path}: {error}") from None
    if not isinstance(entries, dict):
        raise ConfigError(f"the providers file {path} must hold a JSON object")
    return {
        name: _user_provider(path, str(name), entry) for name, entry in entries.items()
    }


def _user_provider(path: Path, name: str, entry: Any) -> Provider:
    where = f"provider {name!r} in {path}"
    if not isinstance(entry, dict) or not isinstance(entry.get("base_url"), str):
        raise ConfigError(f"{where} needs a base_url")
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(value, str) for value in headers.values()
    ):
        raise ConfigError(f"{where}: headers must map names to strings")
    return Provider(
        name,
        entry["base_url"],
        model=entry.get("model"),
        key_variable=str(entry.get("api_key_env") or "OPENAI_API_KEY"),
        headers={str(key): value for key, value in headers.items()},
    )


def uses_deployments(base_url: str) -> bool:
    """Return whether Azure endpoint BASE_URL wants the deployment in the path."""
    return not base_url.rstrip("/").endswith("/openai/v1")
