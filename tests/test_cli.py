"""The ``chat-ai`` command as a shell user runs it: flags, output, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from conftest import TEST_KEY, run_cli
from loopback_server import LoopbackServer


def test_prompt_argument_streams_the_reply(server: LoopbackServer) -> None:
    result = run_cli("--base-url", server.base_url, "Server-Sent Eventについて教えて")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode("utf-8") == "Server-Sent Eventについて教えて\n"
    body = server.received[0]["body"]
    assert body["stream"] is True
    assert body["model"] == "gpt-4o-mini"


def test_prompt_from_stdin_and_flags(server: LoopbackServer) -> None:
    result = run_cli(
        "--base-url",
        server.base_url,
        "-m",
        "mini",
        "-s",
        "You are terse.",
        "--temperature",
        "0.5",
        "--max-tokens",
        "9",
        "--no-stream",
        input='multi\nline "quoted"\n',
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == 'multi\nline "quoted"\n'
    body = server.received[0]["body"]
    assert body["model"] == "mini"
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": 'multi\nline "quoted"\n'},
    ]
    assert (body["temperature"], body["max_tokens"], body["stream"]) == (0.5, 9, False)


def test_options_are_read_as_json_when_they_parse(server: LoopbackServer) -> None:
    result = run_cli(
        "--base-url",
        server.base_url,
        "-o",
        "n=2",
        "-o",
        'stop=["###"]',
        "-o",
        "user=alice",
        "-o",
        "seed=7",
        "hi",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "hi\n\n[choice 2]\nhi #2\n"
    body = server.received[0]["body"]
    assert (body["n"], body["stop"], body["user"], body["seed"]) == (
        2,
        ["###"],
        "alice",
        7,
    )


def test_json_mode_reads_the_emacs_request(server: LoopbackServer) -> None:
    request = {
        "base_url": server.base_url,
        "body": {"model": "m", "messages": [{"role": "user", "content": "é"}]},
    }
    result = run_cli("--json", input=json.dumps(request))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "é\n"


def test_dry_run_prints_the_request_with_the_key_redacted(
    server: LoopbackServer,
) -> None:
    result = run_cli(
        "--dry-run",
        "--base-url",
        server.base_url,
        "-o",
        "temperature=0.1",
        "日本語",
        env={"OPENAI_API_KEY": TEST_KEY},
    )
    assert result.returncode == 0, result.stderr
    preview = json.loads(result.stdout)
    assert preview["url"] == server.base_url + "/chat/completions"
    assert preview["headers"]["Authorization"] == "Bearer ***"
    assert preview["body"]["messages"][0]["content"] == "日本語"
    assert preview["body"]["temperature"] == 0.1
    assert TEST_KEY not in result.stdout.decode()
    assert server.received == []


def test_utf8_output_whatever_the_locale(server: LoopbackServer) -> None:
    result = run_cli(
        "--base-url",
        server.base_url,
        "絵文字🎉",
        env={"LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": "ascii"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode("utf-8") == "絵文字🎉\n"


def test_api_error_exits_1_with_one_line_and_no_key(server: LoopbackServer) -> None:
    result = run_cli(
        "--base-url",
        server.base_url,
        "-m",
        "error-401-invalid_api_key",
        "hi",
        env={"OPENAI_API_KEY": TEST_KEY},
    )
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1
    assert stderr.startswith("chat-ai: HTTP 401 scenario_error invalid_api_key:")
    assert TEST_KEY not in stderr + result.stdout.decode()


def test_cut_stream_keeps_text_and_exits_1(server: LoopbackServer) -> None:
    result = run_cli("--base-url", server.base_url, "-m", "cut", "abcdefghij")
    assert result.returncode == 1
    assert result.stdout.decode() == "abcdef\n"
    assert "incomplete" in result.stderr.decode()


def test_bad_option_value_is_a_usage_error(server: LoopbackServer) -> None:
    result = run_cli("--base-url", server.base_url, "-o", "n=0", "hi")
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "chat-ai: n must be a whole number from 1 to 128, not 0\n"
    )
    assert server.received == []


def test_missing_key_for_a_remote_server_is_a_usage_error() -> None:
    result = run_cli("--base-url", "https://api.openai.com/v1", "hi")
    assert result.returncode == 2
    assert "no API key for api.openai.com" in result.stderr.decode()


def test_no_prompt_is_a_usage_error() -> None:
    result = run_cli("--base-url", "http://127.0.0.1:9/v1", input="  \n")
    assert result.returncode == 2
    assert result.stderr.decode() == "chat-ai: the prompt is empty\n"


def test_unknown_flag_is_a_usage_error() -> None:
    assert run_cli("--frobnicate").returncode == 2


def test_connection_refused_exits_1() -> None:
    result = run_cli("--base-url", "http://127.0.0.1:9/v1", "hi")
    assert result.returncode == 1
    assert "refused" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_ctrl_c_exits_quietly(server: LoopbackServer) -> None:
    command = [sys.executable, "-m", "chat_ai_helper", "--base-url", server.base_url]
    process = subprocess.Popen(
        [*command, "-m", "held", "a prompt held halfway"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.read(3) == b"a p"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert stderr == b""


def test_local_provider_goes_to_the_local_server_with_its_model(
    server: LoopbackServer,
) -> None:
    result = run_cli(
        "--provider", "local", "hi", env={"CHAT_AI_LOCAL_URL": server.base_url}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "hi\n"
    assert server.received[0]["body"]["model"] == "smollm2"
    assert "Authorization" not in server.received[0]["headers"]


def test_unknown_provider_is_a_usage_error(server: LoopbackServer) -> None:
    result = run_cli("-p", "nope", "hi")
    assert result.returncode == 2
    assert result.stderr.decode() == (
        'chat-ai: unknown provider "nope"; known: openai, azure, local\n'
    )


def test_proxy_with_its_own_header_as_in_the_seed(server: LoopbackServer) -> None:
    base_url = server.base_url.replace("/v1", "/api/v1")
    result = run_cli(
        "--base-url", base_url, "-H", "openai-event-code: hackathon/githubuser",
        "--max-tokens", "256", "--temperature", "1",
        "-s", "You are an AI assistant that writes poems in the style of "
        "William Shakespeare.",
        "Write a poem about indian elephants",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    received = server.received[0]
    assert received["path"] == "/api/v1/chat/completions"
    assert received["headers"]["openai-event-code"] == "hackathon/githubuser"
    assert "Authorization" not in received["headers"]
    assert received["body"]["max_tokens"] == 256


def test_azure_deployment_api_version_and_api_key_header(
    server: LoopbackServer,
) -> None:
    result = run_cli(
        "-p", "azure", "-m", "deployment-name", "--api-version", "2023-09-01-preview",
        "Where was it played?",
        env={
            "AZURE_OPENAI_ENDPOINT": server.base_url,
            "AZURE_OPENAI_API_KEY": TEST_KEY,
        },
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    received = server.received[0]
    assert received["path"] == "/v1/openai/deployments/deployment-name/chat/completions"
    assert received["query"] == "api-version=2023-09-01-preview"
    assert received["headers"]["api-key"] == TEST_KEY
    assert "Authorization" not in received["headers"]


def test_azure_deployments_serve_images_edits_and_completions(
    server: LoopbackServer, tmp_path: Path
) -> None:
    azure = {
        "AZURE_OPENAI_ENDPOINT": server.base_url,
        "AZURE_OPENAI_API_KEY": TEST_KEY,
        "OPENAI_API_VERSION": "2025-04-01-preview",
    }
    (tmp_path / "in.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    runs = [
        ("-e", "images", "-m", "painter", "-O", str(tmp_path / "cat.png"), "a cat"),
        (
            "-e", "images", "-m", "painter", "-a", str(tmp_path / "in.png"),
            "-O", str(tmp_path / "hat.png"), "add a hat",
        ),
        ("-e", "completions", "-m", "instruct", "def fib(n):"),
        ("-e", "completions", "-m", "instruct", "--no-stream", "x = 1"),
    ]  # fmt: skip
    for args in runs:
        result = run_cli("-p", "azure", *args, env=azure)
        assert result.returncode == 0, result.stderr
    deployments = "/v1/openai/deployments"
    assert [r["path"] for r in server.received] == [
        f"{deployments}/painter/images/generations",
        f"{deployments}/painter/images/edits",
        f"{deployments}/instruct/completions",
        f"{deployments}/instruct/completions",
    ]
    for received in server.received:
        assert received["query"] == "api-version=2025-04-01-preview"
        assert received["headers"]["api-key"] == TEST_KEY
        assert "Authorization" not in received["headers"]
    assert (tmp_path / "cat.png").exists() and (tmp_path / "hat.png").exists()


def test_azure_v1_endpoint_needs_no_api_version(server: LoopbackServer) -> None:
    result = run_cli(
        "-p", "azure", "-m", "gpt-4o", "hi",
        env={
            "AZURE_OPENAI_ENDPOINT": server.base_url.replace("/v1", "/openai/v1"),
            "AZURE_OPENAI_API_KEY": TEST_KEY,
        },
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert server.received[0]["path"] == "/openai/v1/chat/completions"
    assert server.received[0]["query"] == ""


def test_azure_without_an_api_version_is_a_usage_error(server: LoopbackServer) -> None:
    result = run_cli(
        "-p", "azure", "-m", "d", "hi",
        env={"AZURE_OPENAI_ENDPOINT": server.base_url, "AZURE_OPENAI_API_KEY": "k"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.decode().startswith("chat-ai: azure needs an API version")
    assert server.received == []


def test_bad_header_is_a_usage_error() -> None:
    result = run_cli("--base-url", "http://127.0.0.1:9/v1", "-H", "no colon", "hi")
    assert result.returncode == 2
    assert (
        result.stderr.decode() == "chat-ai: -H takes 'NAME: VALUE', not \"no colon\"\n"
    )


def test_providers_of_the_users_own_from_the_config_file(
    server: LoopbackServer, tmp_path: Path
) -> None:
    config = tmp_path / "config" / "chat-ai" / "providers.json"
    config.parent.mkdir(parents=True)
    config.write_text(
        json.dumps(
            {
                "event": {
                    "base_url": server.base_url.replace("/v1", "/api/v1"),
                    "model": "mymodel",
                    "headers": {"openai-event-code": "hackathon/me"},
                }
            }
        )
    )
    result = run_cli(
        "-p", "event", "hi", env={"XDG_CONFIG_HOME": str(tmp_path / "config")}
    )
    assert result.returncode == 0, result.stderr
    received = server.received[0]
    assert received["path"] == "/api/v1/chat/completions"
    assert received["body"]["model"] == "mymodel"
    assert received["headers"]["openai-event-code"] == "hackathon/me"
    unknown = run_cli(
        "-p", "nope", "hi", env={"XDG_CONFIG_HOME": str(tmp_path / "config")}
    )
    assert unknown.stderr.decode() == (
        'chat-ai: unknown provider "nope"; known: openai, azure, local, event\n'
    )


def test_a_broken_providers_file_is_a_usage_error(tmp_path: Path) -> None:
    broken = tmp_path / "providers.json"
    broken.write_text('{"x": {"model": "m"}}')
    result = run_cli("-p", "x", "hi", env={"CHAT_AI_PROVIDERS_FILE": str(broken)})
    assert result.returncode == 2
    assert result.stderr.decode() == (
        f'chat-ai: provider "x" in {broken} needs a base_url\n'
    )
