"""Files in the prompt: what the server receives for images, PDFs, audio and text."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import run_cli
from loopback_server import LoopbackServer

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(255, -1, -1))
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << >> endobj\n%%EOF\n"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32)


def serve(*requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Send REQUESTS to ``chat-ai --serve`` and return its events."""
    result = subprocess.run(
        [sys.executable, "-m", "chat_ai_helper", "--serve"],
        input="".join(json.dumps(r) + "\n" for r in requests).encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def ask(server: LoopbackServer, *parts: dict[str, Any], **fields: Any) -> Any:
    """Return a request whose user message is a text part and PARTS."""
    content = [{"type": "text", "text": "what is this?"}, *parts]
    return {
        "id": "1",
        "base_url": server.base_url,
        "body": {"model": "m", "messages": [{"role": "user", "content": content}]},
        **fields,
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sent_content(server: LoopbackServer) -> Any:
    return server.received[0]["body"]["messages"][0]["content"]


def test_png_jpeg_and_pdf_become_exact_content_parts(
    server: LoopbackServer, tmp_path: Path
) -> None:
    (tmp_path / "diagram.png").write_bytes(PNG)
    (tmp_path / "photo.JPG").write_bytes(JPEG)
    (tmp_path / "paper.pdf").write_bytes(PDF)
    events = serve(
        ask(
            server,
            {"type": "local_file", "path": str(tmp_path / "diagram.png")},
            {
                "type": "local_file",
                "path": str(tmp_path / "photo.JPG"),
                "detail": "low",
            },
            {"type": "local_file", "path": str(tmp_path / "paper.pdf")},
        )
    )
    assert events[-1]["type"] == "done", events
    assert sent_content(server) == [
        {"type": "text", "text": "what is this?"},
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{b64(PNG)}"},
        },
        {
            "type": "image_url",
            "image_url": {
                "url": f"data:image/jpeg;base64,{b64(JPEG)}",
                "detail": "low",
            },
        },
        {
            "type": "file",
            "file": {
                "filename": "paper.pdf",
                "file_data": f"data:application/pdf;base64,{b64(PDF)}",
            },
        },
    ]


def test_the_kind_comes_from_the_bytes_before_the_name(
    server: LoopbackServer, tmp_path: Path
) -> None:
    (tmp_path / "really-a-jpeg.png").write_bytes(JPEG)
    serve(
        ask(server, {"type": "local_file", "path": str(tmp_path / "really-a-jpeg.png")})
    )
    assert sent_content(server)[1]["image_url"]["url"].startswith("data:image/jpeg;")


def test_audio_and_text_files(server: LoopbackServer, tmp_path: Path) -> None:
    (tmp_path / "voice.wav").write_bytes(WAV)
    (tmp_path / "notes.py").write_text("print('```')\n", encoding="utf-8")
    serve(
        ask(
            server,
            {"type": "local_file", "path": str(tmp_path / "voice.wav")},
            {"type": "local_file", "path": str(tmp_path / "notes.py")},
        )
    )
    assert sent_content(server)[1:] == [
        {"type": "input_audio", "input_audio": {"data": b64(WAV), "format": "wav"}},
        {"type": "text", "text": "notes.py:\n````py\nprint('```')\n````"},
    ]


def test_a_remote_image_url_is_passed_as_a_url(server: LoopbackServer) -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}
    serve(ask(server, part))
    assert sent_content(server)[1] == part


def test_a_missing_file_is_refused_before_anything_is_sent(
    server: LoopbackServer, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.png"
    events = serve(ask(server, {"type": "local_file", "path": str(missing)}))
    assert events[-1]["type"] == "error"
    assert events[-1]["kind"] == "invalid"
    assert events[-1]["message"] == f"{missing}: no such file"
    assert server.received == []


def test_an_image_over_the_limit_is_refused_saying_the_limit(
    server: LoopbackServer, tmp_path: Path
) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as stream:
        stream.write(PNG)
        stream.truncate(20 * 1024 * 1024 + 1)
    events = serve(ask(server, {"type": "local_file", "path": str(big)}))
    assert events[-1]["message"] == (
        f"{big}: the image is 20.0 MB; the API takes at most 20 MB per image"
    )
    assert server.received == []


def test_an_unreadable_or_binary_file_is_refused(
    server: LoopbackServer, tmp_path: Path
) -> None:
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\xff\xfe\x80")
    events = serve(ask(server, {"type": "local_file", "path": str(binary)}))
    assert events[-1]["message"] == (
        f"{binary}: not an image, PDF, audio or UTF-8 text file"
    )
    events = serve(ask(server, {"type": "local_file", "path": str(tmp_path)}))
    assert events[-1]["message"] == f"{tmp_path}: is a directory, not a file"
    assert server.received == []


def test_a_dry_run_shows_the_data_urls_shortened(
    server: LoopbackServer, tmp_path: Path
) -> None:
    image = tmp_path / "diagram.png"
    image.write_bytes(PNG * 4)
    events = serve(
        ask(server, {"type": "local_file", "path": str(image)}, dry_run=True)
    )
    url = events[0]["request"]["body"]["messages"][0]["content"][1]["image_url"]["url"]
    assert url == f"data:image/png;base64,{b64(PNG * 4)[:40]}… ({len(PNG) * 4} bytes)"
    assert server.received == []


def test_cli_attaches_files_and_urls(server: LoopbackServer, tmp_path: Path) -> None:
    (tmp_path / "diagram.png").write_bytes(PNG)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chat_ai_helper",
            "--base-url",
            server.base_url,
            "-a",
            "diagram.png",
            "-a",
            "https://example.com/x.png",
            "--detail",
            "high",
            "what is this?",
        ],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert sent_content(server) == [
        {"type": "text", "text": "what is this?"},
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{b64(PNG)}", "detail": "high"},
        },
        {
            "type": "image_url",
            "image_url": {"url": "https://example.com/x.png", "detail": "high"},
        },
    ]


def test_cli_refuses_a_missing_attachment_in_one_line(
    server: LoopbackServer, tmp_path: Path
) -> None:
    missing = tmp_path / "gone.pdf"
    result = run_cli("--base-url", server.base_url, "-a", str(missing), "read this")
    assert result.returncode == 2
    assert result.stderr.decode() == f"chat-ai: {missing}: no such file\n"
    assert server.received == []
