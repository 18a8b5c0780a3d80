"""The request model checks each field's type and range before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest

from chat_ai_helper.errors import ConfigError
from chat_ai_helper.request import check_body, parse_request

MESSAGES = [{"role": "user", "content": "hi"}]


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": MESSAGES, **fields}


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0.2},
        {"temperature": 2},
        {"top_p": 1},
        {"n": 3},
        {"stream": True},
        {"stop": "###"},
        {"stop": ["a", "b"]},
        {"max_tokens": 16},
        {"max_completion_tokens": 16},
        {"presence_penalty": -2},
        {"frequency_penalty": 1.5},
        {"logit_bias": {"50256": -100}},
        {"user": "me"},
        {"seed": 42},
        {"reasoning_effort": "low"},
        {"store": False},
        {"metadata": {"project": "notes"}},
        {"logprobs": True},
    ],
)
def test_valid_fields_pass_unchanged(fields: dict[str, Any]) -> None:
    assert check_body(body(**fields)) == body(**fields)


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"temperature": "hot"}, "temperature", "number from 0 to 2"),
        ({"temperature": 3}, "temperature", "number from 0 to 2"),
        ({"temperature": True}, "temperature", "number"),
        ({"n": 0}, "n", "whole number from 1"),
        ({"n": 1.5}, "n", "whole number"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"stop": 3}, "stop", "string or a list"),
        ({"stop": ["a"] * 5}, "stop", "up to 4"),
        ({"max_tokens": 0}, "max_tokens", "1 or more"),
        ({"logit_bias": {"x": 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"1": 200}}, "logit_bias", "-100 to 100"),
        ({"metadata": {"a": 1}}, "metadata", "string"),
        ({"response_format": {"type": "yaml"}}, "response_format", "json_schema"),
        ({"model": ""}, "model", "non-empty string"),
        ({"messages": []}, "messages", "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages", "role"),
    ],
)
def test_invalid_fields_are_refused_by_name(
    fields: dict[str, Any], param: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_body(body(**fields))
    assert caught.value.param == param
    assert words in str(caught.value)
    assert param in str(caught.value)


def test_a_bare_json_schema_becomes_a_json_schema_format() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    assert check_body(body(response_format=schema))["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema},
    }


def test_response_format_shorthands_become_objects() -> None:
    assert check_body(body(response_format="json"))["response_format"] == {
        "type": "json_object"
    }
    assert check_body(body(response_format="text"))["response_format"] == {
        "type": "text"
    }


def test_null_fields_are_dropped() -> None:
    assert check_body(body(temperature=None)) == body()


def test_model_and_messages_are_required() -> None:
    with pytest.raises(ConfigError, match="model is required"):
        check_body({"messages": MESSAGES})


def test_base_url_and_key_come_from_the_environment_when_absent() -> None:
    request = parse_request(
        {"body": body()},
        {"OPENAI_BASE_URL": "http://example.test/v1/", "OPENAI_API_KEY": "k"},
    )
    assert request.url == "http://example.test/v1/chat/completions"
    assert request.api_key == "k"


def test_the_envelope_wins_over_the_environment() -> None:
    request = parse_request(
        {"body": body(), "base_url": "http://a.test/v1", "api_key": "mine"},
        {"OPENAI_BASE_URL": "http://b.test/v1", "OPENAI_API_KEY": "theirs"},
    )
    assert (request.base_url, request.api_key) == ("http://a.test/v1", "mine")


def test_a_remote_server_needs_a_key_but_loopback_does_not() -> None:
    with pytest.raises(ConfigError, match=r"no API key for api\.openai\.com"):
        parse_request({"body": body()}, {})
    assert parse_request({"body": body(), "base_url": "http://127.0.0.1:9/v1"}, {})


def test_a_proxy_with_its_own_headers_needs_no_key() -> None:
    request = parse_request(
        {
            "body": body(),
            "base_url": "https://proxy.example/api/v1",
            "headers": {"openai-event-code": "hackathon/me"},
        },
        {},
    )
    assert request.http_headers()["openai-event-code"] == "hackathon/me"
    assert "Authorization" not in request.http_headers()


def test_azure_key_goes_in_the_api_key_header_and_is_redacted() -> None:
    with pytest.raises(ConfigError, match="set AZURE_OPENAI_API_KEY"):
        parse_request(
            {"body": body(), "provider": "azure", "api_version": "2024-10-21"},
            {
                "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
                "OPENAI_API_KEY": "x",
            },
        )
    request = parse_request(
        {"body": body(), "provider": "azure", "api_version": "2024-10-21"},
        {
            "AZURE_OPENAI_ENDPOINT": "https://me.openai.azure.com",
            "AZURE_OPENAI_API_KEY": "az-secret",
        },
    )
    assert request.url == (
        "https://me.openai.azure.com/openai/deployments/m/chat/completions"
        "?api-version=2024-10-21"
    )
    assert request.http_headers()["api-key"] == "az-secret"
    assert request.preview()["headers"]["api-key"] == "***"


def test_preview_redacts_the_key() -> None:
    request = parse_request({"body": body(), "api_key": "sk-secret"}, {})
    preview = request.preview()
    assert preview["headers"]["Authorization"] == "Bearer ***"
    assert "sk-secret" not in repr(preview)
    assert "sk-secret" not in repr(request)


@pytest.mark.parametrize(
    ("envelope", "param"),
    [
        ({"base_url": "ftp://x"}, "base_url"),
        ({"timeout": 0}, "timeout"),
        ({"headers": {"X": 1}}, "headers"),
        ({"api_key": "a\nb"}, "api_key"),
    ],
)
def test_bad_envelope_fields_are_named(envelope: dict[str, Any], param: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_request({"body": body(), "api_key": "k", **envelope}, {})
    assert caught.value.param == param
