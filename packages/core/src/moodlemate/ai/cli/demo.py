"""``moodlemate-ai demo``: the whole stack against the embedded loopback server.

No key, no network: a chat completion, a token count, the cost, and a retry after an
injected 429, each through the same code a real call takes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from moodlemate.ai.cli.exits import EXIT_OK
from moodlemate.ai.cli.loopback import testing_installed
from moodlemate.ai.errors import TokenizerUnavailableError

DEMO_KEY = "sk-demo-0000000000000000"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a completion, a token count and a retry against a local test server",
        description="Start a local OpenAI-compatible test server and run, against it, a chat "
        "completion, a token count, the cost and a retry after an injected HTTP 429: the "
        "whole stack, with no key and no network. See `moodlemate-ai serve` to keep such a "
        "server running for your own commands.",
        epilog="""examples:
  moodlemate-ai demo
  moodlemate-ai demo -m gpt-4o
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-m", "--model", default="gpt-4o-mini", help="model name to send")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moodlemate.ai._gpt import GPT
    from moodlemate.ai._retry import RetryPolicy

    with testing_installed():
        from moodlemate.ai.testing import Fault, LoopbackServer, Reply

    with LoopbackServer() as server:
        server.api_key = DEMO_KEY
        gpt = GPT(
            "openai",
            endpoint=server.url,
            api_key=DEMO_KEY,
            retry=RetryPolicy(wait_initial=0.2, wait_jitter=0.1),
        )
        print(f"loopback OpenAI-compatible server at {server.url}")

        server.enqueue(
            Reply(
                text="Hello! I am answering from the loopback server.",
                prompt_tokens=21,
                completion_tokens=11,
                cached_tokens=0,
            )
        )
        text = gpt.chat_completion(args.model, "Be brief.", "Say hello.")
        result = gpt.last_result
        assert result is not None
        print(f"\nchat_completion({args.model!r}) -> {text!r}")
        print(
            f"  usage: {result.usage.prompt_tokens} prompt + "
            f"{result.usage.completion_tokens} completion tokens; cost: {_money(result.cost)}"
        )

        sample = "The quick brown fox jumps over the lazy dog."
        try:
            counted = str(gpt.count_tokens(sample, args.model))
        except (TokenizerUnavailableError, OSError) as exc:  # offline without tiktoken's data
            counted = f"skipped, no tokenizer data offline ({type(exc).__name__})"
            counted += "; see docs/tokens-and-cost.md"
        print(f"\ncount_tokens({sample!r}, {args.model!r}) -> {counted}")

        server.enqueue(Fault.status(429, retry_after=0.5), Reply(text="Answered after a retry."))
        seen_before = len(server.chat_requests)
        _show_retries()
        text = gpt.chat_completion(args.model, "Be brief.", "Try again.")
        result = gpt.last_result
        assert result is not None
        print(
            f"  -> {text!r} after {result.attempts} attempts "
            f"(the server received {len(server.chat_requests) - seen_before} requests for it)"
        )

        total = gpt.ledger.as_dict()["total"]
        print(
            f"\nledger: {total['calls']} calls, {total['total_tokens']} tokens, "
            f"{_money(total['cost'])}"
        )
    print(NEXT)
    return EXIT_OK


NEXT = """
next, with your own prompts and still no key: run the same server in the foreground,
  moodlemate-ai serve --port 8000
then, in another terminal,
  export MOODLEMATE_ENDPOINT=http://127.0.0.1:8000/v1
  moodlemate-ai chat "Hello"
(docs/getting-started.md: the no-key tour, from the command line and from Python)"""


def _show_retries() -> None:
    """Print the library's retry warnings in line with the demo's own output."""
    print("\ninjecting HTTP 429 with retry-after: 0.5 ...")
    sys.stdout.flush()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  retry: %(message)s"))
    logger = logging.getLogger("moodlemate.ai")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(min(logger.getEffectiveLevel(), logging.WARNING))


def _money(value: object) -> str:
    return "unknown" if value is None else f"${value:.8f}"
