"""``chat-ai doctor`` as a shell user runs it, against the loopback server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from conftest import TEST_KEY, run_cli
from loopback_server import LoopbackServer


def providers_file(tmp_path: Path, **entries: dict[str, Any]) -> dict[str, str]:
    """Write a providers.json holding ENTRIES; return the environment that uses it."""
    path = tmp_path / "providers.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return {"CHAT_AI_PROVIDERS_FILE": str(path)}


def test_doctor_checks_the_chosen_provider_and_masks_its_key(
    server: LoopbackServer, tmp_path: Path
) -> None:
    env = providers_file(
        tmp_path, loop={"base_url": server.base_url, "api_key_env": "LOOP_KEY"}
    )
    env["LOOP_KEY"] = TEST_KEY
    env["HTTPS_PROXY"] = "http://me:proxy-secret@proxy.example:3128"
    result = run_cli("doctor", "--provider", "loop", env=env)
    text = result.stdout.decode("utf-8")
    assert result.returncode == 0, text + result.stderr.decode()
    assert f"chat-ai 0.1.0 (protocol 1) at {sys.executable} -m chat_ai_helper\n" in text
    assert "python:  3." in text
    assert f"loop: {server.base_url}, key: $LOOP_KEY sk-…ET" in text
    assert "HTTPS_PROXY=http://me:***@proxy.example:3128" in text
    assert "check:   loop: ok in " in text
    assert "answered" in text
    assert TEST_KEY not in text and "proxy-secret" not in text
    (request,) = server.received
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {TEST_KEY}"


def test_doctor_json_takes_keys_on_stdin_and_names_their_source(
    server: LoopbackServer, tmp_path: Path
) -> None:
    env = providers_file(tmp_path, loop={"base_url": server.base_url})
    given = {"keys": {"loop": {"key": TEST_KEY, "source": "auth-source"}}}
    result = run_cli(
        "doctor",
        "-p",
        "loop",
        "--json",
        "--keys-on-stdin",
        input=json.dumps(given),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert TEST_KEY.encode() not in result.stdout
    found = json.loads(result.stdout)
    loop = next(p for p in found["providers"] if p["name"] == "loop")
    assert (loop["key_source"], loop["key"]) == ("auth-source", "sk-…ET")
    assert found["check"]["ok"] is True
    assert isinstance(found["check"]["latency_ms"], int)
    assert server.received[0]["headers"]["Authorization"] == f"Bearer {TEST_KEY}"


def test_doctor_says_what_failed_and_the_fix() -> None:
    result = run_cli(
        "doctor", "-p", "local", env={"CHAT_AI_LOCAL_URL": "http://127.0.0.1:9/v1"}
    )
    text = result.stdout.decode("utf-8")
    assert result.returncode == 1
    assert "check:   local: FAILED in " in text
    assert "connection to 127.0.0.1:9 refused" in text
    assert "    fix: start the local model with: chat-ai-local start" in text


def test_doctor_without_a_key_says_where_to_put_one() -> None:
    result = run_cli("doctor", "--no-check")
    text = result.stdout.decode("utf-8")
    assert result.returncode == 1
    assert "problem: no API key: $OPENAI_API_KEY is not set" in text
    assert "machine api.openai.com password KEY" in text
    assert "check:" not in text


def test_the_prompt_doctor_is_asked_after_two_dashes(server: LoopbackServer) -> None:
    result = run_cli("--", "doctor", env={"OPENAI_BASE_URL": server.base_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "doctor\n"
    assert server.received[0]["body"]["messages"][-1]["content"] == "doctor"


def test_doctor_with_a_prompt_after_it_says_how_to_ask_it() -> None:
    result = run_cli("doctor", "who")
    assert result.returncode == 2
    assert b"chat-ai -- doctor" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_broken_providers_file_is_a_problem_with_its_fix(tmp_path: Path) -> None:
    path = tmp_path / "providers.json"
    path.write_text("{not json", encoding="utf-8")
    result = run_cli("doctor", env={"CHAT_AI_PROVIDERS_FILE": str(path)})
    text = result.stdout.decode("utf-8")
    assert result.returncode == 1
    assert f"problem: cannot read the providers file {path}" in text
    assert f"fix: correct or remove {path}" in text
    assert "check:   openai: FAILED: cannot read the providers file" in text
    assert b"Traceback" not in result.stderr
