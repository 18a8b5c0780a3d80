"""The images endpoint: a prompt (and images to edit) in, image files out.

A request to ``/images/generations`` is JSON; one that names images to
edit (``image``, and perhaps a ``mask``, as paths) goes to
``/images/edits`` as multipart form data, the files read here.  Each
image of the reply, ``b64_json`` or a ``url`` to download, is written to
the request's ``output`` path, the second and later ones with ``-2``,
``-3`` … before the extension.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from urllib3.filepost import encode_multipart_formdata

from chat_ai_helper.attachments import KINDS, read_file
from chat_ai_helper.errors import APIError, ConfigError, NetworkError
from chat_ai_helper.urls import origin

EDITS_PATH = "/images/edits"
IMAGES_MODEL = "gpt-image-1"
DOWNLOAD_LIMIT = 64 * 1024 * 1024


def image_paths(value: Any, name: str) -> list[str]:
    """Return VALUE, the paths of field NAME, as a list, refusing anything else."""
    paths = [value] if isinstance(value, str) else value
    if (
        not isinstance(paths, list)
        or not paths
        or not all(isinstance(p, str) and p for p in paths)
    ):
        raise ConfigError(f"{name} must be a path or a list of paths", name)
    for path in paths:
        if path.lower().startswith(("http://", "https://")):
            raise ConfigError(
                f"{path}: the images endpoint edits local files, not URLs; "
                "download the image and give its path",
                name,
            )
    return paths


def edit_form(body: dict[str, Any], boundary: str) -> tuple[bytes, str]:
    """Return BODY as the multipart form of an edit, and its content type.

    The images of ``image`` and the ``mask`` are read from their paths;
    each must be an image within the API's limit.
    """
    paths = image_paths(body["image"], "image")
    field = "image" if len(paths) == 1 else "image[]"
    fields: list[tuple[str, Any]] = [
        (field, _image_file(path, "image")) for path in paths
    ]
    if "mask" in body:
        fields.append(
            ("mask", _image_file(image_paths(body["mask"], "mask")[0], "mask"))
        )
    for name, value in body.items():
        if name not in ("image", "mask"):
            text = value if isinstance(value, str) else json.dumps(value)
            fields.append((name, text))
    return encode_multipart_formdata(fields, boundary=boundary)


def _image_file(name: str, field: str) -> tuple[str, bytes, str]:
    path = Path(name).expanduser().absolute()
    kind, data = read_file(path)
    if KINDS[kind].part != "image_url":
        raise ConfigError(
            f"{path}: the {field} must be a PNG, JPEG, GIF or WebP image", field
        )
    return path.name, data, KINDS[kind].mime


def output_paths(output: str, count: int) -> list[Path]:
    """Return where COUNT images go: OUTPUT, then OUTPUT with -2, -3 … suffixes."""
    first = Path(output).expanduser().absolute()
    return [first] + [
        first.with_name(f"{first.stem}-{number}{first.suffix}")
        for number in range(2, count + 1)
    ]


def read_images(
    response: requests.Response,
    payload: Any,
    output: str,
    session: requests.Session,
    key_headers: dict[str, str],
    base_origin: str,
    timeout: float,
) -> Iterator[list[str]]:
    """Write the images that PAYLOAD, the reply, holds to OUTPUT, and yield the paths.

    An image given as a ``url`` is downloaded from that address only;
    KEY_HEADERS go with the download only when it is on BASE_ORIGIN,
    the API's own origin.
    """
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not data:
        raise APIError("the reply has no images", status=response.status_code)
    written = []
    for path, image in zip(output_paths(output, len(data)), data, strict=True):
        if not isinstance(image, dict):
            raise APIError("the reply holds an image that is not an object")
        if isinstance(image.get("b64_json"), str):
            try:
                content = base64.b64decode(image["b64_json"], validate=True)
            except (binascii.Error, ValueError):
                raise APIError("the reply holds an image that is not base64") from None
        elif isinstance(image.get("url"), str):
            content = _download(
                image["url"], session, key_headers, base_origin, timeout
            )
        else:
            raise APIError("the reply holds an image with neither b64_json nor url")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.write_bytes(content)
        except OSError as error:
            raise ConfigError(
                f"{path}: cannot be written ({error.strerror or error})", "output"
            ) from None
        written.append(str(path))
    yield written


def _download(
    url: str,
    session: requests.Session,
    key_headers: dict[str, str],
    base_origin: str,
    timeout: float,
) -> bytes:
    """Return the image at URL; the key goes along only to the API's own origin."""
    where = origin(url, "the image URL")
    same = str(where) == base_origin
    try:
        with session.get(
            url,
            headers=key_headers if same else {},
            timeout=timeout,
            stream=True,
            allow_redirects=not same,
        ) as response:
            if response.status_code != 200:
                raise APIError(
                    f"downloading the image from {where} failed",
                    status=response.status_code,
                )
            content = b""
            for chunk in response.iter_content(chunk_size=65536):
                content += chunk
                if len(content) > DOWNLOAD_LIMIT:
                    raise APIError(f"the image at {where} is larger than 64 MB")
            return content
    except requests.RequestException as error:
        raise NetworkError(
            f"cannot download the image from {where} ({type(error).__name__})"
        ) from None
