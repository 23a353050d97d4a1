"""Calls through the HTTP proxy the environment names, as the SDK takes it, end to end: a
real forwarding proxy on loopback carries them (both transports, sync, async and streamed),
``NO_PROXY`` sends them direct, and closing a GPT never cuts a call in flight there."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from forward_proxy import ForwardProxy
from moodlemate.ai import GPT
from moodlemate.ai.testing import LoopbackServer, Reply
from support import TEST_KEY

pytestmark = pytest.mark.usefixtures("each_transport")

Proxied = tuple[ForwardProxy, LoopbackServer]

PROXY_VARIABLES = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)


@pytest.fixture
def proxied(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ForwardProxy, LoopbackServer]]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with ForwardProxy() as proxy, LoopbackServer(api_key=TEST_KEY) as server:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        yield proxy, server


def test_sync_async_and_streamed_calls_go_through_the_proxy(proxied: Proxied) -> None:
    proxy, server = proxied
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY)
    assert gpt.chat_completion("gpt-4o-mini", "", "one") == "Echo: one"
    assert gpt.chat_completion("gpt-4o-mini", "", "two") == "Echo: two"
    assert "".join(gpt.stream("gpt-4o-mini", "", "three")) == "Echo: three"
    assert asyncio.run(gpt.achat_completion("gpt-4o-mini", "", "four")) == "Echo: four"
    assert len(proxy.requests) == 4
    assert all(r.startswith(f"POST {server.url}/chat/completions") for r in proxy.requests)
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"


def test_no_proxy_sends_the_call_direct(proxied: Proxied, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy, server = proxied
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY)
    assert gpt.chat_completion("gpt-4o-mini", "", "direct") == "Echo: direct"
    assert proxy.requests == []


def test_closing_a_gpt_never_cuts_a_call_in_flight_through_the_proxy(proxied: Proxied) -> None:
    """A slow reply through the proxy while another task closes the instance's async pools:
    the call ends with its answer, sent once."""
    proxy, server = proxied
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY)

    async def main() -> None:
        server.enqueue(Reply(text="slow", delay=0.6))
        call = asyncio.create_task(gpt.acomplete("gpt-4o-mini", "", "slow"))
        await asyncio.sleep(0.3)
        await gpt.aclose()
        completion = await call
        assert completion.text == "slow"
        assert completion.attempts == 1

    asyncio.run(main())
    assert len(proxy.requests) == 1
