"""What a misbehaving or hostile server can and cannot do to a caller: headers and bodies
stay on the configured host, and odd response fields give typed errors, never a poisoned
ledger."""

from __future__ import annotations

import pytest
from conftest import FAST_RETRY, TEST_KEY

from moodlemate.ai import GPT
from moodlemate.ai.errors import ProviderError
from moodlemate.ai.testing import LoopbackServer, Reply


@pytest.mark.parametrize("status", [307, 308])
def test_a_redirect_to_another_host_carries_neither_headers_nor_prompt(
    server: LoopbackServer, status: int
) -> None:
    gateway_secret = "gw-secret-0123456789abcdef"
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=FAST_RETRY,
        headers={"X-Api-Key": gateway_secret},
    )
    with LoopbackServer() as elsewhere:
        server.enqueue(
            Reply(status=status, headers={"location": f"{elsewhere.url}/chat/completions"})
        )
        with pytest.raises(ProviderError) as caught:
            gpt.chat_completion("gpt-4o-mini", "", "private prompt")
        assert elsewhere.requests == []
    assert caught.value.status_code == status
    assert len(server.chat_requests) == 1
