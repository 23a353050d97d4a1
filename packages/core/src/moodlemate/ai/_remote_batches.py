"""The provider contract for remote batches: a vendor runs many requests on its own fleet.

OpenAI's Batch API is the model: upload a JSONL file of requests, create a batch from it,
poll it until it ends, download its output and error files. A provider that offers this
returns a :class:`RemoteBatches` from :meth:`Provider.remote_batches
<moodlemate.ai._provider.Provider.remote_batches>`; the others raise UnsupportedFeatureError,
and the remote runner (:mod:`moodlemate.ai.batch.remote`) says so before anything is sent.

Every method sends one request once: the runner decides what to retry and when, because
only it knows whether a request was already submitted.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moodlemate.ai._call_types import ChatRequest, Completion, Connection
    from moodlemate.ai._pricing import Price
    from moodlemate.ai.errors import ProviderError

__all__ = ["TERMINAL_STATUSES", "RemoteBatch", "RemoteBatches", "RemoteResult"]

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RemoteBatch:
    """A batch as the vendor reports it (OpenAI's Batch object, vendor-neutral)."""

    id: str
    status: str
    """validating, in_progress, finalizing, completed, failed, expired, cancelling, cancelled."""
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[str, ...] = ()
    """Why the batch failed validation, when it did."""
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class RemoteResult:
    """One line of an output or error file: the request's completion, or why it has none."""

    custom_id: str
    completion: Completion | None = None
    error: ProviderError | None = None


class RemoteBatches(ABC):
    """What a provider implements to run batches remotely; every call is sent once."""

    max_requests: int
    """Requests one input file may hold (the vendor's documented limit)."""
    max_bytes: int
    """Bytes one input file may hold."""

    def endpoint_for(self, request: ChatRequest) -> str | None:
        """The service endpoint ``request`` goes to, when the service has several (OpenAI's:
        ``/v1/chat/completions`` or ``/v1/responses``); a batch takes one endpoint, so the
        runner never puts requests for two endpoints in one batch. None: the only one."""
        return None

    @abstractmethod
    def request_line(self, custom_id: str, request: ChatRequest) -> bytes:
        """One input line (newline included) built by the same mapping as a live call, for
        the endpoint :meth:`endpoint_for` names."""

    @abstractmethod
    def upload(self, connection: Connection, filename: str, data: bytes) -> str:
        """Upload an input file; return its file id."""

    @abstractmethod
    def create(
        self,
        connection: Connection,
        file_id: str,
        metadata: Mapping[str, str],
        endpoint: str | None = None,
    ) -> RemoteBatch:
        """Create a batch of ``endpoint``'s requests (as :meth:`endpoint_for` named it)
        from an uploaded file."""

    @abstractmethod
    def retrieve(self, connection: Connection, batch_id: str) -> RemoteBatch: ...

    @abstractmethod
    def cancel(self, connection: Connection, batch_id: str) -> RemoteBatch: ...

    @abstractmethod
    def find(self, connection: Connection, key: str, value: str) -> RemoteBatch | None:
        """The batch whose metadata has ``key`` = ``value``, if one exists: how a run that
        died between submitting and recording a batch learns that it was submitted."""

    @abstractmethod
    def download(self, connection: Connection, file_id: str, path: str | os.PathLike[str]) -> None:
        """Append the file's content to ``path``, starting after the bytes already there."""

    @abstractmethod
    def parse_line(self, line: bytes, model: str, endpoint: str | None = None) -> RemoteResult:
        """One line of an output or error file of a batch of ``endpoint``'s requests."""

    def price(self, model: str) -> Price | None:
        """Price per million tokens of ``model`` in a remote batch; None when unknown."""
        return None
