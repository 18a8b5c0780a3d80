"""The one exception hierarchy of the helper; each error reads as one line."""

from __future__ import annotations

import json
import re
from typing import Any


class ChatAIError(Exception):
    """Something went wrong that the user should be told about in one line."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return " ".join(self.message.split())

    def to_event(self) -> dict[str, Any]:
        """Return the protocol fields describing this error."""
        return {"kind": self.kind, "message": str(self)}


class ConfigError(ChatAIError):
    """The request or the options are wrong; nothing was sent."""

    kind = "invalid"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def to_event(self) -> dict[str, Any]:
        """Return the protocol fields describing this error, with the parameter."""
        return {**super().to_event(), "param": self.param}


CONTEXT_CODES = ("context_length_exceeded", "string_above_max_length")
STATUS_HINTS = {
    401: "check the API key",
    403: "the key has no access to this model or endpoint",
    404: "check the model name, or for Azure the deployment name, and the base URL",
    429: "rate limited; wait a little and try again",
}


class APIError(ChatAIError):
    """The server answered with an error status or an unusable body."""

    kind = "api"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.request_id = request_id
        self.advice: str | None = None

    def __str__(self) -> str:
        labels = [f"HTTP {self.status}" if self.status else "API error"]
        labels += [label for label in (self.type, self.code) if label]
        if self.param:
            labels.append(f"param {self.param}")
        hint = self.hint
        return f"{' '.join(labels)}: {super().__str__()}" + (
            f" ({hint})" if hint else ""
        )

    @property
    def hint(self) -> str | None:
        """Return what the user can do about this error, when there is advice."""
        if self.advice:
            return self.advice
        code = self.code or ""
        if code == "insufficient_quota":
            return "out of quota: check the plan and billing of the account"
        if self.status == 413 or code in CONTEXT_CODES:
            return "shorten the prompt or lower max_tokens"
        if self.status is None:
            return None
        return STATUS_HINTS.get(self.status) or (
            "the server failed; try again later" if self.status >= 500 else None
        )

    def to_event(self) -> dict[str, Any]:
        """Return the protocol fields describing this error, with the HTTP details."""
        return {
            **super().to_event(),
            "status": self.status,
            "error_type": self.type,
            "code": self.code,
            "param": self.param,
            "request_id": self.request_id,
        }


class NetworkError(ChatAIError):
    """The server could not be reached, or stopped answering."""

    kind = "network"


class StreamError(ChatAIError):
    """The reply stream broke off or held something that is not a chunk."""

    kind = "stream"


class LocalServerError(ChatAIError):
    """The local model server could not be found, started or stopped."""

    kind = "local"


class InternalError(ChatAIError):
    """A failure nobody foresaw, a bug of the helper, told in one line."""

    kind = "internal"

    @classmethod
    def wrapping(cls, error: BaseException) -> InternalError:
        """Return the internal error that tells the user about ERROR."""
        return cls(
            f"the helper failed unexpectedly ({type(error).__name__}: {error}); "
            "please report this"
        )


class Cancelled(ChatAIError):
    """The request was cancelled by its caller."""

    kind = "cancelled"


def redact(text: str, secret: str | None) -> str:
    """Return TEXT with SECRET masked, and any word holding a long part of it.

    Servers echo keys whole or in part (``sk-abc…wxyz``); a word of TEXT
    that holds eight or more characters of SECRET in a row is masked
    whole, so that no piece of the key is left to read.
    """
    if not secret:
        return text
    text = text.replace(secret, "***")
    pieces = {secret[start : start + 8] for start in range(len(secret) - 7)}

    def mask(match: re.Match[str]) -> str:
        word = match.group(0)
        core = word.strip(_PUNCTUATION)
        if core and any(piece in core for piece in pieces):
            start = word.index(core)
            return word[:start] + "***" + word[start + len(core) :]
        return word

    return re.sub(r"\S+", mask, text)


_PUNCTUATION = ".,;:!?'\"()[]{}<>"


def shown(value: Any, limit: int = 60) -> str:
    """Return VALUE as the user or the server wrote it, in JSON, cut to LIMIT.

    Messages show values this way, never as Python writes them.
    """
    try:
        text = json.dumps(value, ensure_ascii=False)
    except ValueError:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
