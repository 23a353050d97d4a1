"""Per-call latency, async throughput and whole-stream time: the facade against the raw SDK,
both on one reused client (SDK retries off), in one process, against the same server.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

from measure import (
    Row,
    Target,
    interleaved,
    median,
    not_available,
    percentile,
    timed,
    timed_cpu,
)
from payloads import (
    MODEL,
    REPLY,
    SHORT_STREAM_PIECES,
    STREAM_PIECES,
    SYSTEM,
    TEMPERATURE,
    USER,
    stream_text,
)
from servers import Server

KEY = "sk-bench-0000000000000000"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]


def _ours(url: str) -> Any:
    from moodlemate.ai import GPT

    return GPT(endpoint=url, api_key=KEY)


def _raw(url: str) -> Any:
    import openai

    return openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)


def _check(name: str, got: object, want: str) -> None:
    if got != want:
        raise RuntimeError(f"{name} returned {str(got)[:80]!r}, expected {want[:80]!r}")


# -- sequential -----------------------------------------------------------------------------


def sequential(server: Server, rounds: int, calls: int) -> list[Row]:
    gpt, client = _ours(server.url), _raw(server.url)

    def ours() -> str:
        return str(gpt.chat_completion(MODEL, SYSTEM, USER, TEMPERATURE))

    def raw() -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, temperature=TEMPERATURE
        )
        return str(reply.choices[0].message.content)

    # The floor under both: the SDK's transport alone, the body prebuilt, nothing parsed.
    body = {"model": MODEL, "messages": MESSAGES, "temperature": TEMPERATURE}
    response_cls = _http_library().Response

    def post() -> bytes:
        options = {"timeout": 300.0}
        return bytes(
            client.post(
                "/chat/completions", body=body, cast_to=response_cls, options=options
            ).content
        )

    _check("chat_completion", ours(), REPLY)
    _check("raw create", raw(), REPLY)
    for _ in range(100):  # warm both connection pools and code paths
        ours()
        raw()
        post()
    cpu: dict[str, list[float]] = {"ours": [], "raw": []}
    samples = interleaved(
        rounds,
        {
            "ours": lambda: timed_cpu(ours, calls, cpu["ours"]),
            "raw": lambda: timed_cpu(raw, calls, cpu["raw"]),
            "post": lambda: timed(post, calls),
        },
    )
    section = "sequential chat completion, one call at a time"
    us = {name: [s * 1e6 for s in values] for name, values in samples.items()}
    detail = {"rounds": rounds, "calls_per_round": calls, "server": server.kind}
    return [
        Row(
            section,
            "median latency",
            "us",
            median(us["ours"]),
            median(us["raw"]),
            Target("ratio<=", 0.35),
            detail=detail,
        ),
        Row(
            section,
            "p99 latency",
            "us",
            percentile(us["ours"], 99),
            percentile(us["raw"], 99),
            Target("ratio<=", 1.0),
            detail=detail,
        ),
        Row(
            section,
            "CPU time per call, this process (steadier under load)",
            "us",
            median(cpu["ours"]) * 1e6,
            median(cpu["raw"]) * 1e6,
            detail=detail,
        ),
        Row(
            section,
            "median, raw: bare client.post(cast_to=Response), body prebuilt",
            "us",
            median(us["ours"]),
            median(us["post"]),
            detail=detail,
        ),
    ]


def _http_library() -> Any:
    """The HTTP library the installed SDK is built on: httpx2 from openai 3, else httpx."""
    try:
        import httpx2
    except ImportError:
        import httpx

        return httpx
    return httpx2


def retry_overhead(repeat: int) -> Row:
    """What wrapping a call in the stamina-based policy costs, with no network in between."""
    from moodlemate.ai import RetryPolicy

    policy = RetryPolicy()

    def attempt(timeout: float) -> int:
        return 1

    def wrapped() -> object:
        return policy.run(attempt, "bench")

    def direct() -> object:
        return attempt(300.0)

    def batch(fn: Callable[[], object]) -> list[float]:
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return [(time.perf_counter() - start) / repeat * 1e6]

    batch(wrapped)
    samples = interleaved(5, {"ours": lambda: batch(wrapped), "raw": lambda: batch(direct)})
    return Row(
        "sequential chat completion, one call at a time",
        "of which the retry policy (stamina), per call",
        "us",
        median(samples["ours"]) - median(samples["raw"]),
        detail={"repeat": repeat, "wrapped_us": median(samples["ours"])},
    )


# -- async ----------------------------------------------------------------------------------


# Names the async and streaming API may take; the first one the code has is benchmarked.
ASYNC_METHODS = ("achat_completion", "chat_completion_async")
STREAM_METHODS = ("stream", "stream_chat_completion", "chat_completion_stream")


def _async_ours(url: str) -> tuple[str, Callable[[], Any]] | None:
    """The async facade call the code offers, if any, as a zero-argument coroutine function."""
    import moodlemate.ai

    gpt = moodlemate.ai.GPT(endpoint=url, api_key=KEY)
    for name in ASYNC_METHODS:
        method = getattr(gpt, name, None)
        if method is not None and inspect.iscoroutinefunction(method):
            return f"GPT.{name}", functools.partial(method, MODEL, SYSTEM, USER, TEMPERATURE)
    async_cls = getattr(moodlemate.ai, "AsyncGPT", None)
    if async_cls is not None:
        agpt = async_cls(endpoint=url, api_key=KEY)
        return "AsyncGPT.chat_completion", lambda: agpt.chat_completion(
            MODEL, SYSTEM, USER, TEMPERATURE
        )
    return None


async def _throughput(call: Callable[[], Any], requests: int, concurrency: int) -> float:
    """Requests per second for ``requests`` calls made by ``concurrency`` concurrent workers."""
    rate, _ = await _rate_and_cpu(call, requests, concurrency)
    return rate


async def _rate_and_cpu(
    call: Callable[[], Any], requests: int, concurrency: int
) -> tuple[float, float]:
    """Requests per second, and this process's CPU time per request in microseconds (what
    a loaded machine moves least: other processes take wall time, not our CPU time)."""
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu = time.process_time() - cpu
    return requests / (time.perf_counter() - start), cpu / requests * 1e6


def concurrent(server: Server, rounds: int, requests: int, concurrency: int = 64) -> list[Row]:
    section = f"async, concurrency {concurrency}"
    metric = "throughput"
    target = Target("ratio>=", 3.0)
    found = _async_ours(server.url)
    if found is None:
        return [not_available(section, metric, "req/s", target, "not available")]
    api, ours = found
    import openai

    async def main() -> dict[str, list[tuple[float, float]]]:
        client = openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0)

        async def raw() -> str:
            reply = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, temperature=TEMPERATURE
            )
            return str(reply.choices[0].message.content)

        _check("async chat completion", await ours(), REPLY)
        _check("raw async create", await raw(), REPLY)
        await _throughput(ours, concurrency * 4, concurrency)  # open the connections
        await _throughput(raw, concurrency * 4, concurrency)
        pooled: dict[str, list[tuple[float, float]]] = {"ours": [], "raw": []}
        for round_ in range(rounds):
            order = [("ours", ours), ("raw", raw)]
            for name, call in order if round_ % 2 == 0 else reversed(order):
                pooled[name].append(await _rate_and_cpu(call, requests, concurrency))
        await client.close()
        return pooled

    samples = asyncio.run(main())
    detail = {"api": api, "rounds": rounds, "requests": requests, "server": server.kind}
    rate = {side: [r for r, _ in values] for side, values in samples.items()}
    cpu = {side: [c for _, c in values] for side, values in samples.items()}
    return [
        Row(
            section,
            f"{metric}, {api} (raw: AsyncOpenAI)",
            "req/s",
            median(rate["ours"]),
            median(rate["raw"]),
            target,
            detail=detail,
        ),
        Row(
            section,
            "CPU time per request, this process (steadier under load; 3x = 0.333x)",
            "us",
            median(cpu["ours"]),
            median(cpu["raw"]),
            detail=detail,
        ),
    ]


# -- threads --------------------------------------------------------------------------------


def threaded(server: Server, rounds: int, calls: int, threads: int = 8) -> list[Row]:
    """Throughput of ``threads`` threads sharing one GPT (raw: one OpenAI client)."""
    from concurrent.futures import ThreadPoolExecutor

    gpt, client = _ours(server.url), _raw(server.url)

    def ours() -> object:
        return gpt.chat_completion(MODEL, SYSTEM, USER, TEMPERATURE)

    def raw() -> object:
        return client.chat.completions.create(
            model=MODEL, messages=MESSAGES, temperature=TEMPERATURE
        )

    def rate(call: Callable[[], object]) -> list[float]:
        total = calls * threads
        with ThreadPoolExecutor(threads) as pool:
            start = time.perf_counter()
            for _ in pool.map(lambda _: call(), range(total)):
                pass
            return [total / (time.perf_counter() - start)]

    rate(ours), rate(raw)  # open the connections
    samples = interleaved(rounds, {"ours": lambda: rate(ours), "raw": lambda: rate(raw)})
    return [
        Row(
            f"{threads} threads sharing one instance",
            "throughput, GPT.chat_completion (raw: one OpenAI client)",
            "req/s",
            median(samples["ours"]),
            median(samples["raw"]),
            Target("ratio>=", 2.0),
            detail={"rounds": rounds, "calls_per_thread": calls, "server": server.kind},
        )
    ]


# -- streaming ------------------------------------------------------------------------------


def _drain(result: Any) -> str:
    """Join a stream of text deltas, whether the stream is an iterator or a context manager
    (whose ``__enter__`` may return the stream itself)."""
    if hasattr(result, "__enter__"):
        with result as inner:
            return _join(inner)
    return _join(result)


def _join(stream: Any) -> str:
    pieces: Iterator[Any] = iter(stream)
    return "".join(p if isinstance(p, str) else str(getattr(p, "text", p)) for p in pieces)


def streaming(server: Server, rounds: int, streams: int) -> list[Row]:
    """A whole short stream (13 chunks: role, 10 deltas, finish, usage) and a long one (100
    deltas), each against the SDK's ``create(stream=True)``."""
    return [
        *_streaming(
            server,
            server.short_stream_url,
            SHORT_STREAM_PIECES,
            f"streaming, whole stream of 13 chunks ({SHORT_STREAM_PIECES} deltas)",
            Target("ratio<=", 0.25),
            rounds,
            streams,
        ),
        *_streaming(
            server,
            server.stream_url,
            STREAM_PIECES,
            f"streaming, whole stream of {STREAM_PIECES} deltas",
            Target("ratio<=", 0.16),  # no worse than before the lean transport (0.143x)
            rounds,
            streams,
        ),
    ]


def _streaming(
    server: Server, url: str, pieces: int, section: str, target: Target, rounds: int, streams: int
) -> list[Row]:
    metric = "median time per stream"
    gpt, client = _ours(url), _raw(url)
    api = next(
        (
            name
            for name in STREAM_METHODS
            if callable(getattr(gpt, name, None))
            and not inspect.iscoroutinefunction(getattr(gpt, name))
            and not inspect.isasyncgenfunction(getattr(gpt, name))
        ),
        None,
    )
    if api is None:
        return [not_available(section, metric, "us", target, "not available")]
    method = getattr(gpt, api)

    def ours() -> str:
        return _drain(method(MODEL, SYSTEM, USER, TEMPERATURE))

    def raw() -> str:
        chunks = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            temperature=TEMPERATURE,
            stream=True,
            stream_options={"include_usage": True},
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    _check("stream", ours(), stream_text(pieces))
    _check("raw stream", raw(), stream_text(pieces))
    for _ in range(10):
        ours()
        raw()
    cpu: dict[str, list[float]] = {"ours": [], "raw": []}
    samples = interleaved(
        rounds,
        {
            "ours": lambda: timed_cpu(ours, streams, cpu["ours"]),
            "raw": lambda: timed_cpu(raw, streams, cpu["raw"]),
        },
    )
    us = {name: [s * 1e6 for s in values] for name, values in samples.items()}
    detail = {"api": api, "rounds": rounds, "streams": streams, "server": server.kind}
    return [
        Row(
            section,
            f"{metric}, GPT.{api} (raw: create(stream=True))",
            "us",
            median(us["ours"]),
            median(us["raw"]),
            target,
            detail=detail,
        ),
        Row(
            section,
            "CPU time per stream, this process (steadier under load)",
            "us",
            median(cpu["ours"]) * 1e6,
            median(cpu["raw"]) * 1e6,
            detail=detail,
        ),
    ]


# -- a call with an image part ---------------------------------------------------------------


def image_part(server: Server, rounds: int, calls: int) -> list[Row]:
    """``GPT.complete`` with one image part against its text twin: what building, checking
    and encoding a part adds to a call (a 64x64 PNG, built per call as users do)."""
    from moodlemate.ai import ImagePart, Message, TextPart

    gpt = _ours(server.url)
    image = _png(64, 64)

    def text() -> str:
        return gpt.complete(MODEL, SYSTEM, USER, TEMPERATURE).text

    def with_image() -> str:
        question = Message("user", (TextPart(USER), ImagePart(image)))
        return gpt.complete(MODEL, SYSTEM, temperature=TEMPERATURE, messages=[question]).text

    _check("complete", text(), REPLY)
    _check("complete with an image", with_image(), REPLY)
    for _ in range(100):
        text()
        with_image()
    samples = interleaved(
        rounds,
        {"image": lambda: timed(with_image, calls), "text": lambda: timed(text, calls)},
    )
    us = {name: [s * 1e6 for s in values] for name, values in samples.items()}
    return [
        Row(
            "one image part (raw: the same call with text only)",
            "median latency, GPT.complete with a 64x64 PNG part",
            "us",
            median(us["image"]),
            median(us["text"]),
            Target("ratio<=", 1.05),
            detail={"rounds": rounds, "calls_per_round": calls, "server": server.kind},
        )
    ]


def _png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + bytes(range(width)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
