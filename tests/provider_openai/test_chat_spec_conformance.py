"""What a chat call sends conforms to OpenAI's published spec, on both transports: the body
against CreateChatCompletionRequest (plain, streamed, reasoning model, keyless), and the
headers servers rely on."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("yaml")
pytest.importorskip("jsonschema")

from moodlemate.ai import GPT
from moodlemate.ai.testing import LoopbackServer
from openapi_spec import SPEC, check_schema
from support import TEST_KEY

pytestmark = [
    pytest.mark.skipif(SPEC is None, reason="the OpenAPI spec is not present"),
    pytest.mark.usefixtures("each_transport"),
]


def test_chat_requests_follow_the_spec_and_carry_the_headers_servers_rely_on(
    server: LoopbackServer,
) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY)
    gpt.chat_completion("gpt-4o-mini", "Be brief.", "Hi", temperature=0.2, max_tokens=20)
    gpt.chat_completion("o3-mini", "Be brief.", "Hi")  # adapted: no temperature, no max_tokens
    with gpt.stream("gpt-4o-mini", "", "Hi") as stream:
        assert "".join(stream)
    asyncio.run(gpt.achat_completion("gpt-4o-mini", "", "Hi"))
    requests = server.chat_requests
    assert len(requests) == 4
    for request in requests:
        check_schema("CreateChatCompletionRequest", request.body)
        headers = {name.lower(): value for name, value in request.headers.items()}
        assert headers["authorization"] == f"Bearer {TEST_KEY}"
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"]
        assert "application/json" in headers["accept"] or "event-stream" in headers["accept"]
        assert "openai-organization" not in headers
    assert requests[2].body.get("stream") is True


def test_a_keyless_call_sends_no_authorization(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url)
    gpt.chat_completion("gpt-4o-mini", "", "Hi")
    (request,) = server.chat_requests
    check_schema("CreateChatCompletionRequest", request.body)
    assert "authorization" not in {name.lower() for name in request.headers}


def test_configured_headers_go_out_and_replace_the_bearer_key(server: LoopbackServer) -> None:
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        headers={"authorization": "Bearer gateway-token-1234567890", "X-Team": "blue"},
    )
    gpt.chat_completion("gpt-4o-mini", "", "Hi")
    (request,) = server.chat_requests
    headers = {name.lower(): value for name, value in request.headers.items()}
    assert headers["authorization"] == "Bearer gateway-token-1234567890"
    assert headers["x-team"] == "blue"
