"""``GPT.close()``, ``with GPT(...) as gpt`` and ``async with``: the pooled connections no
call is using are released (the loopback server sees them close), those of every provider the
GPT reached (``provider:model`` routes, fallbacks) included; later calls raise
ClientClosedError before anything is sent, and a close from another thread never cuts a call
in flight, of this GPT or of another one sharing the process's pools. On both transports."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from moodlemate.ai import GPT, ClientClosedError, Completion, MoodlemateError
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from moodlemate.providers.openai import OpenAIProvider
from moodlemate.providers.openrouter import OpenRouterProvider
from support import FAST_RETRY, TEST_KEY

OR_KEY = "sk-or-v1-5e2a9c0d7b1f4e3a8c6d0f1e"
ROUTED = "openrouter:openai/gpt-4o-mini"


def _gpt(server: LoopbackServer) -> GPT:
    return GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)


def _until(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether ``check`` holds within ``seconds`` (the server notices a close asynchronously)."""
    ends = time.monotonic() + seconds
    while not check():
        if time.monotonic() > ends:
            return False
        time.sleep(0.01)
    return True


async def _auntil(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """:func:`_until` that lets the loop run (asyncio closes a socket on a later turn)."""
    ends = time.monotonic() + seconds
    while not check():
        if time.monotonic() > ends:
            return False
        await asyncio.sleep(0.01)
    return True


def weather(city: str) -> str:
    """Current temperature in a city."""
    return "4C"


def test_close_releases_the_idle_connections_and_refuses_every_later_call(
    server: LoopbackServer, each_transport: str
) -> None:
    gpt = _gpt(server)
    other = _gpt(server)
    assert gpt.complete("gpt-4o-mini", "", "hi").text == "Echo: hi"
    assert server.open_connections == 1  # kept alive for the next call
    gpt.close()
    assert _until(lambda: server.open_connections == 0)
    sent = len(server.requests)
    with pytest.raises(ClientClosedError, match="closed"):
        gpt.complete("gpt-4o-mini", "", "again")
    with pytest.raises(ClientClosedError):
        gpt.stream("gpt-4o-mini", "", "again")
    with pytest.raises(ClientClosedError):
        gpt.run("gpt-4o-mini", "weather?", tools=[weather])
    with pytest.raises(ClientClosedError):
        gpt.conversation().ask("again")
    with pytest.raises(ClientClosedError):
        gpt.provider_connection()
    assert len(server.requests) == sent  # nothing was sent
    assert gpt.ledger.reserved == 0
    gpt.close()  # idempotent
    with pytest.raises(ClientClosedError), gpt:
        pass
    error = ClientClosedError("x")
    assert isinstance(error, MoodlemateError)
    assert isinstance(error, RuntimeError)  # as a closed httpx.Client's error is
    # Another GPT of the process shares the pools: it opens a new connection.
    assert other.complete("gpt-4o-mini", "", "still here").text == "Echo: still here"


def test_a_with_block_closes_the_gpt(server: LoopbackServer, each_transport: str) -> None:
    with _gpt(server) as gpt:
        assert gpt.complete("gpt-4o-mini", "", "hi").text == "Echo: hi"
    assert _until(lambda: server.open_connections == 0)
    with pytest.raises(ClientClosedError):
        gpt.complete("gpt-4o-mini", "", "hi")
    with pytest.raises(RuntimeError, match="boom"), _gpt(server) as failing:
        raise RuntimeError("boom")  # closed on the way out of a failing block too
    with pytest.raises(ClientClosedError):
        failing.complete("gpt-4o-mini", "", "hi")


def _slow_replies(body: Any) -> Reply | Fault:
    """Slow answers to the prompts that ask for them, a slow stream, an echo otherwise."""
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("slow") or prompt == "weather?":
        return Fault.slow(0.6, Reply(text=f"answer to {prompt}"))
    if prompt == "stream":
        return Reply(chunks=["word "] * 20, chunk_delay=0.05)
    return Reply()


def test_a_close_from_another_thread_never_cuts_a_call_in_flight(
    server: LoopbackServer, each_transport: str
) -> None:
    """Calls running when ``close()`` comes (slow replies, a stream, a tool run, another
    GPT's call) end with their whole answer on their first attempt, each sent once; calls
    after it raise ClientClosedError; a later close releases what the calls in flight kept."""
    gpt = _gpt(server)
    other = _gpt(server)
    gpt.complete("gpt-4o-mini", "", "warm")  # an idle connection to release
    server.responder = _slow_replies
    results: dict[str, Any] = {}
    started = threading.Barrier(7)

    def call(name: str, run: Callable[[], Any]) -> None:
        started.wait()
        try:
            results[name] = run()
        except BaseException as exc:  # pragma: no cover - the assertion shows it
            results[name] = exc

    def stream() -> str:
        with gpt.stream("gpt-4o-mini", "", "stream") as deltas:
            return "".join(deltas)

    def slow(client: GPT, n: int) -> Callable[[], Completion]:
        return lambda: client.complete("gpt-4o-mini", "", f"slow {n}")

    calls = {f"slow{n}": slow(client, n) for n, client in enumerate([gpt, gpt, gpt, other])}
    calls["stream"] = stream
    calls["run"] = lambda: gpt.run("gpt-4o-mini", "weather?", tools=[weather]).text
    threads = [threading.Thread(target=call, args=item) for item in calls.items()]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.2)  # every call is waiting for its reply, or reading the stream
    gpt.close()
    with pytest.raises(ClientClosedError):
        gpt.complete("gpt-4o-mini", "", "after close")
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()
    slow_ones = [results[f"slow{n}"] for n in range(4)]
    assert all(isinstance(c, Completion) for c in slow_ones), slow_ones
    assert [c.text for c in slow_ones] == [f"answer to slow {n}" for n in range(4)]
    assert [c.attempts for c in slow_ones] == [1, 1, 1, 1]  # none was cut and sent again
    assert results["stream"] == "word " * 20
    assert results["run"] == "answer to weather?"
    assert len(server.chat_requests) == 7  # the warm-up and the six calls, each sent once
    assert gpt.ledger.reserved == 0
    assert other.ledger.reserved == 0
    other.close()  # the connections the calls in flight kept went back to the pool
    assert _until(lambda: server.open_connections == 0)


def test_closing_while_many_threads_call_through_the_shared_pools_cuts_nothing(
    server: LoopbackServer, each_transport: str
) -> None:
    """Threads keep calling through the process's pools while other GPTs close over and
    over: no call fails, none is sent twice."""
    gpt = _gpt(server)
    failures: list[BaseException] = []
    attempts: list[int] = []

    def worker() -> None:
        for _ in range(25):
            try:
                attempts.append(gpt.complete("gpt-4o-mini", "", "ping").attempts)
            except BaseException as exc:  # pragma: no cover - the assertion shows it
                failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    closes = 0
    while any(thread.is_alive() for thread in threads):
        _gpt(server).close()
        closes += 1
    assert failures == []
    assert attempts == [1] * 150
    assert len(server.chat_requests) == 150
    assert closes > 10


def test_an_async_with_block_closes_the_gpt(server: LoopbackServer, each_transport: str) -> None:
    """``async with`` ends as ``with`` does: the loop's connections and the sync ones are
    released, and every later call, sync or async, is refused before it is sent."""

    async def main() -> None:
        async with _gpt(server) as gpt:
            assert (await gpt.acomplete("gpt-4o-mini", "", "hi")).text == "Echo: hi"
            await gpt.aclose()  # releases this loop's connections; the GPT stays usable
            assert await _auntil(lambda: server.open_connections == 0)
            assert (await gpt.acomplete("gpt-4o-mini", "", "again")).text == "Echo: again"
            assert gpt.complete("gpt-4o-mini", "", "sync").text == "Echo: sync"
            assert server.open_connections == 2  # one async, one sync, both kept alive
        assert await _auntil(lambda: server.open_connections == 0)
        sent = len(server.requests)
        with pytest.raises(ClientClosedError, match="closed"):
            await gpt.acomplete("gpt-4o-mini", "", "after")
        with pytest.raises(ClientClosedError):
            gpt.astream("gpt-4o-mini", "", "after")
        with pytest.raises(ClientClosedError):
            await gpt.arun("gpt-4o-mini", "weather?", tools=[weather])
        with pytest.raises(ClientClosedError):
            gpt.complete("gpt-4o-mini", "", "after")
        with pytest.raises(ClientClosedError):
            async with gpt:
                pass
        assert len(server.requests) == sent  # nothing was sent
        await gpt.aclose()  # still safe after the end
        with pytest.raises(RuntimeError, match="boom"):
            async with _gpt(server) as failing:
                raise RuntimeError("boom")  # closed on the way out of a failing block too
        with pytest.raises(ClientClosedError):
            await failing.acomplete("gpt-4o-mini", "", "hi")

    asyncio.run(main())


def test_an_async_with_block_lets_the_calls_of_other_tasks_end(
    server: LoopbackServer, each_transport: str
) -> None:
    """A call of another task still in flight when the block ends keeps its connection and
    ends with its whole answer, on its first attempt."""
    server.responder = _slow_replies

    async def main() -> Completion:
        async with _gpt(server) as gpt:
            slow = asyncio.ensure_future(gpt.acomplete("gpt-4o-mini", "", "slow"))
            await asyncio.sleep(0.2)  # the call waits for its reply
        return await slow

    completion = asyncio.run(main())
    assert (completion.text, completion.attempts) == ("answer to slow", 1)
    assert len(server.chat_requests) == 1


# -- every provider the GPT reached ---------------------------------------------------------


class RoutedServers:
    """The GPT's own server, and a second one its ``openrouter:`` routes and fallbacks reach
    (a provider of its own, with pools of its own)."""

    def __init__(self, own: LoopbackServer, router: LoopbackServer) -> None:
        self.own, self.router = own, router

        class LoopbackOpenRouter(OpenRouterProvider):
            default_endpoint = router.url
            key_env = "OPENROUTER_API_KEY"
            key_prefixes = ("sk-or-",)
            key_min_length = 20

        self.plugins = PluginRegistry(group="moodlemate.ai.none")
        self.plugins.register_provider(OpenAIProvider())
        self.plugins.register_provider(LoopbackOpenRouter())

    def gpt(self, **kwargs: Any) -> GPT:
        return GPT(
            "openai",
            endpoint=self.own.url,
            api_key=TEST_KEY,
            plugins=self.plugins,
            retry=FAST_RETRY,
            **kwargs,
        )

    def both_closed(self) -> bool:
        return self.own.open_connections == 0 and self.router.open_connections == 0


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch, each_transport: str) -> Iterator[RoutedServers]:
    monkeypatch.setenv("OPENROUTER_API_KEY", OR_KEY)
    with LoopbackServer() as own, LoopbackServer(api_key=OR_KEY) as router:
        router.models = []  # an empty catalog: prices come from the reported usage.cost
        yield RoutedServers(own, router)


def _through_the_router(servers: RoutedServers, how: str) -> GPT:
    """A GPT that has called both servers, the second through a route or a fallback."""
    if how == "route":
        return servers.gpt()
    servers.own.enqueue(*[Fault.status(503)] * FAST_RETRY.attempts)
    return servers.gpt(fallbacks=[ROUTED])


@pytest.mark.all_plugins
@pytest.mark.parametrize("how", ["route", "fallback"])
def test_close_releases_the_connections_of_routes_and_fallbacks(
    routed: RoutedServers, how: str
) -> None:
    gpt = _through_the_router(routed, how)
    first = gpt.complete(ROUTED if how == "route" else "gpt-4o-mini", "", "hi")
    assert first.provider == "openrouter"
    assert gpt.complete("openai:gpt-4o-mini", "", "hi").provider == "openai"
    with gpt.stream(ROUTED, "", "a stream") as deltas:
        assert "".join(deltas) == "Echo: a stream"
    assert routed.own.open_connections == 1
    assert routed.router.open_connections == 1  # kept alive for the next call
    gpt.close()
    assert _until(routed.both_closed), (routed.own.open_connections, routed.router.open_connections)
    with pytest.raises(ClientClosedError):
        gpt.complete(ROUTED, "", "again")


@pytest.mark.all_plugins
@pytest.mark.parametrize("how", ["route", "fallback"])
def test_aclose_and_async_with_release_the_connections_of_routes_and_fallbacks(
    routed: RoutedServers, how: str
) -> None:
    gpt = _through_the_router(routed, how)
    model = ROUTED if how == "route" else "gpt-4o-mini"

    async def main() -> None:
        assert (await gpt.acomplete(model, "", "hi")).provider == "openrouter"
        assert routed.router.open_connections == 1
        await gpt.aclose()
        assert await _auntil(routed.both_closed)
        async with gpt:
            assert (await gpt.acomplete(ROUTED, "", "hi")).provider == "openrouter"
            assert gpt.complete(ROUTED, "", "sync").provider == "openrouter"
            assert routed.router.open_connections == 2
        assert await _auntil(routed.both_closed), routed.router.open_connections

    asyncio.run(main())


@pytest.mark.all_plugins
def test_close_never_cuts_a_routed_call_in_flight(routed: RoutedServers) -> None:
    """Closing releases the router's idle connections only: a routed call waiting for its
    reply ends with its whole answer, on its first attempt."""
    gpt = routed.gpt()
    gpt.complete(ROUTED, "", "warm")
    routed.router.responder = _slow_replies
    result: list[Completion] = []
    thread = threading.Thread(target=lambda: result.append(gpt.complete(ROUTED, "", "slow")))
    thread.start()
    time.sleep(0.2)
    gpt.close()
    thread.join(10)
    [completion] = result
    assert (completion.text, completion.attempts) == ("answer to slow", 1)
    assert len(routed.router.chat_requests) == 2
