"""The ``chat-ai`` command: ask a chat model from the shell, or serve Emacs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO, Any

from chat_ai_helper import __version__
from chat_ai_helper.errors import ChatAIError, ConfigError, InternalError, shown
from chat_ai_helper.providers import DEFAULT_MODEL

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``chat-ai`` command."""
    parser = argparse.ArgumentParser(
        prog="chat-ai",
        description="Ask an OpenAI-compatible chat model; the reply streams to "
        "stdout. The prompt is the arguments, or standard input.",
    )
    parser.add_argument("prompt", nargs="*", help="the user message")
    parser.add_argument(
        "-e",
        "--endpoint",
        choices=("chat", "completions", "images"),
        default="chat",
        help="chat (the default), completions (the legacy endpoint: the prompt "
        "as it is) or images (make an image, or edit the attached one)",
    )
    parser.add_argument(
        "-m",
        "--model",
        help="model name (default: $CHAT_AI_MODEL, else the provider's, "
        f"else {DEFAULT_MODEL})",
    )
    parser.add_argument("-s", "--system", help="a system message")
    parser.add_argument(
        "-a",
        "--attach",
        action="append",
        default=[],
        metavar="FILE",
        help="send FILE with the prompt: an image (or an https:// image URL), "
        "a PDF, WAV or MP3 audio, or a text file; repeat for more",
    )
    parser.add_argument(
        "-O",
        "--output",
        metavar="FILE",
        help="--endpoint images: write the image to FILE (FILE-2, FILE-3 … "
        "for more than one) and print its name",
    )
    parser.add_argument(
        "--detail",
        choices=("auto", "low", "high"),
        help="how closely the model looks at attached images",
    )
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument(
        "-p",
        "--provider",
        help="openai (the default), azure, local (the model chat-ai-local serves), "
        "or one of yours in providers.json",
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra HTTP header, as curl takes it; repeat for more",
    )
    parser.add_argument(
        "--api-version",
        help="the api-version query parameter (azure; default $OPENAI_API_VERSION)",
    )
    parser.add_argument(
        "--base-url",
        help="API base URL (default: $OPENAI_BASE_URL or https://api.openai.com/v1)",
    )
    parser.add_argument(
        "--no-stream", action="store_true", help="wait for the whole reply"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the server to answer (default 600)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        help="how often to try again after a connection failure, a rate "
        "limit or a server error (default 2)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        help="how many requests may be in flight to one server at once "
        "(default: the provider's max_concurrent, else 6)",
    )
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any request field; VALUE is read as JSON when it parses "
        "(-o n=2 -o stop='[\"###\"]'); with --endpoint images, -o FILE "
        "without = is --output FILE",
    )
    parser.add_argument(
        "--reasoning",
        action="store_true",
        help="show a reasoning model's thinking on stderr (hidden by default)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="read a whole request object on stdin, as Emacs sends it",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the request that would be sent, key redacted; send nothing",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="answer JSON-line requests on stdin with JSON-line events (for Emacs)",
    )
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def _option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"-o takes KEY=VALUE, not {shown(text)}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def build_envelope(args: argparse.Namespace, stdin: IO[bytes]) -> dict[str, Any]:
    """Return the request object described by ARGS, reading STDIN as needed."""
    if args.json:
        try:
            envelope: dict[str, Any] = json.loads(stdin.read().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"--json: standard input is not a JSON object: {error}"
            ) from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("body"), dict):
            raise ConfigError('--json: expected an object with a "body" object')
    else:
        if args.prompt:
            prompt = " ".join(args.prompt)
        elif not sys.stdin.isatty():
            prompt = stdin.read().decode("utf-8", errors="replace")
        else:
            raise ConfigError("no prompt: give it as arguments or on standard input")
        if not prompt.strip():
            raise ConfigError("the prompt is empty")
        if args.endpoint == "chat":
            messages = [{"role": "user", "content": _content(prompt, args)}]
            if args.system:
                messages.insert(0, {"role": "system", "content": args.system})
            envelope = {"body": {"messages": messages, "stream": True}}
        else:
            envelope = _other_endpoint(prompt, args)
    if args.provider:
        envelope["provider"] = args.provider
    body = envelope["body"]
    for key, value in (
        ("model", args.model),
        ("temperature", args.temperature),
        ("max_tokens", args.max_tokens),
    ):
        if value is not None:
            body[key] = value
    if args.no_stream:
        body["stream"] = False
    for option in args.option:
        key, value = _option(option)
        body[key] = value
    if args.base_url:
        envelope["base_url"] = args.base_url
    if args.api_version:
        envelope["api_version"] = args.api_version
    if args.max_retries is not None:
        envelope["max_retries"] = args.max_retries
    if args.max_concurrent is not None:
        envelope["max_concurrent"] = args.max_concurrent
    if args.timeout is not None:
        envelope["timeout"] = args.timeout
    if args.header:
        envelope["headers"] = dict(_header(text) for text in args.header)
    return envelope


def _other_endpoint(prompt: str, args: argparse.Namespace) -> dict[str, Any]:
    """Return the request for PROMPT to the completions or images endpoint."""
    if args.system:
        raise ConfigError(f"--system is for chat, not --endpoint {args.endpoint}")
    if args.endpoint == "completions":
        if args.attach:
            raise ConfigError("--attach is for chat and images, not completions")
        return {"endpoint": "completions", "body": {"prompt": prompt, "stream": True}}
    files = [option for option in args.option if "=" not in option]
    if not args.output and len(files) == 1:
        # chat-ai -e images -o out.png: a file, as no request field can be.
        args.output = files[0]
        args.option.remove(files[0])
    if not args.output:
        raise ConfigError("--endpoint images needs --output FILE (-O FILE)")
    body: dict[str, Any] = {"prompt": prompt}
    if args.attach:
        body["image"] = [
            name if "://" in name else os.path.abspath(name) for name in args.attach
        ]
    return {
        "endpoint": "images",
        "output": os.path.abspath(args.output),
        "body": body,
    }


def _content(prompt: str, args: argparse.Namespace) -> Any:
    """Return the user message's content: PROMPT, with the files ARGS attach."""
    if not args.attach:
        return prompt
    from chat_ai_helper.attachments import attachment_part, text_part

    return [text_part(prompt)] + [
        attachment_part(name, args.detail) for name in args.attach
    ]


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ConfigError(f"-H takes 'NAME: VALUE', not {shown(text)}")
    return name.strip(), value.strip()


def _print_reply(
    envelope: dict[str, Any],
    trusted: bool,
    out: IO[str],
    err: IO[str],
    reasoning: bool = False,
) -> None:
    """Stream the reply to ENVELOPE to OUT; the thinking to ERR when REASONING.

    The first choice's thinking streams as it comes; with several
    choices, each later one's follows on ERR, headed ``[choice N
    thinking]``, as its answer is written to OUT.
    """
    from chat_ai_helper.client import (
        Client,
        Delta,
        Reasoning,
        Retry,
        ToolCall,
        retry_line,
    )
    from chat_ai_helper.request import parse_request
    from chat_ai_helper.usage import UsageLog, meter_for

    request = parse_request(envelope, trusted=trusted)
    log = UsageLog()
    meter = meter_for("cli", request, envelope)
    client = Client()
    others: dict[int, str] = {}
    other_thoughts: dict[int, str] = {}
    ended_with_newline = True
    thought = ""
    try:
        for event in client.complete(request):
            if isinstance(event, Delta | Reasoning):
                meter.text(event.text if isinstance(event, Delta) else "")
            if isinstance(event, Delta):
                if event.choice == 0:
                    if thought and not thought.endswith("\n"):
                        err.write("\n")
                        err.flush()
                    thought = ""
                    if event.text:
                        out.write(event.text)
                        out.flush()
                        ended_with_newline = event.text.endswith("\n")
                else:
                    others[event.choice] = others.get(event.choice, "") + event.text
            elif isinstance(event, Reasoning):
                if reasoning and event.choice == 0:
                    err.write(event.text)
                    err.flush()
                    thought = event.text
                elif reasoning:
                    text = other_thoughts.get(event.choice, "") + event.text
                    other_thoughts[event.choice] = text
            elif isinstance(event, Retry):
                err.write(f"chat-ai: {retry_line(event)}\n")
                err.flush()
            elif isinstance(event, ToolCall):
                continue
            else:
                for name in event.files or []:
                    out.write(name + "\n")
                log.end(meter, "done", usage=event.usage, model=event.model)
                if thought and not thought.endswith("\n"):
                    err.write("\n")
                for index in sorted(others.keys() | other_thoughts.keys()):
                    if other_thoughts.get(index):
                        out.flush()
                        err.write(
                            f"[choice {index + 1} thinking]\n"
                            f"{other_thoughts[index].rstrip()}\n"
                        )
                        err.flush()
                    text = others.get(index, "")
                    out.write(f"\n\n[choice {index + 1}]\n{text}")
                    ended_with_newline = text.endswith("\n")
                if not ended_with_newline:
                    out.write("\n")
                out.flush()
                for index, reason in enumerate(event.finish_reasons):
                    if reason in ("length", "content_filter"):
                        err.write(f"chat-ai: choice {index + 1} stopped: {reason}\n")
                    elif reason in ("tool_calls", "function_call"):
                        err.write(
                            f"chat-ai: choice {index + 1}: the model asked to call "
                            "a tool; chat-ai does not run tools\n"
                        )
    except ChatAIError as error:
        log.end(meter, "error", str(error.to_event().get("kind")))
        if not ended_with_newline:
            out.write("\n")
            out.flush()
        raise
    except KeyboardInterrupt:
        log.end(meter, "cancelled")
        raise
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Run the ``chat-ai`` command with ARGV and return its exit status.

    ``chat-ai doctor …`` runs the doctor (`chat_ai_helper.doctor`), and
    ``chat-ai usage …`` shows the usage log (`usage_main`); the prompts
    "doctor" and "usage" are asked with ``chat-ai -- doctor``.
    """
    argv = sys.argv[1:] if argv is None else argv
    subcommand = argv[0] if argv[:1] in (["doctor"], ["usage"]) else None
    args = None if subcommand else build_parser().parse_args(argv)
    with (
        open(
            sys.stdout.fileno(), "w", encoding="utf-8", errors="replace", closefd=False
        ) as out,
        open(
            sys.stderr.fileno(), "w", encoding="utf-8", errors="replace", closefd=False
        ) as err,
    ):
        try:
            if subcommand == "usage":
                return usage_main(argv[1:], out)
            if args is None:
                from chat_ai_helper import doctor

                return doctor.main(argv[1:], out, sys.stdin.buffer)
            return _run(args, out, err)
        except ConfigError as error:
            err.write(f"chat-ai: {error}\n")
            return EXIT_USAGE
        except ChatAIError as error:
            err.write(f"chat-ai: {error}\n")
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            # Nothing more can reach a closed pipe; don't let closing it fail too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except Exception as error:
            err.write(f"chat-ai: {InternalError.wrapping(error)}\n")
            return EXIT_ERROR


def _run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    stdin = sys.stdin.buffer
    if args.serve:
        from chat_ai_helper.protocol import serve

        serve(stdin, sys.stdout.buffer)
        return 0
    envelope = build_envelope(args, stdin)
    # The command line's own --base-url is the user's; one in --json input is not.
    trusted = bool(args.base_url)
    if args.dry_run:
        from chat_ai_helper.request import parse_request

        request = parse_request(envelope, require_key=False, trusted=trusted)
        out.write(json.dumps(request.preview(), ensure_ascii=False, indent=2) + "\n")
        return 0
    _print_reply(envelope, trusted, out, err, reasoning=args.reasoning)
    return 0


def usage_main(argv: list[str], out: IO[str]) -> int:
    """Run ``chat-ai usage`` with ARGV: the log's totals by model, to OUT."""
    from chat_ai_helper.usage import log_file, totals

    parser = argparse.ArgumentParser(
        prog="chat-ai usage",
        description="Show what the requests in the usage log cost, by model.",
    )
    parser.add_argument(
        "--since", help="only requests from this date or time on (2025-06-01)"
    )
    parser.add_argument(
        "--file", help="only requests from blocks of this Org file (absolute path)"
    )
    parser.add_argument(
        "--by-block", action="store_true", help="one line per block and model"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    file = os.path.abspath(os.path.expanduser(args.file)) if args.file else None
    rows = totals(os.environ, args.since, file)
    if not args.by_block:
        rows = _by_model(rows)
    if args.json:
        out.write(
            json.dumps(
                {"log": str(log_file(os.environ)), "totals": rows}, ensure_ascii=False
            )
            + "\n"
        )
        return 0
    if not rows:
        out.write(f"No requests in {log_file(os.environ)}.\n")
        return 0
    out.write(_usage_table(rows, args.by_block))
    return 0


def _by_model(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return ROWS, totals by model and block, added up by model."""
    counted = (
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "reasoning_tokens",
        "total_tokens",
        "unpriced",
    )
    merged: dict[Any, dict[str, Any]] = {}
    for row in rows:
        total = merged.setdefault(
            row["model"],
            {"model": row["model"], "cost": None, **dict.fromkeys(counted, 0)},
        )
        for name in counted:
            total[name] += row[name] or 0
        if row["cost"] is not None:
            total["cost"] = (total["cost"] or 0) + row["cost"]
    return sorted(merged.values(), key=lambda row: str(row["model"]))


def money(cost: float | None, unpriced: int) -> str:
    """Return COST in USD for a line, saying when UNPRICED requests are left out."""
    if cost is None:
        return "price unknown"
    text = f"${cost:.4f}"
    return f"{text} (+{unpriced} unpriced)" if unpriced else text


def _usage_table(rows: list[dict[str, Any]], by_block: bool) -> str:
    """Return ROWS as a text table with a total line."""
    head = ["model", "requests", "prompt", "completion", "reasoning", "total", "cost"]
    if by_block:
        head.insert(0, "block")
    lines = [head]
    for row in rows:
        line = [
            str(row["model"] or "?"),
            str(row["requests"]),
            str(row["prompt_tokens"] or 0),
            str(row["completion_tokens"] or 0),
            str(row["reasoning_tokens"] or 0),
            str(row["total_tokens"] or 0),
            money(row["cost"], row["unpriced"] or 0),
        ]
        if by_block:
            line.insert(0, str(row.get("block") or "-"))
        lines.append(line)
    costs = [row["cost"] for row in rows if row["cost"] is not None]
    total = ["total", str(sum(row["requests"] for row in rows))]
    total += [
        str(sum(row[name] or 0 for row in rows))
        for name in (
            "prompt_tokens",
            "completion_tokens",
            "reasoning_tokens",
            "total_tokens",
        )
    ]
    total.append(
        money(sum(costs) if costs else None, sum(row["unpriced"] or 0 for row in rows))
    )
    if by_block:
        total.insert(1, "")
    lines.append(total)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        + "\n"
        for line in lines
    )
