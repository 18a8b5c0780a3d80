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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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


def local_url(environ: Mapping[str, str]) -> str:
    """Return the base URL of the local model server that ENVIRON points at."""
    if environ.get("CHAT_AI_LOCAL_URL"):
        return environ["CHAT_AI_LOCAL_URL"]
    port = environ.get("CHAT_AI_LOCAL_PORT") or DEFAULT_LOCAL_PORT
    return f"http://127.0.0.1:{port}/v1"


def provider(name: str, environ: Mapping[str, str]) -> Provider:
    """Return the provider called NAME, as ENVIRON configures it."""
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
    raise ConfigError(
        f"unknown provider {name!r}; known: openai, azure, local", "provider"
    )


def uses_deployments(base_url: str) -> bool:
    """Return whether Azure endpoint BASE_URL wants the deployment in the path."""
    return not base_url.rstrip("/").endswith("/openai/v1")
