"""A budgeted call whose prompt is far within the budget loads no tokenizer: its UTF-8 size
bounds its tokens. The exact count is taken only when that bound would not fit."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from moodlemate.ai import GPT, BudgetExceededError
from moodlemate.ai.testing import LoopbackServer
from support import TEST_KEY

PROBE = """
import sys
from moodlemate.ai import GPT
gpt = GPT("openai", endpoint=sys.argv[1], api_key=sys.argv[2], budget="1.00")
gpt.chat_completion("gpt-4o-mini", "Be brief.", "Say hi.", max_tokens=20)
print("tiktoken" if "tiktoken" in sys.modules else "no tokenizer")
"""


def test_a_short_budgeted_call_loads_no_tokenizer(server: LoopbackServer) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, server.url, TEST_KEY],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert "no tokenizer" in out
    assert len(server.chat_requests) == 1


def test_a_call_that_fits_only_by_its_exact_count_is_sent(server: LoopbackServer) -> None:
    # 4,000 x "hi " is 12,000 bytes but 4,000 tokens: at gpt-4o's $2.50 per million input
    # tokens the byte bound ($0.030 with max_tokens) does not fit a $0.02 budget; the count
    # ($0.010) does.
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, budget=Decimal("0.02"))
    gpt.chat_completion("gpt-4o", "", "hi " * 4000, max_tokens=10)
    assert len(server.chat_requests) == 1


def test_a_call_over_the_budget_by_its_exact_count_is_refused(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, budget=Decimal("0.005"))
    with pytest.raises(BudgetExceededError):
        gpt.chat_completion("gpt-4o", "", "hi " * 4000, max_tokens=10)
    assert server.chat_requests == []
