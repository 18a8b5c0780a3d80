"""Provider profiles: where a request goes and which model it names by default.

``openai`` sends to ``$OPENAI_BASE_URL`` or OpenAI's API; ``local`` to the
small model that ``chat-ai-local`` serves on loopback (``$CHAT_AI_LOCAL_URL``,
else port ``$CHAT_AI_LOCAL_PORT`` or 8765), where no key is needed.
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
    """Where a provider's requests go, and its default model when it has one."""

    name: str
    base_url: str
    model: str | None = None


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
    raise ConfigError(f"unknown provider {name!r}; known: openai, local", "provider")
