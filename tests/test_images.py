"""The images endpoint: images made or edited, written to files, downloaded."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import TEST_KEY
from loopback_server import LoopbackServer, image_bytes
from test_attachments import JPEG, PNG, serve


def images(server: LoopbackServer, output: Path, **body: Any) -> dict[str, Any]:
    return {
        "id": "i",
        "endpoint": "images",
        "base_url": server.base_url,
        "api_key": TEST_KEY,
        "output": str(output),
        "body": {"model": "gpt-image-1", "prompt": "a cat", "stream": True, **body},
    }


def test_a_b64_image_is_written_to_the_output_file(
    server: LoopbackServer, tmp_path: Path
) -> None:
    out = tmp_path / "pics" / "cat.png"
    events = serve(images(server, out, size="1024x1024", quality="high"))
    assert events == [
        {
            "id": "i",
            "type": "done",
            "finish_reasons": ["stop"],
            "usage": None,
            "model": "gpt-image-1",
            "files": [str(out)],
            "cost": None,
        }
    ]
    assert out.read_bytes() == image_bytes("gpt-image-1-1.png")
    received = server.received[0]
    assert received["path"] == "/v1/images/generations"
    assert received["body"] == {
        "model": "gpt-image-1",
        "prompt": "a cat",
        "size": "1024x1024",
        "quality": "high",
    }


def test_n_images_get_numbered_names(server: LoopbackServer, tmp_path: Path) -> None:
    out = tmp_path / "cat.png"
    events = serve(images(server, out, n=3))
    second, third = tmp_path / "cat-2.png", tmp_path / "cat-3.png"
    assert events[-1]["files"] == [str(out), str(second), str(third)]
    assert second.read_bytes() == image_bytes("gpt-image-1-2.png")
    assert third.read_bytes() == image_bytes("gpt-image-1-3.png")


def test_a_url_reply_is_downloaded_with_the_key_only_from_the_api_origin(
    server: LoopbackServer, tmp_path: Path
) -> None:
    serve(
        images(server, tmp_path / "same.png", model="url"),
        {**images(server, tmp_path / "other.png", model="url-elsewhere"), "id": "j"},
    )
    assert (tmp_path / "same.png").read_bytes() == image_bytes("url-1.png")
    assert (tmp_path / "other.png").read_bytes() == image_bytes("url-elsewhere-1.png")
    downloads = {r["path"]: r["headers"] for r in server.received if "body" not in r}
    assert downloads["/files/url-1.png"]["Authorization"] == f"Bearer {TEST_KEY}"
    assert downloads["/files/url-elsewhere-1.png"]["Host"].startswith("localhost:")
    assert "Authorization" not in downloads["/files/url-elsewhere-1.png"]


def test_an_edit_goes_as_multipart_with_the_image_and_mask(
    server: LoopbackServer, tmp_path: Path
) -> None:
    (tmp_path / "in.png").write_bytes(PNG)
    (tmp_path / "mask.png").write_bytes(PNG[:40])
    out = tmp_path / "out.png"
    events = serve(
        images(
            server,
            out,
            image=str(tmp_path / "in.png"),
            mask=str(tmp_path / "mask.png"),
            n=1,
        )
    )
    assert events[-1]["files"] == [str(out)]
    received = server.received[0]
    assert received["path"] == "/v1/images/edits"
    assert received["headers"]["Content-Type"].startswith("multipart/form-data")
    assert received["form"] == {
        "image": [
            {
                "filename": "in.png",
                "type": "image/png",
                "b64": base64.b64encode(PNG).decode(),
            }
        ],
        "mask": [
            {
                "filename": "mask.png",
                "type": "image/png",
                "b64": base64.b64encode(PNG[:40]).decode(),
            }
        ],
        "model": "gpt-image-1",
        "prompt": "a cat",
        "n": "1",
    }


def test_images_fields_and_files_are_checked_before_sending(
    server: LoopbackServer, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    requests = [
        images(server, tmp_path / "a.png", size="huge"),
        images(server, tmp_path / "a.png", style="cubist"),
        images(server, tmp_path / "a.png", n=11),
        images(server, tmp_path / "a.png", image=str(tmp_path / "gone.png")),
        images(server, tmp_path / "a.png", image=str(tmp_path / "notes.txt")),
        {**images(server, tmp_path / "a.png"), "output": None},
        images(server, tmp_path / "a.png", image="https://example.com/cat.png"),
        images(
            server,
            tmp_path / "a.png",
            image=str(tmp_path / "notes.txt"),
            mask="HTTP://example.com/mask.png",
        ),
    ]
    events = serve(*({**r, "id": str(i)} for i, r in enumerate(requests)))
    assert sorted(e["message"] for e in events) == sorted(
        [
            'size must be WIDTHxHEIGHT or auto, not "huge"',
            'style must be one of vivid, natural, not "cubist"',
            "n must be a whole number from 1 to 10, not 11",
            f"{tmp_path / 'gone.png'}: no such file",
            f"{tmp_path / 'notes.txt'}: the image must be a PNG, JPEG, GIF "
            "or WebP image",
            "the images endpoint needs output: the file to write the image to",
            "https://example.com/cat.png: the images endpoint edits local files, "
            "not URLs; download the image and give its path",
            "HTTP://example.com/mask.png: the images endpoint edits local files, "
            "not URLs; download the image and give its path",
        ]
    )
    assert server.received == []


def test_cli_images_generation_and_edit(server: LoopbackServer, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "chat_ai_helper",
                "--base-url",
                server.base_url,
                *args,
            ],
            cwd=tmp_path,
            env={**os.environ, "OPENAI_API_KEY": TEST_KEY},
            capture_output=True,
            timeout=60,
            check=False,
        )

    result = cli("--endpoint", "images", "-O", "cat.png", "-o", "n=2", "a cat")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == (
        f"{tmp_path / 'cat.png'}\n{tmp_path / 'cat-2.png'}\n"
    )
    assert (tmp_path / "cat-2.png").read_bytes() == image_bytes("gpt-image-1-2.png")
    (tmp_path / "in.jpg").write_bytes(JPEG)
    result = cli("-e", "images", "-a", "in.jpg", "--output", "edit.png", "add a hat")
    assert result.returncode == 0, result.stderr
    assert server.received[-1]["path"] == "/v1/images/edits"
    assert server.received[-1]["form"]["image"][0]["type"] == "image/jpeg"
    assert (tmp_path / "edit.png").exists()
    result = cli(
        "-e", "images", "-a", "https://example.com/in.png", "-O", "x.png", "hi"
    )
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "chat-ai: https://example.com/in.png: the images endpoint edits local files, "
        "not URLs; download the image and give its path\n"
    )
    result = cli("--endpoint", "images", "-o", "hokusai.png", "-o", "n=1", "a cat")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"{tmp_path / 'hokusai.png'}\n"
    assert server.received[-1]["body"]["n"] == 1
    result = cli("-e", "images", "-o", "a.png", "-o", "b.png", "a dog")
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "chat-ai: --endpoint images needs --output FILE (-O FILE)\n"
    )
    result = cli("-e", "images", "a dog")
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "chat-ai: --endpoint images needs --output FILE (-O FILE)\n"
    )
