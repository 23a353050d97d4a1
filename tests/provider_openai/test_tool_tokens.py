"""Tool definitions' prompt tokens by the cookbook's rule, which reproduces the API's figures."""

from __future__ import annotations

from typing import Any

import pytest
from moodlemate.providers.openai.chat_tokens import count_message_tokens
from moodlemate.providers.openai.tool_tokens import tool_call_tokens, tool_definition_tokens
from support import WEATHER_MESSAGES, WEATHER_TOOL

# OpenAI cookbook, "How to count tokens with tiktoken", section on function calls.


@pytest.mark.parametrize(
    ("model", "api_prompt_tokens"),
    [("gpt-4o", 101), ("gpt-4o-mini", 101), ("gpt-4", 105), ("gpt-3.5-turbo", 105)],
)
def test_the_cookbook_weather_example_counts_what_the_api_reported(
    model: str, api_prompt_tokens: int
) -> None:
    messages = count_message_tokens(WEATHER_MESSAGES, model).tokens
    assert messages + tool_definition_tokens(model, [WEATHER_TOOL]) == api_prompt_tokens


def test_no_tools_add_nothing() -> None:
    assert tool_definition_tokens("gpt-4o", []) == 0


def test_each_tool_and_parameter_adds_tokens() -> None:
    one = tool_definition_tokens("gpt-4o", [WEATHER_TOOL])
    two = tool_definition_tokens("gpt-4o", [WEATHER_TOOL, WEATHER_TOOL])
    assert two - one == one - 12  # the closing frame is counted once


def test_nested_schemas_are_counted_not_dropped() -> None:
    flat = {
        "type": "function",
        "function": {
            "name": "f",
            "description": "d",
            "parameters": {
                "type": "object",
                "properties": {"x": {"type": "object", "description": "x"}},
            },
        },
    }
    nested = {
        "type": "function",
        "function": {
            "name": "f",
            "description": "d",
            "parameters": {
                "type": "object",
                "properties": {
                    "x": {
                        "type": "object",
                        "description": "x",
                        "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                    }
                },
            },
        },
    }
    assert tool_definition_tokens("gpt-4o", [nested]) > tool_definition_tokens("gpt-4o", [flat])


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "function", "function": {"name": "bare"}},
        {"type": "function", "function": {"name": "f", "parameters": "not a schema"}},
        {"type": "function", "function": {"name": "f", "parameters": {"properties": {"a": 3}}}},
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "properties": {"a": {"type": ["string", "null"], "enum": [1, None]}}
                },
            },
        },
    ],
)
def test_odd_but_accepted_shapes_count_without_crashing(tool: dict[str, Any]) -> None:
    assert tool_definition_tokens("gpt-4o", [tool]) > 0


def test_tool_calls_count_their_name_and_arguments() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_current_weather", "arguments": '{"location": "Oslo"}'},
    }
    one = tool_call_tokens("gpt-4o", [call])
    assert one > 3
    assert tool_call_tokens("gpt-4o", [call, call]) == 2 * one
    assert tool_call_tokens("gpt-4o", []) == 0
