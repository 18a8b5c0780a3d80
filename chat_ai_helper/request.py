"""The request the helper receives: where to send it, and the checked body."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from chat_ai_helper.attachments import expand, shorten
from chat_ai_helper.concurrency import DEFAULT_MAX_CONCURRENT, MAX_CONCURRENT
from chat_ai_helper.errors import ConfigError, shown
from chat_ai_helper.images import EDITS_PATH, IMAGES_MODEL, edit_form, image_paths
from chat_ai_helper.providers import DEFAULT_BASE_URL, resolve

DEFAULT_TIMEOUT = 600.0
MAX_TIMEOUT = 86400.0
DEFAULT_MAX_RETRIES = 2
CONNECT_TIMEOUT = 10.0
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CREDENTIAL_HEADERS = ("authorization", "api-key", "x-api-key", "cookie")
CREDENTIAL_WORDS = ("key", "token", "secret", "auth", "password", "cookie")

Checker = Callable[[str, Any], Any]


def _number(low: float, high: float) -> Checker:
    def check(name: str, value: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not low <= value <= high
        ):
            raise ConfigError(
                f"{name} must be a number from {low:g} to {high:g}, not {shown(value)}",
                name,
            )
        return value

    return check


def _integer(low: int, high: int | None = None) -> Checker:
    def check(name: str, value: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < low
            or (high is not None and value > high)
        ):
            bound = f"from {low} to {high}" if high is not None else f"of {low} or more"
            raise ConfigError(
                f"{name} must be a whole number {bound}, not {shown(value)}", name
            )
        return value

    return check


def _boolean(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {shown(value)}", name)
    return value


def _string(name: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{name} must be a non-empty string, not {shown(value)}", name
        )
    return value


def _name(name: str, value: Any) -> Any:
    _string(name, value)
    if not value.isprintable():
        raise ConfigError(
            f"{name} must be one line of printable text, not {shown(value)}", name
        )
    return value


def _stop(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, list)
        and 1 <= len(value) <= 4
        and all(isinstance(item, str) for item in value)
    ):
        return value
    raise ConfigError(
        f"{name} must be a string or a list of up to 4 strings, not {shown(value)}",
        name,
    )


def _object(name: str, value: Any) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a JSON object, not {shown(value)}", name)
    return value


def _logit_bias(name: str, value: Any) -> Any:
    _object(name, value)
    for token, bias in value.items():
        if not token.isdigit():
            raise ConfigError(
                f"{name} keys must be token ids, not {shown(token)}", name
            )
        if isinstance(bias, bool) or not isinstance(bias, int | float):
            raise ConfigError(
                f"{name}[{token}] must be a number, not {shown(bias)}", name
            )
        if not -100 <= bias <= 100:
            raise ConfigError(
                f"{name}[{token}] must be from -100 to 100, not {shown(bias)}", name
            )
    return value


def _metadata(name: str, value: Any) -> Any:
    _object(name, value)
    for key, item in value.items():
        if not isinstance(item, str):
            raise ConfigError(
                f"{name}[{key}] must be a string, not {shown(item)}", name
            )
    return value


SCHEMA_TYPES = ("object", "array", "string", "number", "integer", "boolean")


def _response_format(name: str, value: Any) -> Any:
    """Check response_format; a bare JSON schema becomes a json_schema format."""
    if value == "json":
        value = "json_object"
    if isinstance(value, str):
        value = {"type": value}
    _object(name, value)
    if value.get("type") in SCHEMA_TYPES or (
        "type" not in value and ("properties" in value or "$schema" in value)
    ):
        value = {
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": value},
        }
    if value.get("type") not in ("text", "json_object", "json_schema"):
        raise ConfigError(
            f"{name} type must be text, json_object or json_schema, not "
            f"{shown(value.get('type'))}",
            name,
        )
    return value


def _messages(name: str, value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{name} must be a non-empty list of messages", name)
    for index, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ConfigError(
                f"{name}[{index}] must have a role among {', '.join(ROLES)}", name
            )
        content = message.get("content")
        if not isinstance(content, str | list) and not (
            content is None and message["role"] == "assistant"
        ):
            raise ConfigError(f"{name}[{index}] content must be a string", name)
    return value


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
"""The reasoning efforts the chat completions API accepts."""


def _reasoning_effort(name: str, value: Any) -> Any:
    if value not in REASONING_EFFORTS:
        raise ConfigError(
            f"{name} must be one of {', '.join(REASONING_EFFORTS)}, not {shown(value)}",
            name,
        )
    return value


FIELDS: dict[str, Checker] = {
    "model": _name,
    "messages": _messages,
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "n": _integer(1, 128),
    "stream": _boolean,
    "stop": _stop,
    "max_tokens": _integer(1),
    "max_completion_tokens": _integer(1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "logit_bias": _logit_bias,
    "user": _string,
    "seed": _integer(-(2**63)),
    "response_format": _response_format,
    "reasoning_effort": _reasoning_effort,
    "store": _boolean,
    "metadata": _metadata,
    "stream_options": _object,
}


def _prompt(name: str, value: Any) -> Any:
    if (isinstance(value, str) and value) or (
        isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    ):
        return value
    raise ConfigError(
        f"{name} must be a non-empty string or a list of strings, not {shown(value)}",
        name,
    )


def _one_of(*values: str) -> Checker:
    def check(name: str, value: Any) -> Any:
        if value not in values:
            raise ConfigError(
                f"{name} must be one of {', '.join(values)}, not {shown(value)}", name
            )
        return value

    return check


def _size(name: str, value: Any) -> Any:
    if value == "auto" or (
        isinstance(value, str)
        and re.fullmatch(r"[1-9][0-9]{1,4}x[1-9][0-9]{1,4}", value)
    ):
        return value
    raise ConfigError(f"{name} must be WIDTHxHEIGHT or auto, not {shown(value)}", name)


ENDPOINTS: dict[str, tuple[str, tuple[str, ...], dict[str, Checker]]] = {
    "chat": ("/chat/completions", ("model", "messages"), {}),
    "completions": (
        "/completions",
        ("model", "prompt"),
        {
            "prompt": _prompt,
            "suffix": _string,
            "echo": _boolean,
            "best_of": _integer(1, 20),
            "logprobs": _integer(0, 5),
        },
    ),
    "images": (
        "/images/generations",
        ("model", "prompt"),
        {
            "prompt": _string,
            "n": _integer(1, 10),
            "size": _size,
            "quality": _one_of("auto", "standard", "hd", "low", "medium", "high"),
            "style": _one_of("vivid", "natural"),
            "background": _one_of("auto", "transparent", "opaque"),
            "output_format": _one_of("png", "jpeg", "webp"),
            "output_compression": _integer(0, 100),
            "response_format": _one_of("url", "b64_json"),
            "moderation": _one_of("auto", "low"),
        },
    ),
}


def check_body(body: Any, endpoint: str = "chat") -> dict[str, Any]:
    """Return a copy of BODY, for ENDPOINT, with every known field checked.

    Fields this module does not know are passed through untouched, so that
    new API parameters keep working; ``None`` values are dropped.
    """
    if not isinstance(body, dict):
        raise ConfigError("the request body must be a JSON object")
    _, required_fields, endpoint_fields = ENDPOINTS[endpoint]
    fields = {**FIELDS, **endpoint_fields}
    checked: dict[str, Any] = {}
    for name, value in body.items():
        if value is None:
            continue
        check = fields.get(name)
        checked[name] = check(name, value) if check else value
    for required in required_fields:
        if required not in checked:
            raise ConfigError(f"{required} is required", required)
    return checked


USAGE_IN_STREAMS = ("openai", "azure")
"""The APIs whose streams carry the token usage when asked with stream_options."""


@dataclass
class ChatRequest:
    """One chat completion to make: the body and where and how to send it."""

    body: dict[str, Any]
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    id: str | None = None
    key_header: str = "Authorization"
    api_version: str | None = None
    deployment: str | None = None
    provider: str = "openai"
    provider_name: str = "openai"
    max_retries: int = DEFAULT_MAX_RETRIES
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    missing_key: str | None = None
    endpoint: str = "chat"
    path: str = "/chat/completions"
    output: str | None = None
    boundary: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def multipart(self) -> bool:
        """Return whether the body goes as multipart form data (an image edit)."""
        return self.form is not None

    form: bytes | None = field(default=None, repr=False)

    def payload(self) -> bytes:
        """Return the bytes to post: the body as JSON, or the multipart form."""
        if self.form is not None:
            return self.form
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")

    @property
    def url(self) -> str:
        """Return the address for this request: its endpoint under the base URL."""
        url = self.base_url.rstrip("/")
        if self.deployment is not None:
            url += f"/openai/deployments/{quote(self.deployment, safe='')}"
        url += self.path
        if self.api_version:
            url += "?" + urlencode({"api-version": self.api_version})
        return url

    @property
    def stream(self) -> bool:
        """Return whether the reply is to be streamed."""
        return bool(self.body.get("stream"))

    def http_headers(self, *, redacted: bool = False) -> dict[str, str]:
        """Return the HTTP headers to send, every credential masked when REDACTED."""
        content_type = (
            f"multipart/form-data; boundary={self.boundary}"
            if self.multipart
            else "application/json"
        )
        headers = {
            "Content-Type": content_type,
            "Accept": "text/event-stream" if self.stream else "application/json",
        }
        if self.api_key:
            if self.key_header == "Authorization":
                headers["Authorization"] = f"Bearer {self.api_key}"
            else:
                headers[self.key_header] = self.api_key
        headers.update(self.headers)
        if redacted:
            return {
                name: mask_credential(name, value) for name, value in headers.items()
            }
        return headers

    def preview(self) -> dict[str, Any]:
        """Return what would be sent, as one JSON-ready object, key redacted."""
        return {
            "method": "POST",
            "url": self.url,
            "headers": self.http_headers(redacted=True),
            "body": shorten(self.body),
            **({"output": self.output} if self.output else {}),
        }


def mask_credential(name: str, value: str) -> str:
    """Return header NAME's VALUE as a preview shows it: masked if it is a credential.

    Authorization and the headers whose name says key, token, secret and
    the like are masked; an authorization scheme (``Bearer``) stays.
    """
    lowered = name.lower()
    if lowered not in CREDENTIAL_HEADERS and not any(
        word in lowered for word in CREDENTIAL_WORDS
    ):
        return value
    scheme, space, _ = value.partition(" ")
    if "authorization" in lowered and space and scheme.isalpha():
        return f"{scheme} ***"
    return "***"


def parse_request(
    envelope: Any,
    environ: Mapping[str, str] | None = None,
    *,
    require_key: bool = True,
    trusted: bool = False,
) -> ChatRequest:
    """Check ENVELOPE, a request object as Emacs sends it, and return it parsed.

    The envelope holds ``body`` (the request of its ``endpoint``: ``chat``,
    the default, ``completions`` or ``images``) and optionally ``id``,
    ``provider``, ``base_url``, ``api_key``, ``api_key_host``,
    ``headers``, ``api_version``, ``timeout``, ``max_retries`` and
    ``max_concurrent`` (else the provider's, else 6).  Where
    the request goes and which key it carries is decided by
    `chat_ai_helper.providers.resolve`, from ENVIRON; the envelope's
    base URL counts as the user's own only when TRUSTED.  A missing model
    is the provider's.  Without REQUIRE_KEY, a missing key is no error.
    """
    environ = os.environ if environ is None else environ
    if not isinstance(envelope, dict):
        raise ConfigError("the request must be a JSON object")
    request_id = envelope.get("id")
    if request_id is not None and not isinstance(request_id, str | int):
        raise ConfigError("id must be a string or a number", "id")
    endpoint = envelope.get("endpoint", "chat")
    if endpoint not in ENDPOINTS:
        raise ConfigError(
            f"endpoint must be chat, completions or images, not {shown(endpoint)}",
            "endpoint",
        )
    route = resolve(envelope, environ, trusted=trusted, require_key=require_key)
    given_body = envelope.get("body")
    if isinstance(given_body, dict) and "model" not in given_body:
        model = IMAGES_MODEL if endpoint == "images" else route.model
        given_body = {"model": model, **given_body}
    body = expand(check_body(given_body, endpoint))
    path, output, form = ENDPOINTS[endpoint][0], None, None
    boundary = secrets.token_hex(16)
    if endpoint == "images":
        path, output = _images_route(body, envelope.get("output"))
        if path == EDITS_PATH:
            form = edit_form(body, boundary)[0]
    if (
        endpoint in ("chat", "completions")
        and body.get("stream") is True
        and "stream_options" not in body
        and route.provider.api in USAGE_IN_STREAMS
    ):
        # For the usage log: the token count comes only when asked for.
        body = {**body, "stream_options": {"include_usage": True}}
    api_version = route.api_version
    deployment = None
    if route.deployments:
        if not api_version:
            raise ConfigError(
                "azure needs an API version: set OPENAI_API_VERSION or api_version "
                "(e.g. 2024-10-21)",
                "api_version",
            )
        deployment = str(body.get("model", ""))
    timeout = envelope.get("timeout", DEFAULT_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise ConfigError(
            f"timeout must be a number of seconds above 0 and at most "
            f"{MAX_TIMEOUT:g}, not {shown(timeout)}",
            "timeout",
        )
    max_retries = envelope.get("max_retries", DEFAULT_MAX_RETRIES)
    if (
        isinstance(max_retries, bool)
        or not isinstance(max_retries, int)
        or not (0 <= max_retries <= 10)
    ):
        raise ConfigError(
            "max_retries must be a whole number from 0 to 10, "
            f"not {shown(max_retries)}",
            "max_retries",
        )
    max_concurrent = envelope.get("max_concurrent")
    if max_concurrent is None:
        max_concurrent = route.provider.max_concurrent
    _integer(1, MAX_CONCURRENT)("max_concurrent", max_concurrent)
    return ChatRequest(
        body=body,
        max_retries=max_retries,
        max_concurrent=max_concurrent,
        base_url=route.base_url,
        api_key=route.api_key,
        headers=route.headers,
        timeout=float(timeout),
        id=None if request_id is None else str(request_id),
        key_header=route.provider.key_header,
        api_version=api_version,
        deployment=deployment,
        provider=route.provider.api,
        provider_name=route.provider.name,
        missing_key=route.missing_key,
        endpoint=endpoint,
        path=path,
        output=output,
        boundary=boundary,
        form=form,
    )


def _images_route(body: dict[str, Any], output: Any) -> tuple[str, str]:
    """Return the path and output file of an images BODY, made ready to send.

    With ``image`` it is an edit; streaming is not asked for.
    """
    if not isinstance(output, str) or not output:
        raise ConfigError(
            "the images endpoint needs output: the file to write the image to",
            "output",
        )
    body.pop("stream", None)
    body.pop("stream_options", None)
    if "image" not in body:
        if "mask" in body:
            raise ConfigError("mask needs an image to edit", "mask")
        return ENDPOINTS["images"][0], output
    image_paths(body["image"], "image")
    if "mask" in body:
        image_paths(body["mask"], "mask")
    return EDITS_PATH, output
