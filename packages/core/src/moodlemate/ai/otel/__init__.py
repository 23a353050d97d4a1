"""OpenTelemetry for moodlemate-ai: one span and three metrics per call, following the
OpenTelemetry GenAI semantic conventions, recorded by a plugin on our own call hooks.

    pip install "moodlemate-ai[otel]"       # opentelemetry-api; bring your SDK and exporter

    from moodlemate.ai.otel import instrument
    instrument()                            # the global tracer and meter providers

What is recorded (names from the conventions; docs/telemetry.md has the full table):

- a ``CLIENT`` span ``chat {gen_ai.request.model}`` per call, retries and fallbacks included,
  with ``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.*``,
  ``gen_ai.response.model``, ``gen_ai.response.finish_reasons``, ``gen_ai.usage.*``,
  ``server.address``/``server.port`` and, on failure, ``error.type`` and an error status;
  each retry is an event ``moodlemate.retry`` (at the moment it is scheduled, through
  :func:`moodlemate.ai._retry.listen_to_retries`) and each fallback entry that failed an
  event ``moodlemate.fallback``;
- for a tool run (``GPT.run``/``arun``), an ``INTERNAL`` span ``invoke_agent {model}`` whose
  children are the run's model turns (the call spans above) and one ``execute_tool {name}`` span
  per tool call (``gen_ai.tool.name``, ``gen_ai.tool.call.id``, ``error.type`` when it failed;
  ``gen_ai.tool.call.arguments``/``gen_ai.tool.call.result`` only with content capture);
- the histograms ``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration``, and
  the counter ``moodlemate.client.cost`` (USD, calls with a known cost only).

Prompt and reply text are recorded only when asked (``capture_content=True``, or
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``). Keys never are: the call hooks
never receive them. Importing this module imports no OpenTelemetry; :func:`instrument` does.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moodlemate.ai._plugins import PluginRegistry
    from moodlemate.ai.otel.telemetry import GenAITelemetry

__all__ = ["CAPTURE_CONTENT_ENV", "PLUGIN_NAME", "instrument", "uninstrument"]

PLUGIN_NAME = "moodlemate.ai.otel"
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The variable OpenTelemetry's own GenAI instrumentations read for the same opt-in."""


def instrument(
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    capture_content: bool | str | None = None,
    plugins: PluginRegistry | None = None,
) -> GenAITelemetry:
    """Record every call of ``plugins`` (default: the global registry) as spans and metrics.

    ``tracer_provider``/``meter_provider`` default to OpenTelemetry's global ones. Calling
    it again replaces the earlier instrumentation. Raises ConfigurationError, naming the
    extra to install, when opentelemetry-api is missing.
    """
    try:
        from moodlemate.ai.otel.telemetry import GenAITelemetry
    except ImportError as exc:
        from moodlemate.ai.errors import ConfigurationError

        raise ConfigurationError(
            f"OpenTelemetry is not installed ({exc.name}): pip install 'moodlemate-ai[otel]'"
        ) from None
    from moodlemate.ai._flags import parse_flag
    from moodlemate.ai._plugins import registry

    if capture_content is None:
        variable = os.environ.get(CAPTURE_CONTENT_ENV, "")
        capture_content = bool(variable.strip()) and parse_flag(variable, CAPTURE_CONTENT_ENV)
    else:
        capture_content = parse_flag(capture_content, "capture_content")
    telemetry = GenAITelemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        capture_content=capture_content,
    )
    (plugins or registry).register(telemetry, PLUGIN_NAME)
    return telemetry


def uninstrument(plugins: PluginRegistry | None = None) -> bool:
    """Stop recording; False when nothing was instrumented."""
    from moodlemate.ai._plugins import registry

    return (plugins or registry).unregister(PLUGIN_NAME)
