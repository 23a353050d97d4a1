"""The Ollama provider: the OpenAI provider pointed at a local server, with its own defaults.

Ollama speaks the OpenAI chat-completions protocol at ``/v1``, so everything on the wire is
inherited; only the defaults differ: where the server is, that it needs no key, and that it
charges nothing.
"""

from __future__ import annotations

import os
from decimal import Decimal
from urllib.parse import urlsplit

from moodlemate.ai.plugin import (
    AudioPart,
    ChatRequest,
    FilePart,
    ImagePart,
    InvalidEndpointError,
    ModelInfo,
    Price,
    UnsupportedInputError,
)
from moodlemate.providers.openai import OpenAIProvider
from moodlemate.providers.openai.tokens import count_tokens

__all__ = ["DEFAULT_ENDPOINT", "HOST_ENV", "OllamaProvider", "endpoint_from_host"]

DEFAULT_PORT = 11434
DEFAULT_ENDPOINT = f"http://localhost:{DEFAULT_PORT}/v1"
HOST_ENV = "OLLAMA_HOST"
"""Where Ollama's own tools find the server (``host:port`` or a URL); honoured the same way."""

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Bind-any addresses a server listens on, reached from the same machine through localhost.
_ANY_HOSTS = frozenset({"0.0.0.0", "::"})
FREE = Price(input=Decimal(0), output=Decimal(0), cached_input=Decimal(0))
# Ollama models bring their own tokenizers; counts use this model's encoding (o200k_base).
ESTIMATE_TOKENS_AS = "gpt-4o"


def endpoint_from_host(value: str) -> str:
    """``OLLAMA_HOST`` (``host``, ``host:port`` or a URL) -> the server's OpenAI base URL."""
    text = value.strip()
    try:
        parts = urlsplit(text if "://" in text else f"http://{text}")
        port = parts.port or (DEFAULT_PORT if "://" not in text else None)
    except ValueError as exc:
        raise InvalidEndpointError(f"{HOST_ENV}={value!r} is not host[:port] or a URL") from exc
    host = parts.hostname or "localhost"
    if host in _ANY_HOSTS:
        host = "localhost"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/v1"


class OllamaProvider(OpenAIProvider):
    """A local Ollama server. Token counts are an estimate (see :meth:`count_tokens`)."""

    name = "ollama"
    default_model = None  # whatever the server has pulled: calls name their model
    default_endpoint = DEFAULT_ENDPOINT
    key_env = None
    key_prefixes = ()
    requires_key = False

    def __init__(self) -> None:
        super().__init__()
        host = os.environ.get(HOST_ENV, "").strip()
        if host:
            self.default_endpoint = endpoint_from_host(host)

    def recognises(self, endpoint: str) -> bool:
        """Port 11434 on this machine, or the server ``OLLAMA_HOST`` names."""
        return _server(endpoint) in {_server(self.default_endpoint), _server(DEFAULT_ENDPOINT)}

    def check_input(self, request: ChatRequest) -> None:
        """Ollama's OpenAI-compatible endpoint takes images inline (base64), not by URL,
        and no file or audio parts; whether the model itself sees images (llava, gemma3,
        llama3.2-vision...) only the server knows."""
        super().check_input(request)
        for index, message in enumerate(request.messages):
            for part in () if isinstance(message.content, str) else message.content:
                if isinstance(part, ImagePart) and part.url is not None:
                    raise UnsupportedInputError(
                        f"messages[{index}]: Ollama takes images as bytes or a file, not by "
                        "URL (it does not fetch them); download the image first"
                    )
                if isinstance(part, FilePart | AudioPart):
                    kind = "file" if isinstance(part, FilePart) else "audio"
                    raise UnsupportedInputError(
                        f"messages[{index}]: Ollama's OpenAI-compatible API takes no {kind} parts"
                    )

    def count_tokens(self, text: str, model: str) -> int:
        """An estimate: Llama, Qwen, Mistral and the rest use their own tokenizers, which
        are not available offline, so ``text`` is counted with tiktoken's o200k_base."""
        return count_tokens(text, ESTIMATE_TOKENS_AS)

    def model_info(self, model: str, endpoint: str | None = None) -> ModelInfo:
        """Any model: no charge (cost 0, not unknown); limits depend on the pulled model."""
        return ModelInfo(name=model, price=FREE, source="local Ollama server: no charge")

    def models(self, endpoint: str | None = None) -> list[ModelInfo]:
        """None listed: which models exist depends on what was pulled into the server."""
        return []


def _server(endpoint: str) -> tuple[str, int | None]:
    """(host, port), with every loopback name folded into one, so spellings compare equal."""
    parts = urlsplit(endpoint)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return ("", None)
    host = (parts.hostname or "").lower()
    return ("localhost" if host in LOCAL_HOSTS else host, port)
