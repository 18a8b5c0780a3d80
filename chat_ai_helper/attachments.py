"""Files in a prompt: ``local_file`` content parts become the API's own parts.

Emacs and the command line name a file in a message as a content part
``{"type": "local_file", "path": PATH, "detail": "low"}``; the helper
reads it and puts in its place what the chat-completions API takes:

- an image (PNG, JPEG, GIF, WebP): an ``image_url`` part holding a
  ``data:`` URL of the file's exact bytes, with ``detail`` when asked;
- a PDF: a ``file`` part with ``filename`` and ``file_data`` (a
  ``data:application/pdf;base64,…`` URL);
- audio (WAV, MP3): an ``input_audio`` part with base64 ``data`` and
  ``format``;
- any other file: a ``text`` part naming the file, its UTF-8 text fenced.

The kind is read from the file's first bytes, else from its name.  A
missing, unreadable or too large file is refused before anything is
sent, in one line naming it.
"""

from __future__ import annotations

import base64
import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chat_ai_helper.errors import ConfigError, shown

MB = 1024 * 1024
DETAILS = ("auto", "low", "high")
SHOWN_DATA = 40


@dataclass(frozen=True)
class Kind:
    """What a file is: its part type, MIME type and size limit."""

    part: str
    mime: str
    limit: int
    label: str


IMAGE_LIMIT = 20 * MB
KINDS = {
    "png": Kind("image_url", "image/png", IMAGE_LIMIT, "image"),
    "jpeg": Kind("image_url", "image/jpeg", IMAGE_LIMIT, "image"),
    "gif": Kind("image_url", "image/gif", IMAGE_LIMIT, "image"),
    "webp": Kind("image_url", "image/webp", IMAGE_LIMIT, "image"),
    "pdf": Kind("file", "application/pdf", 32 * MB, "PDF"),
    "wav": Kind("input_audio", "audio/wav", 20 * MB, "audio file"),
    "mp3": Kind("input_audio", "audio/mpeg", 20 * MB, "audio file"),
    "text": Kind("text", "text/plain", 2 * MB, "text file"),
}
SUFFIXES = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".gif": "gif",
    ".webp": "webp",
    ".pdf": "pdf",
    ".wav": "wav",
    ".mp3": "mp3",
}


def sniff(head: bytes) -> str | None:
    """Return the kind of file whose first bytes are HEAD, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    return None


def kind_of(path: Path, head: bytes) -> str:
    """Return the kind of the file at PATH, whose first bytes are HEAD."""
    return sniff(head) or SUFFIXES.get(path.suffix.lower(), "text")


def read_file(path: Path) -> tuple[str, bytes]:
    """Return the kind and bytes of the file at PATH, refusing what cannot be sent."""
    try:
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            kind = kind_of(path, stream.read(16))
            limit = KINDS[kind].limit
            if size > limit:
                raise ConfigError(
                    f"{path}: the {KINDS[kind].label} is {size / MB:.1f} MB; "
                    f"the API takes at most {limit // MB} MB per {KINDS[kind].label}",
                    "path",
                )
            stream.seek(0)
            data = stream.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", "path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a file", "path") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"{path}: cannot be read ({reason})", "path") from None
    return kind, data


def data_url(mime: str, data: bytes) -> str:
    """Return DATA as a ``data:`` URL of type MIME."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def file_part(spec: dict[str, Any]) -> dict[str, Any]:
    """Return the API content part for SPEC, a ``local_file`` part."""
    raw = spec.get("path")
    if not isinstance(raw, str) or not raw:
        raise ConfigError("a local_file part needs a path", "path")
    detail = spec.get("detail")
    if detail is not None and detail not in DETAILS:
        raise ConfigError(
            f"detail must be auto, low or high, not {shown(detail)}", "detail"
        )
    path = Path(raw).expanduser().absolute()
    kind, data = read_file(path)
    found = KINDS[kind]
    if found.part == "image_url":
        image: dict[str, Any] = {"url": data_url(found.mime, data)}
        if detail:
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    if found.part == "file":
        return {
            "type": "file",
            "file": {"filename": path.name, "file_data": data_url(found.mime, data)},
        }
    if found.part == "input_audio":
        encoded = base64.b64encode(data).decode("ascii")
        return {"type": "input_audio", "input_audio": {"data": encoded, "format": kind}}
    return {"type": "text", "text": fenced(path, data)}


def fenced(path: Path, data: bytes) -> str:
    """Return the text of file PATH, holding DATA, named and fenced in Markdown."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: not an image, PDF, audio or UTF-8 text file", "path"
        ) from None
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    language = path.suffix.lstrip(".")
    ending = "" if text.endswith("\n") or not text else "\n"
    return f"{path.name}:\n{fence}{language}\n{text}{ending}{fence}"


def expand(body: dict[str, Any]) -> dict[str, Any]:
    """Return BODY with each ``local_file`` part of its messages read in.

    BODY itself is left as it is; a body with no such part is returned
    unchanged.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not any(
        _has_local_file(message) for message in messages
    ):
        return body
    expanded = []
    for message in messages:
        if _has_local_file(message):
            parts = [
                file_part(part) if _is_local_file(part) else part
                for part in message["content"]
            ]
            message = {**message, "content": parts}
        expanded.append(message)
    return {**body, "messages": expanded}


def _is_local_file(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "local_file"


def _has_local_file(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and isinstance(message.get("content"), list)
        and any(_is_local_file(part) for part in message["content"])
    )


def shorten(value: Any) -> Any:
    """Return VALUE, a request body, with long base64 data cut short for showing."""
    value = copy.deepcopy(value)
    _shorten_in(value)
    return value


def _shorten_in(value: Any) -> None:
    items: Any = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in list(items):
        if isinstance(item, str) and len(item) > SHOWN_DATA * 2:
            if item.startswith("data:") and ";base64," in item:
                value[key] = _short(item, item.index(",") + 1)
            elif key == "data":
                value[key] = _short(item, 0)
        elif isinstance(item, dict | list):
            _shorten_in(item)


def _short(text: str, start: int) -> str:
    size = (len(text) - start) * 3 // 4 - (len(text) - len(text.rstrip("=")))
    return f"{text[: start + SHOWN_DATA]}… ({size} bytes)"


def text_part(text: str) -> dict[str, Any]:
    """Return TEXT as a content part."""
    return {"type": "text", "text": text}


def attachment_part(name: str, detail: str | None = None) -> dict[str, Any]:
    """Return the content part that asks for NAME, a file or an image URL.

    An ``https://`` or ``http://`` address is an image the API fetches
    itself; anything else is a file here, read when the request is.
    """
    if name.startswith(("https://", "http://")):
        image: dict[str, Any] = {"url": name}
        if detail:
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    part: dict[str, Any] = {"type": "local_file", "path": os.path.abspath(name)}
    if detail:
        part["detail"] = detail
    return part
