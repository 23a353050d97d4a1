"""``moodlemate-ai serve``: the OpenAI-compatible test server, in the foreground.

The same :class:`~moodlemate.testing.LoopbackServer` (distribution moodlemate-ai-testing) the
test suite and the pytest plugin use, so people can try the command line and their own apps
offline: no key, no network, optionally with injected faults. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_OK, EXIT_USAGE
from moodlemate.ai.cli.loopback import testing_installed

DESCRIPTION = """\
Run the OpenAI-compatible test server on 127.0.0.1 until Ctrl-C or SIGTERM. It answers
POST /v1/chat/completions (streamed too) and GET /v1/models as the real API does, echoing the
last user message, and rejects what the real API rejects (e.g. max_tokens on o1) unless
--lenient. Point any OpenAI client at the printed URL.
"""

EPILOG = """\
examples:
  moodlemate-ai serve --port 8000
  MOODLEMATE_ENDPOINT=http://127.0.0.1:8000/v1 moodlemate-ai chat "Hello"
  moodlemate-ai serve --fault-rate 0.3 --seed 1     # 30% of requests fail (429, 5xx, resets...)
  moodlemate-ai serve --rpm 600 --tpm 200000         # OpenAI's x-ratelimit-* headers and 429s
  moodlemate-ai serve --batch-speed 1000             # remote batches end in under a second
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible test server in the foreground",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port", type=int, default=0, metavar="N", help="port to listen on (default: any free)"
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="share of requests, 0-1, answered with a random fault: 429, 500, 503, a reset "
        "connection, a malformed body, an error inside a 200 (default 0)",
    )
    parser.add_argument("--seed", type=int, metavar="N", help="seed for --fault-rate (repeatable)")
    parser.add_argument(
        "--api-key", metavar="KEY", help="accept only this key (default: any key, or none)"
    )
    parser.add_argument(
        "--rpm",
        type=int,
        metavar="N",
        help="enforce N requests per minute as OpenAI does (in 6 s slices), with its "
        "x-ratelimit-* headers and 429s",
    )
    parser.add_argument("--tpm", type=int, metavar="N", help="with --rpm: also N tokens per minute")
    parser.add_argument(
        "--batch-speed",
        type=float,
        default=1.0,
        metavar="X",
        help="run remote batches X times faster than real time (a batch takes about 11 "
        "minutes at 1, the default; 1000 finishes it in under a second)",
    )
    parser.add_argument(
        "--lenient",
        action="store_true",
        help="accept requests the real API would reject (model rules)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with testing_installed():
        from moodlemate.ai.testing import LoopbackServer

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be 0-65535, got {args.port}", EXIT_USAGE)
    server = LoopbackServer(api_key=args.api_key, strict=not args.lenient, port=args.port)
    server.calls_tools = True  # a tool run against serve sees its tools called, as with a model
    try:
        server.fault_rate(args.fault_rate, seed=args.seed)
    except ValueError as exc:
        raise CommandError(f"--fault-rate: {exc}", EXIT_USAGE) from None
    if not 0 < args.batch_speed < float("inf"):
        raise CommandError(
            f"--batch-speed must be a positive number, not {args.batch_speed}", EXIT_USAGE
        )
    server.batches.speed = args.batch_speed
    if args.tpm is not None and args.rpm is None:
        raise CommandError("--tpm goes with --rpm", EXIT_USAGE)
    if args.rpm is not None:
        from moodlemate.testing import RateLimit

        try:
            server.rate_limit = RateLimit(args.rpm, args.tpm)
        except ValueError as exc:
            raise CommandError(f"--rpm/--tpm: {exc}", EXIT_USAGE) from None
    try:
        server.start()
    except OSError as exc:
        raise CommandError(f"cannot listen on port {args.port}: {exc.strerror or exc}") from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        print(f"serving an OpenAI-compatible API at {server.url}", flush=True)
        print(f"  export MOODLEMATE_ENDPOINT={server.url}", flush=True)
        print("  Ctrl-C to stop", flush=True)
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        served = len(server.requests)
        server.stop()
    print(f"stopped after {served} requests", file=sys.stderr)
    return EXIT_OK
