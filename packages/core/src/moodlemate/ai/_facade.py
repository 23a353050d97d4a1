"""What the multi-call features (typed answers, tool runs) need of the GPT facade.

They drive several calls through the facade and the facade imports them, so they name it by
this protocol rather than importing it (core has no import cycles).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from moodlemate.ai._call import Call, RunTurn
    from moodlemate.ai._call_types import ChatRequest, Completion, Connection
    from moodlemate.ai._credentials import Target
    from moodlemate.ai._fallbacks import FallbackChain
    from moodlemate.ai._provider import Provider
    from moodlemate.ai._retry import RetryPolicy
    from moodlemate.ai._run_hooks import RunHooks
    from moodlemate.ai._spend_log import SpendLog
    from moodlemate.ai._token_framing import TokenCount

__all__ = ["Facade"]


class Facade(Protocol):
    """The parts of :class:`~moodlemate.ai.GPT` a typed answer or a tool run drives."""

    @property
    def retry(self) -> RetryPolicy: ...

    @property
    def fallbacks(self) -> tuple[str, ...]: ...

    def route(self, model: str | None = None) -> tuple[Provider, str]: ...

    def provider_connection(self, model: str | None = None) -> tuple[Provider, Connection, str]: ...

    @property
    def log(self) -> SpendLog | None: ...

    def prepare(
        self, request: ChatRequest, *, checked: bool = False, target: Target | None = None
    ) -> Call: ...

    def _chain(
        self,
        request: ChatRequest,
        run_turn: RunTurn | None = None,
        target: Target | None = None,
    ) -> FallbackChain: ...

    def _pinned(self) -> Target: ...

    def _route(self, model: str, target: Target | None = None) -> tuple[Provider, str]: ...

    def _endpoint(self, model: str, target: Target) -> str: ...

    def send(self, request: ChatRequest, *, run_turn: RunTurn | None = None) -> Completion: ...

    async def asend(
        self, request: ChatRequest, *, run_turn: RunTurn | None = None
    ) -> Completion: ...

    def _remember(self, completion: Completion) -> None: ...

    def _run_hooks(self) -> RunHooks | None: ...

    def count_message_tokens(
        self,
        messages: Iterable[Any],
        model: str = ...,
        *,
        tools: Iterable[Mapping[str, Any]] | None = None,
    ) -> TokenCount: ...
