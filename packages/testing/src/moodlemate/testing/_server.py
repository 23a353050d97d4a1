"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests that must not touch the network.

Mocking an SDK proves only that the mock agrees with itself. ``LoopbackServer`` speaks real
HTTP/1.1 with OpenAI's response shapes instead, so the whole client stack (connection pooling,
timeouts, retries, error mapping, streaming) runs exactly as it would against the real API,
and the server's request log tells a test how many attempts were really made.

Use it in your own tests::

    import pytest
    from moodlemate.ai import GPT
    from moodlemate.testing import Fault, LoopbackServer, Reply

    @pytest.fixture
    def llm():
        with LoopbackServer() as server:
            yield server

    def test_retries_a_rate_limit(llm):
        llm.enqueue(Fault.status(429, retry_after=0), Reply(text="hello"))
        gpt = GPT("openai", endpoint=llm.url, api_key="sk-test")
        text = gpt.chat_completion("gpt-4o-mini", system_message="Be brief.", user_message="Hi")
        assert text == "hello"
        assert len(llm.chat_requests) == 2  # the request log counts real attempts

Any OpenAI-compatible client works the same way: point its base URL at ``server.url``.

What the server answers to a valid ``POST .../chat/completions``, in order of precedence: the
next item of the FIFO script (``enqueue``); else a random fault (``fault_rate``); else
``responder(body)``; else ``Reply()``, which echoes the last user message (or, asked for a
``response_format``, answers with the plainest JSON the schema admits; with ``calls_tools``,
given tools, calls the first with the plainest arguments, then echoes the tool results).
Validation (the API key, the JSON body, and with ``strict`` the real API's model rules) comes
first and consumes nothing from the script, so a client that adapts its request after a 400
still meets the scripted replies in order. A ``rate_limit`` (:class:`RateLimit`) sits between
the two: it adds OpenAI's ``x-ratelimit-*`` headers to every chat answer and refuses requests
beyond the current slice's budget with OpenAI's 429, which consumes nothing from the script
either.
The model rules (which models are reasoning models, which reject the system role; another
vendor's ``acme/o3-mini`` takes the classic shape, as on OpenRouter) are the providers' own,
from :mod:`moodlemate.providers.openai.models`, so the server and the client it tests cannot
drift apart.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import selectors
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, Literal

from moodlemate.providers.openai.models import routed_rules_for
from moodlemate.providers.openai.strict_schema import strict_violations
from moodlemate.testing import _responses_api as responses_api
from moodlemate.testing._batches import BatchFate, BatchService
from moodlemate.testing._message_checks import message_problem, model_problem
from moodlemate.testing._rate_limits import RateLimit, RateLimiter
from moodlemate.testing._schema_answers import (
    schema_answer,
    tool_results_text,
    unscripted_tool_calls,
)

__all__ = [
    "DEFAULT_MODELS",
    "BatchFate",
    "BatchService",
    "Fault",
    "LoopbackServer",
    "RecordedRequest",
    "Reply",
]

JSONObject = dict[str, Any]
FaultKind = Literal[
    "status", "reset", "malformed", "slow", "error_in_200", "stream_break", "response_failed"
]

DEFAULT_MODELS: tuple[Mapping[str, Any], ...] = (
    {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
    {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
    {"id": "o1-mini", "object": "model", "created": 1725649008, "owned_by": "system"},
    {"id": "o3-mini", "object": "model", "created": 1737146383, "owned_by": "system"},
    {"id": "gpt-5-mini", "object": "model", "created": 1754425777, "owned_by": "system"},
)

_QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
_KEY_HELP = "You can find your API key at https://platform.openai.com/account/api-keys."
_NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
_BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it, logged before it is answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    received_at: float
    query: str = ""


@dataclass
class Reply:
    """A successful chat completion; every field left at its default is derived from the request.

    Defaults keep scripts short: ``Reply()`` echoes the last user message with the requested
    model and deterministic token counts (whitespace word counts, at least 1).
    """

    text: str | None = None
    model: str | None = None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None
    """``usage.cost``, as OpenRouter reports what a call cost."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the cache: ``prompt_tokens_details.cache_write_tokens``, as
    OpenRouter reports them (sent only when not 0)."""
    audio_prompt_tokens: int = 0
    """``prompt_tokens_details.audio_tokens`` (the audio models' spoken prompts)."""
    audio_completion_tokens: int = 0
    """``completion_tokens_details.audio_tokens`` (a spoken reply's tokens)."""
    image_prompt_tokens: int | None = None
    """``prompt_tokens_details.image_tokens``; None leaves the key out, as chat models do."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk_delay: float = 0.0
    """Seconds between two events of a streamed reply (a model that writes slowly)."""
    chunks: list[str] | None = None
    status: int = 200
    report_usage: bool = True
    """False omits the usage object (and the final usage chunk of a stream), as some
    OpenAI-compatible servers do."""
    refusal: str | None = None
    """A refusal: ``message.refusal`` carries it and ``content`` is null (unless ``text`` is
    also given), as the real API declines a request; streamed as ``delta.refusal`` pieces."""
    tool_calls: list[dict[str, Any]] | None = None
    """Tool calls (``{"id", "type": "function", "function": {"name", "arguments"}}``) with
    null ``content`` unless ``text`` is given; pair with ``finish_reason="tool_calls"``."""
    reasoning: str | None = None
    """Reasoning beside the answer: on chat completions ``message.reasoning_content`` (as vLLM
    and llama.cpp send it; streamed as ``delta.reasoning_content``), on the Responses API a
    ``reasoning`` output item's summary (streamed as ``response.reasoning_summary_text.delta``)
    when the request asks for one (``reasoning.summary``), else that item with no summary, as
    OpenAI answers. None: no reasoning field or item at all."""
    audio: dict[str, Any] | None = None
    """A spoken reply (``{"id", "data", "transcript", "expires_at"}``) as ``message.audio``,
    as the API answers a request with ``modalities: ["text", "audio"]``."""


@dataclass(frozen=True)
class Fault:
    """A way for the server to misbehave; build one with the classmethods, not the constructor."""

    kind: FaultKind
    http_status: int = 200
    message: str | None = None
    error_type: str | None = None
    error_code: str | int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    after: int = 0
    reply: Reply | None = None

    @classmethod
    def status(
        cls,
        code: int,
        *,
        message: str | None = None,
        type: str | None = None,
        code_str: str | None = None,
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
        should_retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | str | bytes | None = None,
    ) -> Fault:
        """An HTTP error with the body OpenAI sends for that status (OpenRouter's for 402).

        ``body`` replaces the whole response body; the retry arguments set the headers that
        OpenAI's clients honour (``retry-after``, ``retry-after-ms``, ``x-should-retry``).
        """
        if not 400 <= code <= 599:
            raise ValueError(f"Fault.status needs a 4xx or 5xx code, got {code}")
        extra: dict[str, str] = {}
        if retry_after is not None:
            extra["retry-after"] = (
                retry_after if isinstance(retry_after, str) else _number(retry_after)
            )
        if retry_after_ms is not None:
            extra["retry-after-ms"] = _number(retry_after_ms)
        if should_retry is not None:
            extra["x-should-retry"] = "true" if should_retry else "false"
        extra.update({k.lower(): v for k, v in (headers or {}).items()})
        raw: bytes | None
        if body is None:
            raw = None
        elif isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = _dumps(dict(body))
        return cls(
            kind="status",
            http_status=code,
            message=message,
            error_type=type,
            error_code=code_str,
            body=raw,
            headers=extra,
        )

    @classmethod
    def quota(cls, **kwargs: Any) -> Fault:
        """429 ``insufficient_quota``: a rate-limit status that no amount of waiting fixes."""
        kwargs.setdefault("message", _QUOTA_MESSAGE)
        kwargs.setdefault("type", "insufficient_quota")
        kwargs.setdefault("code_str", "insufficient_quota")
        return cls.status(429, **kwargs)

    @classmethod
    def reset(cls) -> Fault:
        """Read the request, then drop the TCP connection with an RST and no response."""
        return cls(kind="reset")

    @classmethod
    def malformed(cls) -> Fault:
        """200 whose JSON is cut short (for streams: an event whose data is cut short)."""
        return cls(kind="malformed")

    @classmethod
    def slow(cls, seconds: float, reply: Reply | None = None) -> Fault:
        """Answer correctly, but only after ``seconds``: long enough to trip client timeouts."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls(kind="slow", seconds=seconds, reply=reply)

    @classmethod
    def error_in_200(cls, code: int | str = 502, message: str = "Provider returned error") -> Fault:
        """HTTP 200 carrying ``{"error": {...}}``, as OpenRouter answers when a provider fails."""
        return cls(kind="error_in_200", error_code=code, message=message)

    @classmethod
    def response_failed(
        cls, code: str = "server_error", message: str = "The model failed to generate a response."
    ) -> Fault:
        """A Responses API request that fails after it started: a Response with ``status:
        failed`` (HTTP 200), or a stream ending in ``response.failed``. On chat completions,
        an error inside a 200 as :meth:`error_in_200`."""
        return cls(kind="response_failed", error_code=code, message=message)

    @classmethod
    def stream_break(cls, after: int = 1) -> Fault:
        """Send ``after`` stream events, then cut the connection (non-streaming: half the body)."""
        if after < 0:
            raise ValueError("after must be >= 0")
        return cls(kind="stream_break", after=after)


Responder = Callable[[JSONObject], Reply | Fault]


class LoopbackServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 with scripted replies and faults.

    It binds an ephemeral port on ``start()`` (or ``with``) and serves from daemon threads, so a
    forgotten server never keeps a test run alive. All methods are thread-safe.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        strict: bool = True,
        port: int = 0,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.api_key: str | None = api_key
        self.strict: bool = strict
        self.responder: Responder | None = None
        self.models: list[Mapping[str, Any]] = [dict(m) for m in DEFAULT_MODELS]
        self.reject_stream_models: set[str] = set()
        self.calls_tools = False
        """Unscripted requests that carry tools get a call of the first one (its plainest
        arguments) after a user turn, and the tool results echoed after tool turns, as a model
        would; ``moodlemate-ai serve`` turns it on. Off: such requests get the plain echo."""
        self._port = port
        self._port_fixed = port != 0
        self._lock = threading.Lock()
        self._log: list[RecordedRequest] = []
        self._script: deque[Reply | Fault] = deque()
        self._fault_rate = 0.0
        self._faults: tuple[Fault, ...] = ()
        self._rng = random.Random()
        self._limiter: RateLimiter | None = None
        self.rate_limit = rate_limit
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.batches = BatchService(self._batch_answer)
        """OpenAI's Files and Batch APIs (``/v1/files``, ``/v1/batches``) on a clock a test
        can speed up: see :mod:`moodlemate.testing._batches`."""
        self.cut_downloads = 0
        """The next this many file-content downloads send half the body, then reset."""

    # lifecycle -----------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        """Bind and serve; a restarted server keeps its port when it can, so ``url`` stays valid."""
        if self._httpd is not None:
            return self
        try:
            httpd = _HTTPServer(self, self._port)
        except OSError:
            if self._port_fixed or self._port == 0:
                raise
            httpd = _HTTPServer(self, 0)
        self._port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve,
            name=f"LoopbackServer:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open keep-alive connections and wake sleeping handlers."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        httpd.wake()
        if thread is not None:
            thread.join(timeout=5)
        httpd.server_close()
        httpd.close_connections()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.origin if self._httpd is not None else "stopped"
        return f"<LoopbackServer {where} requests={len(self._log)}>"

    # addresses -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("LoopbackServer is not running; call start() or use `with`")
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (``base_url``)."""
        return f"{self.origin}/v1"

    @property
    def open_connections(self) -> int:
        """Client connections open now, serving a request or kept alive between requests:
        lets a test see a client release its pool."""
        httpd = self._httpd
        return 0 if httpd is None else httpd.open_connections()

    # scripting -----------------------------------------------------------------------------

    def enqueue(self, *items: Reply | Fault) -> None:
        """Append answers to the FIFO script; each chat-completions request consumes one."""
        for item in items:
            if not isinstance(item, Reply | Fault):
                raise TypeError(f"enqueue takes Reply or Fault, not {type(item).__name__}")
        with self._lock:
            self._script.extend(items)

    @property
    def pending(self) -> int:
        """Script items not yet consumed: lets a test assert its script was used up."""
        with self._lock:
            return len(self._script)

    def fault_rate(
        self, rate: float, faults: Iterable[Fault] | None = None, *, seed: int | None = None
    ) -> None:
        """Answer unscripted requests with a random fault from ``faults`` with probability ``rate``.

        Seeded so a soak test is repeatable; ``fault_rate(0)`` turns injection off.
        """
        if not 0.0 <= rate <= 1.0 or math.isnan(rate):
            raise ValueError(f"rate must be between 0 and 1, got {rate}")
        chosen = tuple(faults) if faults is not None else _default_faults()
        if rate > 0 and not chosen:
            raise ValueError("faults must not be empty")
        with self._lock:
            self._fault_rate = rate
            self._faults = chosen
            self._rng = random.Random(seed)

    # rate limits ---------------------------------------------------------------------------

    @property
    def rate_limit(self) -> RateLimit | None:
        """OpenAI's rate limits on chat completions: headers on every answer, 429s beyond the
        slice's budget; None (the default) turns them off. Setting it, even to the same
        value, starts counting afresh. Requests the server rejects with a 400, requests
        inside remote batches and the other routes are not limited."""
        limiter = self._limiter
        return None if limiter is None else limiter.limit

    @rate_limit.setter
    def rate_limit(self, value: RateLimit | None) -> None:
        if value is not None and not isinstance(value, RateLimit):
            raise TypeError(f"rate_limit takes a RateLimit or None, not {type(value).__name__}")
        with self._lock:
            self._limiter = None if value is None else RateLimiter(value)

    @property
    def admitted(self) -> int:
        """Chat requests the current rate limit let through (0 without one)."""
        limiter = self._limiter
        return 0 if limiter is None else limiter.admitted

    @property
    def rate_limited(self) -> int:
        """429s sent because the current rate limit's slice was full (scripted ones excluded)."""
        limiter = self._limiter
        return 0 if limiter is None else limiter.refused

    def clear(self) -> None:
        """Forget the request log and any unconsumed script items."""
        with self._lock:
            self._log.clear()
            self._script.clear()

    def reset(self) -> None:
        """Back to a new server's state, on the same port: what :meth:`clear` forgets, and no
        faults, responder, key check, rate limit, rejected stream models or tool calling;
        strict, default models.
        The pytest plugin calls it before each test that shares the session's server."""
        with self._lock:
            self._log.clear()
            self._script.clear()
            self._fault_rate = 0.0
            self._faults = ()
            self._rng = random.Random()
            self.api_key = None
            self.strict = True
            self.responder = None
            self.models = [dict(m) for m in DEFAULT_MODELS]
            self.reject_stream_models = set()
            self.calls_tools = False
            self._limiter = None

    # request log ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._log)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """Only the chat-completions attempts: what retry tests count."""
        return [r for r in self.requests if r.method == "POST" and _is_chat_path(r.path)]

    @property
    def response_requests(self) -> list[RecordedRequest]:
        """Only the Responses API attempts (``POST .../responses``)."""
        return [r for r in self.requests if r.method == "POST" and _is_responses_path(r.path)]

    # used by the handler -------------------------------------------------------------------

    def _batch_answer(self, endpoint: str, body: JSONObject) -> tuple[int, JSONObject]:
        """One request of a remote batch, answered as a live request to ``endpoint`` would be."""
        if _is_responses_path(endpoint):
            return self._batch_response(body)
        problem = _validate(body, True, self.strict, ())
        if problem is not None:
            message, param, code = problem
            error = {"message": message, "type": "invalid_request_error", "param": param}
            return 400, {"error": {**error, "code": code}}
        action = self._next_action(body)
        if isinstance(action, Reply):
            return action.status, _Completion.build(action, body).body()
        if action.kind == "status":
            if action.body is not None:
                return action.http_status, json.loads(action.body)
            return action.http_status, _status_body(action, body)
        return 500, _status_body(Fault.status(500), body)

    def _batch_response(self, body: JSONObject) -> tuple[int, JSONObject]:
        """One request of a ``/v1/responses`` batch: the live Responses answer."""
        found = responses_api.problem(body, True, self.strict)
        if found is not None:
            message, param, code = found
            error = {"message": message, "type": "invalid_request_error", "param": param}
            return 400, {"error": {**error, "code": code}}
        view = responses_api.chat_view(body)
        action = self._next_action(view)
        if isinstance(action, Reply):
            done = _Completion.build(action, view)
            return action.status, responses_api.response_object(done, body, action.reasoning)
        if action.kind in ("response_failed", "error_in_200"):
            code, message = str(action.error_code or "server_error"), action.message or "failed"
            return 200, responses_api.failed_response(body, code, message)
        if action.kind == "status":
            if action.body is not None:
                return action.http_status, json.loads(action.body)
            return action.http_status, _status_body(action, view)
        return 500, _status_body(Fault.status(500), view)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cut_downloads <= 0:
                return False
            self.cut_downloads -= 1
            return True

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._log.append(request)

    def _next_action(self, body: JSONObject) -> Reply | Fault:
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self._fault_rate > 0 and self._rng.random() < self._fault_rate:
                return self._rng.choice(self._faults)
            responder = self.responder
        if responder is None:
            return _unscripted(body) if self.calls_tools else Reply()
        try:
            result = responder(body)
        except Exception as exc:
            return Fault.status(500, message=f"LoopbackServer responder raised {exc!r}")
        if not isinstance(result, Reply | Fault):
            return Fault.status(
                500, message=f"LoopbackServer responder returned {type(result).__name__}"
            )
        return result


# --- HTTP plumbing --------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Bursts of hundreds of concurrent clients (async tests) must not overflow the backlog.
    request_queue_size = 1024

    def __init__(self, owner: LoopbackServer, port: int) -> None:
        self.owner = owner
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            super().__init__(("127.0.0.1", port), _Handler)
        except OSError:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve(self) -> None:
        """Accept until ``wake()``: unlike serve_forever, stopping costs no poll interval."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self.stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is not self.socket or self.stopping.is_set():
                        continue
                    try:
                        request, client_address = self.get_request()
                    except OSError:
                        continue
                    try:
                        self.process_request(request, client_address)
                    except Exception:
                        self.shutdown_request(request)

    def wake(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name, which can stall on odd DNS setups.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = int(self.server_address[1])

    def track(self, conn: socket.socket, *, alive: bool) -> None:
        with self._connections_lock:
            if not alive:
                self._connections.discard(conn)
                return
            self._connections.add(conn)
        if self.stopping.is_set():  # accepted just as stop() ran: do not outlive the server
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def open_connections(self) -> int:
        with self._connections_lock:
            return len(self._connections)

    def close_connections(self) -> None:
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up are the point of this server, not errors.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LoopbackOpenAI/1"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _HTTPServer

    _started = 0.0
    _request_id = ""
    _rate_headers: Mapping[str, str] = MappingProxyType({})
    """The rate limiter's headers for the chat request being answered, whatever the answer."""

    # quiet, and tolerant of clients that leave --------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, alive=True)

    def handle(self) -> None:
        try:
            super().handle()
        except (OSError, ValueError):
            self.close_connection = True

    def finish(self) -> None:
        try:
            with contextlib.suppress(OSError, ValueError):
                super().finish()
        finally:
            self.server.track(self.connection, alive=False)

    # routing -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        owner = self.server.owner
        self._started = time.monotonic()
        self._request_id = f"req_{uuid.uuid4().hex}"
        self._rate_headers = MappingProxyType({})
        try:
            raw = self._read_body()
        except ValueError:
            self.close_connection = True
            raw = None
        path, _, query = self.path.partition("?")
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body: Any = None
        parsed = False
        if raw:
            try:
                body = json.loads(raw)
                parsed = True
            except ValueError:
                body = None
        owner._record(
            RecordedRequest(
                method=self.command,
                path=path,
                headers=headers,
                body=body,
                raw=raw or b"",
                received_at=self._started,
                query=query,
            )
        )
        if raw is None:
            self._send_error(400, "Invalid request framing.", "invalid_request_error")
            return
        if owner.api_key is not None and not self._authorized(owner.api_key, headers):
            return
        if self.command == "POST" and _is_chat_path(path):
            self._chat(owner, body if parsed else None, bool(raw))
        elif self.command == "POST" and _is_responses_path(path):
            self._responses(owner, body if parsed else None, bool(raw))
        elif self.command == "GET" and path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [dict(m) for m in owner.models]})
        elif self.command == "GET" and "/models/" in path:
            self._model(owner, path.rsplit("/models/", 1)[1])
        elif self._batch_route(owner, path, query, raw):
            pass
        else:
            self._send_error(404, f"Invalid URL ({self.command} {path})", "invalid_request_error")

    def _batch_route(self, owner: LoopbackServer, path: str, query: str, raw: bytes) -> bool:
        """The Files and Batch APIs; False when ``path`` is neither."""
        parts = path.rstrip("/").split("/")
        for anchor in ("files", "batches"):
            if anchor in parts:
                rest = parts[parts.index(anchor) + 1 :]
                break
        else:
            return False
        service, method = owner.batches, self.command
        answer: tuple[int, Any] | None = None
        if anchor == "files":
            if method == "POST" and not rest:
                answer = service.upload(self.headers.get("Content-Type", ""), raw)
            elif method == "GET" and len(rest) == 1:
                answer = service.file(rest[0])
            elif method == "GET" and len(rest) == 2 and rest[1] == "content":
                self._file_content(owner, rest[0])
                return True
        elif method == "POST" and not rest:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            answer = service.create(body)
        elif method == "GET" and not rest:
            answer = service.list(dict(p.partition("=")[::2] for p in query.split("&") if p))
        elif method == "GET" and len(rest) == 1:
            answer = service.retrieve(rest[0])
        elif method == "POST" and len(rest) == 2 and rest[1] == "cancel":
            answer = service.cancel(rest[0])
        if answer is None:
            self._send_error(404, f"Invalid URL ({method} {path})", "invalid_request_error")
        else:
            self._send_json(*answer)
        return True

    def _file_content(self, owner: LoopbackServer, file_id: str) -> None:
        """The file's bytes; honours ``Range: bytes=N-`` so a cut download can resume."""
        content = owner.batches.content(file_id)
        if content is None:
            self._send_error(404, f"No such File object: {file_id}", "invalid_request_error")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "").strip())
        if match and int(match.group(1)) >= len(content) > 0:
            self._send_error(416, "Requested range not satisfiable.", "invalid_request_error")
            return
        if match:
            start = int(match.group(1))
        status = 206 if match and start else 200
        body = content[start:]
        extra = {"accept-ranges": "bytes"}
        if status == 206:
            extra["content-range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
        self._headers_out(status, "application/octet-stream", extra)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if owner._take_cut():
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self._sleep(0.2)  # let the client read the first half: a reset discards unread data
            self._reset()
            return
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length) if length else b""

    def _authorized(self, api_key: str, headers: Mapping[str, str]) -> bool:
        auth = headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() == "bearer" and given.strip() == api_key:
            return True
        message = (
            f"Incorrect API key provided: {_mask_key(given.strip())}. {_KEY_HELP}"
            if scheme.lower() == "bearer" and given.strip()
            else _NO_KEY_MESSAGE
        )
        self._send_error(401, message, "invalid_request_error", code="invalid_api_key")
        return False

    def _model(self, owner: LoopbackServer, model_id: str) -> None:
        for model in owner.models:
            if model.get("id") == model_id:
                self._send_json(200, dict(model))
                return
        self._send_error(
            404,
            f"The model '{model_id}' does not exist",
            "invalid_request_error",
            param="model",
            code="model_not_found",
        )

    def _chat(self, owner: LoopbackServer, body: Any, had_body: bool) -> None:
        problem = _validate(body, had_body, owner.strict, owner.reject_stream_models)
        if problem is not None:
            message, param, code = problem
            self._send_error(400, message, "invalid_request_error", param=param, code=code)
            return
        limiter = owner._limiter
        if limiter is not None:
            decision = limiter.consult(_estimated_tokens(body))
            self._rate_headers = MappingProxyType(decision.headers)
            if not decision.admitted:
                wait_ms = decision.retry_after_ms
                refusal = Fault.status(
                    429,
                    message=decision.message(str(body.get("model"))),
                    type=decision.kind,
                    code_str="rate_limit_exceeded",
                    retry_after=max(1, -(-wait_ms // 1000)),  # whole seconds, rounded up
                    retry_after_ms=wait_ms,
                )
                self._fault(refusal, body)
                return
        action = owner._next_action(body)
        if isinstance(action, Reply):
            self._reply(action, body)
        else:
            self._fault(action, body)

    # answers -------------------------------------------------------------------------------

    def _responses(self, owner: LoopbackServer, body: Any, had_body: bool) -> None:
        """``POST /v1/responses``: the same script as chat, answered in the Responses shape
        (see :mod:`moodlemate.testing._responses_api`)."""
        found = responses_api.problem(body, had_body, owner.strict)
        if found is not None:
            message, param, code = found
            self._send_error(400, message, "invalid_request_error", param=param, code=code)
            return
        view = responses_api.chat_view(body)
        action = owner._next_action(view)
        streaming = body.get("stream") is True
        if isinstance(action, Reply):
            if action.delay > 0 and self._sleep(action.delay):
                return
            done = _Completion.build(action, view)
            if streaming:
                events = responses_api.response_events(done, body, action.reasoning)
                self._stream(events, action.headers)
            else:
                answer = responses_api.response_object(done, body, action.reasoning)
                self._send_json(action.status, answer, action.headers)
        elif action.kind in ("response_failed", "error_in_200"):
            code, message = str(action.error_code or "server_error"), action.message or "failed"
            if streaming:
                as_error = action.kind == "error_in_200"
                self._stream(responses_api.failed_events(body, code, message, as_error=as_error))
            else:
                self._send_json(200, responses_api.failed_response(body, code, message))
        else:
            self._fault(action, view)

    def _reply(self, reply: Reply, request: JSONObject) -> None:
        if reply.delay > 0 and self._sleep(reply.delay):
            return
        done = _Completion.build(reply, request)
        if request.get("stream") is True:
            events = _stream_events(done, request)
            self._stream(events, reply.headers, terminate=True, pause=reply.chunk_delay)
        else:
            self._send_json(reply.status, done.body(), reply.headers)

    def _fault(self, fault: Fault, request: JSONObject) -> None:
        streaming = request.get("stream") is True
        if fault.kind == "status":
            self._send_raw(
                fault.http_status,
                fault.body if fault.body is not None else _dumps(_status_body(fault, request)),
                fault.headers,
            )
        elif fault.kind == "reset":
            self._reset()
        elif fault.kind == "slow":
            if not self._sleep(fault.seconds):
                self._reply(fault.reply or Reply(), request)
        elif fault.kind == "malformed":
            done = _Completion.build(Reply(), request)
            if streaming:
                chunk = _dumps(_chunk(done, {"role": "assistant", "content": ""}, None))
                self._stream([b"data: " + chunk[: len(chunk) // 2] + b"\n\n"])
            else:
                payload = _dumps(done.body())
                self._send_raw(200, payload[: len(payload) // 2])
        elif fault.kind in ("error_in_200", "response_failed"):
            error = {"code": fault.error_code, "message": fault.message}
            if streaming:
                done = _Completion.build(Reply(), request)
                first = _stream_events(done, request)[0]
                self._stream([first, b"data: " + _dumps({"error": error}) + b"\n\n"])
            else:
                self._send_json(200, {"error": error})
        elif fault.kind == "stream_break":
            done = _Completion.build(Reply(), request)
            if streaming:
                events = _stream_events(done, request)[: fault.after]
                self._stream(events, terminate=False)
            else:
                payload = _dumps(done.body())
                self._send_raw(200, payload, cut=len(payload) // 2)
            self._reset()

    def _sleep(self, seconds: float) -> bool:
        """Wait, but give up at once when the server stops; True means stopped."""
        return self.server.stopping.wait(seconds)

    def _reset(self) -> None:
        # SO_LINGER 0 turns close() into an RST; rfile must go first or close() is deferred.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        with contextlib.suppress(OSError, ValueError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.connection.close()

    # writers -------------------------------------------------------------------------------

    def _headers_out(self, status: int, content_type: str, extra: Mapping[str, str] | None) -> None:
        self.send_response(status)
        merged = {
            "content-type": content_type,
            "x-request-id": self._request_id,
            "openai-processing-ms": str(int((time.monotonic() - self._started) * 1000)),
            "openai-version": "2020-10-01",
            **self._rate_headers,
        }
        merged.update({k.lower(): v for k, v in (extra or {}).items()})
        for name, value in merged.items():
            self.send_header(name, value)

    def _send_raw(
        self,
        status: int,
        payload: bytes,
        extra: Mapping[str, str] | None = None,
        *,
        cut: int | None = None,
    ) -> None:
        """Send a JSON response; ``cut`` sends only that many bytes of the declared body."""
        self._headers_out(status, "application/json", extra)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload if cut is None else payload[:cut])

    def _send_json(self, status: int, obj: Any, extra: Mapping[str, str] | None = None) -> None:
        self._send_raw(status, _dumps(obj), extra)

    def _send_error(
        self,
        status: int,
        message: str,
        error_type: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        error = {"message": message, "type": error_type, "param": param, "code": code}
        self._send_json(status, {"error": error})

    def _stream(
        self,
        events: Sequence[bytes],
        extra: Mapping[str, str] | None = None,
        *,
        terminate: bool = True,
        pause: float = 0.0,
    ) -> None:
        self._headers_out(200, "text/event-stream; charset=utf-8", extra)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        for number, event in enumerate(events):
            if pause and number:
                self.wfile.flush()
                if self._sleep(pause):
                    return
            self.wfile.write(b"%X\r\n%s\r\n" % (len(event), event))
        if terminate:
            self.wfile.write(b"0\r\n\r\n")


# --- response bodies ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Completion:
    """A Reply resolved against its request: every default filled in once."""

    id: str
    created: int
    model: str
    text: str
    chunks: list[str]
    finish_reason: str
    usage: JSONObject | None
    content_null: bool = False
    refusal: str | None = None
    tool_calls: list[JSONObject] = field(default_factory=list)
    audio: JSONObject | None = None
    reasoning: str | None = None
    service_tier: str | None = None
    """The tier the reply says served it, when the request named one (as OpenAI does:
    ``auto`` reads as ``default``)."""

    @classmethod
    def build(cls, reply: Reply, request: JSONObject) -> _Completion:
        content_null = reply.text is None and (reply.refusal is not None or bool(reply.tool_calls))
        if reply.text is not None:
            text = reply.text
        elif content_null:
            text = ""
        elif reply.chunks is not None:
            text = "".join(reply.chunks)
        else:
            text = schema_answer(request) or f"Echo: {_last_user_text(request.get('messages'))}"
        parts = (
            reply.cached_tokens
            + reply.cache_write_tokens
            + reply.audio_prompt_tokens
            + (reply.image_prompt_tokens or 0)
        )
        prompt = reply.prompt_tokens
        if prompt is None:
            prompt = max(1, _prompt_words(request.get("messages")), parts)
        completion = reply.completion_tokens
        if completion is None:
            completion = (
                max(1, len(text.split())) + reply.reasoning_tokens + reply.audio_completion_tokens
            )
        prompt_details: JSONObject = {
            "cached_tokens": reply.cached_tokens,
            "audio_tokens": reply.audio_prompt_tokens,
        }
        if reply.cache_write_tokens:
            prompt_details["cache_write_tokens"] = reply.cache_write_tokens
        if reply.image_prompt_tokens is not None:
            prompt_details["image_tokens"] = reply.image_prompt_tokens
        usage: JSONObject = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": prompt_details,
            "completion_tokens_details": {
                "reasoning_tokens": reply.reasoning_tokens,
                "audio_tokens": reply.audio_completion_tokens,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if reply.cost is not None:
            usage["cost"] = reply.cost
        return cls(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=reply.model if reply.model is not None else str(request.get("model")),
            text=text,
            chunks=list(reply.chunks) if reply.chunks is not None else _split(text),
            finish_reason=reply.finish_reason,
            usage=usage if reply.report_usage else None,
            content_null=content_null,
            refusal=reply.refusal,
            tool_calls=[dict(call) for call in reply.tool_calls or ()],
            reasoning=reply.reasoning,
            audio=dict(reply.audio) if reply.audio is not None else None,
            service_tier=_served_tier(request.get("service_tier")),
        )

    def body(self) -> JSONObject:
        body: JSONObject = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": self.message(),
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
        }
        if self.usage is not None:
            body["usage"] = self.usage
        if self.service_tier is not None:
            body["service_tier"] = self.service_tier
        return body

    def message(self) -> JSONObject:
        message: JSONObject = {
            "role": "assistant",
            "content": None if self.content_null else self.text,
            "refusal": self.refusal,
            "annotations": [],
        }
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        if self.audio is not None:
            message["audio"] = self.audio
        if self.reasoning is not None:
            message["reasoning_content"] = self.reasoning  # as vLLM and llama.cpp send it
        return message


def _chunk(done: _Completion, delta: JSONObject, finish: str | None) -> JSONObject:
    chunk: JSONObject = {
        "id": done.id,
        "object": "chat.completion.chunk",
        "created": done.created,
        "model": done.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if done.service_tier is not None:
        chunk["service_tier"] = done.service_tier
    return chunk


def _served_tier(asked: object) -> str | None:
    if not isinstance(asked, str):
        return None
    return "default" if asked == "auto" else asked


def _audio_deltas(audio: JSONObject) -> list[JSONObject]:
    """A spoken reply as the API streams it: the id with the transcript's pieces, the base64
    data in pieces of at most 32 KiB, then ``expires_at``."""
    ident = audio.get("id")
    transcript = str(audio.get("transcript") or "")
    data = str(audio.get("data") or "")
    deltas: list[JSONObject] = [
        {"audio": {"id": ident, "transcript": piece}} for piece in _split(transcript)
    ] or [{"audio": {"id": ident}}]
    deltas += [
        {"audio": {"id": ident, "data": data[i : i + 32768]}} for i in range(0, len(data), 32768)
    ]
    if audio.get("expires_at") is not None:
        deltas.append({"audio": {"id": ident, "expires_at": audio["expires_at"]}})
    return deltas


def _stream_events(done: _Completion, request: JSONObject) -> list[bytes]:
    options = request.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    first: JSONObject = {
        "role": "assistant",
        "content": None if done.content_null or done.audio is not None else "",
    }
    if done.refusal is not None:
        first["refusal"] = ""
    chunks: list[JSONObject] = [_chunk(done, first, None)]
    deltas: list[JSONObject] = [
        {"reasoning_content": piece} for piece in _split(done.reasoning or "")
    ]
    if done.audio is not None:  # spoken: content null, the transcript and clip in pieces
        deltas += _audio_deltas(done.audio)
    else:
        deltas += [{"content": piece} for piece in done.chunks or []]
    deltas += [{"refusal": piece} for piece in _split(done.refusal or "")]
    for index, call in enumerate(done.tool_calls):
        function = call.get("function") or {}
        arguments = str(function.get("arguments") or "")
        head = {**call, "index": index, "function": {**function, "arguments": ""}}
        deltas.append({"tool_calls": [head]})
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in _split(arguments, 2)
        ]
    for i, delta in enumerate(deltas):
        last = i == len(deltas) - 1
        chunks.append(_chunk(done, delta, done.finish_reason if last else None))
    if not deltas:
        chunks.append(_chunk(done, {}, done.finish_reason))
    if with_usage and done.usage is not None:
        for chunk in chunks:
            chunk["usage"] = None
        final = _chunk(done, {}, None)
        final["choices"] = []
        final["usage"] = done.usage
        chunks.append(final)
    events = [b"data: " + _dumps(chunk) + b"\n\n" for chunk in chunks]
    events.append(b"data: [DONE]\n\n")
    return events


def _status_body(fault: Fault, request: JSONObject) -> JSONObject:
    status = fault.http_status
    model = str(request.get("model") or "the model")
    if status == 402:
        error: JSONObject = {
            "code": fault.error_code if fault.error_code is not None else 402,
            "message": fault.message
            or "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
        }
        if fault.error_type is not None:
            error["type"] = fault.error_type
        return {"error": error}
    message, error_type, code, param = _STATUS_DEFAULTS.get(
        status,
        (
            "The server had an error processing your request. Sorry about that!",
            "server_error",
            None,
            None,
        )
        if status >= 500
        else ("Invalid request.", "invalid_request_error", None, None),
    )
    return {
        "error": {
            "message": fault.message if fault.message is not None else message.format(model=model),
            "type": fault.error_type if fault.error_type is not None else error_type,
            "param": param,
            "code": fault.error_code if fault.error_code is not None else code,
        }
    }


# status -> (message, type, code, param); "{model}" is filled with the requested model.
_STATUS_DEFAULTS: dict[int, tuple[str, str, str | None, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None, None),
    401: (
        f"Incorrect API key provided: sk-test************************abcd. {_KEY_HELP}",
        "invalid_request_error",
        "invalid_api_key",
        None,
    ),
    403: (
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
        None,
    ),
    404: (
        "The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
        None,
    ),
    408: ("Request timed out.", "timeout", None, None),
    409: ("The request conflicted with another request.", "invalid_request_error", None, None),
    429: (
        "Rate limit reached for {model} in organization org-loopback on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more.",
        "requests",
        "rate_limit_exceeded",
        None,
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
        None,
    ),
    502: ("Bad gateway.", "server_error", None, None),
    503: (
        "The engine is currently overloaded, please try again later.",
        "server_error",
        None,
        None,
    ),
    504: ("Gateway timeout.", "server_error", None, None),
}


def _validate(
    body: Any, had_body: bool, strict: bool, reject_stream: Collection[str]
) -> tuple[str, str | None, str | None] | None:
    """The real API's 400s as (message, param, code), or None when the request is acceptable."""
    if body is None:
        if not had_body:
            return ("you must provide a model parameter", None, None)
        return (_BAD_JSON_MESSAGE, None, None)
    if not isinstance(body, dict):
        kind = type(body).__name__
        return (f"Invalid type for request body: expected an object, but got {kind}.", None, None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return ("you must provide a model parameter", None, None)
    messages = body.get("messages")
    if messages is None:
        return ("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        return (
            "Invalid type for 'messages': expected an array, but got "
            f"{_json_type(messages)} instead.",
            "messages",
            "invalid_type",
        )
    if not messages:
        return (
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    shape = message_problem(messages)
    if shape is not None:
        return shape
    base = model.lower().removeprefix("openai/")
    if body.get("stream") is True and (model in reject_stream or base in reject_stream):
        return (
            "Unsupported value: 'stream' does not support true with this model. "
            "Supported values are: false.",
            "stream",
            "unsupported_value",
        )
    if strict:
        problem = _response_format_problem(body.get("response_format"))
        if problem is not None:
            return problem
    rules = routed_rules_for(model)  # the providers' own rules: one source of truth
    if not strict:
        return None
    problem = model_problem(body, rules)
    if problem is not None or not rules.reasoning:
        return problem
    if body.get("max_tokens") is not None:
        return (
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        return (
            f"Unsupported value: 'temperature' does not support {json.dumps(temperature)} "
            "with this model. Only the default (1) value is supported.",
            "temperature",
            "unsupported_value",
        )
    if not rules.system_role:
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role in ("system", "developer"):
                return (
                    f"Unsupported value: 'messages[{i}].role' does not support '{role}' "
                    "with this model.",
                    f"messages[{i}].role",
                    "unsupported_value",
                )
    return None


def _unscripted(body: JSONObject) -> Reply:
    """What the server answers when nothing is scripted: a call of the request's tool after a
    user turn, the tool results echoed after tool turns, else the echo of the user's text."""
    calls = unscripted_tool_calls(body)
    if calls is not None:
        return Reply(tool_calls=calls, finish_reason="tool_calls")
    echoed = tool_results_text(body)
    return Reply(text=echoed) if echoed is not None else Reply()


def _response_format_problem(value: Any) -> tuple[str, str | None, str | None] | None:
    """OpenAI's 400 for a strict ``json_schema`` that breaks its strict-mode rules (the
    provider's own statement of them)."""
    if not isinstance(value, dict) or value.get("type") != "json_schema":
        return None
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        return (
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name",
            "missing_required_parameter",
        )
    schema = spec.get("schema")
    if spec.get("strict") is True and isinstance(schema, dict):
        problems = strict_violations(schema)
        if problems:
            return (
                f"Invalid schema for response_format '{spec['name']}': {problems[0]}",
                "response_format",
                "invalid_json_schema",
            )
    return None


# --- small helpers --------------------------------------------------------------------------


def _default_faults() -> tuple[Fault, ...]:
    return (
        Fault.status(429, retry_after=0),
        Fault.status(500),
        Fault.status(503),
        Fault.reset(),
    )


def _is_chat_path(path: str) -> bool:
    return path.rstrip("/").endswith("/chat/completions")


def _is_responses_path(path: str) -> bool:
    return path.rstrip("/").endswith("/responses")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _json_type(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    return names.get(type(value), "an object" if isinstance(value, dict) else "null")


def _mask_key(key: str) -> str:
    """Mask like OpenAI does (head and tail only), and never reveal a short key whole."""
    if len(key) >= 16:
        return key[:8] + "*" * (len(key) - 12) + key[-4:]
    shown = len(key) // 4
    return key[:shown] + "*" * (len(key) - shown)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _last_user_text(messages: Any) -> str:
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _prompt_words(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(
        len(_content_text(m.get("content")).split()) for m in messages if isinstance(m, dict)
    )


def _estimated_tokens(request: JSONObject) -> int:
    """What a request counts against a token limit before it runs: a rough prompt size
    (characters / 4, rounded up, at least 1) plus the most it may generate, which OpenAI
    reserves up front (``max_completion_tokens``, else ``max_tokens``, else 16)."""
    messages = request.get("messages")
    characters = sum(
        len(_content_text(m.get("content")))
        for m in (messages if isinstance(messages, list) else ())
        if isinstance(m, dict)
    )
    output = 16
    for key in ("max_completion_tokens", "max_tokens"):
        value = request.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            output = value
            break
    return max(1, math.ceil(characters / 4)) + output


def _split(text: str, pieces: int = 4) -> list[str]:
    """A few deltas that join back to ``text`` exactly, cut at word boundaries."""
    words = re.findall(r"\s*\S+\s*|\s+", text)
    if len(words) <= pieces:
        return words
    size = math.ceil(len(words) / pieces)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]
