"""OpenAI's Files and Batch APIs for :class:`~moodlemate.testing.LoopbackServer`.

A remote batch lives for hours on the real service; here it lives on a clock that a test
speeds up (``speed``) or jumps forward (``advance``), so the whole state machine (validating,
in_progress, finalizing, completed; failed, expired, cancelling, cancelled) runs in
milliseconds with the shapes the real API sends: the Batch object with ``request_counts``,
output and error files of ``{"id", "custom_id", "response", "error"}`` lines.

Each request line of a batch is answered like a live request to the batch's endpoint (a chat
completion, or a Response for a ``/v1/responses`` batch): the server's script (``enqueue``),
fault rate and responder decide, so a test scripts per-request failures the same way. What a
whole batch does is scripted with :meth:`BatchService.script`::

    server.batches.speed = 10_000                  # simulated seconds per real second
    server.batches.script(BatchFate.expired(done=0.7))
    ... client.batches.create(...) ...             # expires with 70 % of requests answered

The service keeps a log of every batch ever created (``created``), which is what proves that
a client never submitted the same work twice.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_REQUESTS",
    "BatchFate",
    "BatchService",
    "StoredFile",
]

JSONObject = dict[str, Any]
Outcome = Literal["completed", "failed", "expired"]

BATCH_MAX_REQUESTS = 50_000
"""Requests per batch input file (OpenAI's API reference, ``CreateBatchRequest``)."""
BATCH_MAX_BYTES = 200 * 1024 * 1024
"""Bytes per batch input file (the same reference: 'up to 200 MB')."""
COMPLETION_WINDOW = 24 * 3600
_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions")
_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchFate:
    """What one batch does; build one with the classmethods."""

    outcome: Outcome = "completed"
    done: float = 1.0
    """Fraction of requests answered before an expiry."""
    code: str = "invalid_request"
    message: str = "The batch failed validation."

    @classmethod
    def completed(cls) -> BatchFate:
        return cls()

    @classmethod
    def failed(
        cls, message: str = "The batch failed validation.", code: str = "invalid_request"
    ) -> BatchFate:
        """Fail while validating, with ``errors.data`` holding ``code`` and ``message``."""
        return cls(outcome="failed", code=code, message=message)

    @classmethod
    def expired(cls, done: float = 0.0) -> BatchFate:
        """Run out of the 24 h window after answering ``done`` (0-1) of the requests."""
        if not 0.0 <= done <= 1.0 or math.isnan(done):
            raise ValueError(f"done must be between 0 and 1, got {done}")
        return cls(outcome="expired", done=done)


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def object(self) -> JSONObject:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": None,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: JSONObject | None
    created: float
    """Simulated time of creation."""
    fate: BatchFate
    results: list[tuple[str, JSONObject | None, JSONObject | None]] = field(default_factory=list)
    """(custom_id, response, error) per request, in input order."""
    errors: list[JSONObject] | None = None
    cancel_at: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    model: str | None = None


class BatchService:
    """The files and batches of one server; thread-safe. Times are simulated seconds."""

    def __init__(self, answer: Callable[[str, JSONObject], tuple[int, JSONObject]]) -> None:
        """``answer(endpoint, body)``: one request's status and body, as the live endpoint
        would answer it."""
        self._answer = answer
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}
        self._batches: dict[str, _Batch] = {}
        self._fates: deque[BatchFate] = deque()
        self._origin = time.monotonic()
        self._offset = 0.0
        self._epoch = int(time.time())
        self.speed = 1.0
        """Simulated seconds per real second; raise it so batches finish while a test waits."""
        self.validating_seconds = 30.0
        self.in_progress_seconds = 600.0
        self.finalizing_seconds = 30.0
        self.cancelling_seconds = 30.0
        self.max_requests = BATCH_MAX_REQUESTS
        self.max_bytes = BATCH_MAX_BYTES
        self.created: list[JSONObject] = []
        """Every batch created, as created: proof of what was submitted (and how often)."""

    # -- scripting and time ----------------------------------------------------------------

    def script(self, *fates: BatchFate) -> None:
        """The fates of the next batches created, in order; unscripted batches complete."""
        with self._lock:
            self._fates.extend(fates)

    def advance(self, seconds: float) -> None:
        """Jump the simulated clock forward."""
        with self._lock:
            self._offset += seconds

    def now(self) -> float:
        with self._lock:
            return self._now()

    def _now(self) -> float:
        return (time.monotonic() - self._origin) * self.speed + self._offset

    @property
    def files(self) -> dict[str, StoredFile]:
        with self._lock:
            return dict(self._files)

    def submitted_custom_ids(self) -> list[str]:
        """Every custom_id of every batch created, repeats included."""
        with self._lock:
            return [cid for batch in self._batches.values() for cid, _, _ in batch.results]

    # -- files -----------------------------------------------------------------------------

    def upload(self, content_type: str, raw: bytes) -> tuple[int, JSONObject]:
        fields = _multipart(content_type, raw)
        if fields is None:
            return _error(400, "Invalid multipart form data.", None)
        purpose = fields.get("purpose")
        if purpose is None or purpose[1]:
            return _error(400, "Missing required parameter: 'purpose'.", "purpose")
        purpose_text = purpose[0].decode("utf-8", "replace")
        if purpose_text not in ("assistants", "batch", "fine-tune", "vision", "user_data", "evals"):
            return _error(400, f"Invalid value for 'purpose': {purpose_text!r}.", "purpose")
        upload = fields.get("file")
        if upload is None or not upload[1]:
            return _error(400, "Missing required parameter: 'file'.", "file")
        content, filename = upload
        if purpose_text == "batch":
            if not filename.endswith(".jsonl"):
                return _error(400, "Batch files must be .jsonl files.", "file")
            if len(content) > self.max_bytes:
                return _error(400, f"File is larger than {self.max_bytes} bytes.", "file")
        with self._lock:
            stored = self._store(filename, purpose_text, content)
        return 200, stored.object()

    def _store(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(
            id=f"file-{uuid.uuid4().hex[:24]}",
            filename=filename,
            purpose=purpose,
            content=content,
            created_at=self._epoch + int(self._now()),
        )
        self._files[stored.id] = stored
        return stored

    def file(self, file_id: str) -> tuple[int, JSONObject]:
        with self._lock:
            stored = self._files.get(file_id)
        if stored is None:
            return _error(404, f"No such File object: {file_id}", "id")
        return 200, stored.object()

    def content(self, file_id: str) -> bytes | None:
        with self._lock:
            stored = self._files.get(file_id)
        return None if stored is None else stored.content

    # -- batches ---------------------------------------------------------------------------

    def create(self, body: Any) -> tuple[int, JSONObject]:
        if not isinstance(body, dict):
            return _error(400, "Invalid request body.", None)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return _error(400, f"Missing required parameter: '{name}'.", name)
        if body["completion_window"] != "24h":
            return _error(400, "Invalid value for 'completion_window'.", "completion_window")
        if body["endpoint"] not in _ENDPOINTS:
            return _error(400, "Invalid value for 'endpoint'.", "endpoint")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            return _error(400, "Invalid type for 'metadata'.", "metadata")
        with self._lock:
            stored = self._files.get(body["input_file_id"])
            if stored is None:
                return _error(404, f"No such File object: {body['input_file_id']}", "id")
            if stored.purpose != "batch":
                return _error(400, "The input file must have purpose 'batch'.", "input_file_id")
            fate = self._fates.popleft() if self._fates else BatchFate()
            batch = _Batch(
                id=f"batch_{uuid.uuid4().hex[:24]}",
                input_file_id=stored.id,
                endpoint=body["endpoint"],
                metadata=metadata,
                created=self._now(),
                fate=fate,
            )
            content = stored.content
        self._prepare(batch, content)
        with self._lock:
            self._batches[batch.id] = batch
            obj = self._object(batch)
            self.created.append(obj)
        return 200, obj

    def retrieve(self, batch_id: str) -> tuple[int, JSONObject]:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return _error(404, f"No batch found with id '{batch_id}'.", None)
            return 200, self._object(batch)

    def cancel(self, batch_id: str) -> tuple[int, JSONObject]:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return _error(404, f"No batch found with id '{batch_id}'.", None)
            status = self._status(batch)[0]
            if status in _TERMINAL or status == "finalizing":
                return _error(409, f"Cannot cancel a batch with status '{status}'.", None)
            if batch.cancel_at is None:
                batch.cancel_at = self._now()
            return 200, self._object(batch)

    def list(self, query: dict[str, str]) -> tuple[int, JSONObject]:
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            return _error(400, "Invalid value for 'limit'.", "limit")
        if not 1 <= limit <= 100:
            return _error(400, "'limit' must be between 1 and 100.", "limit")
        with self._lock:
            ordered = sorted(self._batches.values(), key=lambda b: b.created, reverse=True)
            after = query.get("after")
            if after:
                ids = [b.id for b in ordered]
                ordered = ordered[ids.index(after) + 1 :] if after in ids else []
            page = [self._object(b) for b in ordered[:limit]]
        return 200, {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(ordered) > limit,
        }

    # -- the state machine -----------------------------------------------------------------

    def _prepare(self, batch: _Batch, content: bytes) -> None:
        """Validate the input file as the real service does, then answer every request."""
        lines = [line for line in content.splitlines() if line.strip()]
        problems: list[JSONObject] = []
        requests: list[tuple[str, JSONObject]] = []
        seen: set[str] = set()
        models: set[str] = set()
        if len(lines) > self.max_requests:
            problems.append(_problem("too_many_requests", f"over {self.max_requests} requests"))
        for number, line in enumerate(lines, 1):
            try:
                data = json.loads(line)
            except ValueError:
                problems.append(_problem("invalid_json_line", "not valid JSON", number))
                continue
            if not isinstance(data, dict) or not isinstance(data.get("custom_id"), str):
                problems.append(_problem("missing_custom_id", "custom_id is required", number))
                continue
            if data.get("method") != "POST" or data.get("url") != batch.endpoint:
                problems.append(_problem("mismatched_endpoint", "url/method mismatch", number))
                continue
            if data["custom_id"] in seen:
                problems.append(_problem("duplicate_custom_id", "duplicate custom_id", number))
                continue
            body = data.get("body")
            if not isinstance(body, dict):
                problems.append(_problem("invalid_request", "body must be an object", number))
                continue
            seen.add(data["custom_id"])
            models.add(str(body.get("model")))
            requests.append((data["custom_id"], body))
        if len(models) > 1:
            problems.append(
                _problem("mismatched_model", "requests in a batch must use a single model")
            )
        if not requests and not problems:
            problems.append(_problem("empty_file", "the input file has no requests"))
        if batch.fate.outcome == "failed":
            problems.append(_problem(batch.fate.code, batch.fate.message))
        if problems:
            batch.errors = problems
            return
        batch.model = next(iter(models))
        for custom_id, body in requests:
            status, answer = self._answer(batch.endpoint, body)
            request_id = f"req_{uuid.uuid4().hex}"
            response = {"status_code": status, "request_id": request_id, "body": answer}
            batch.results.append((custom_id, response, None))

    def _status(self, batch: _Batch) -> tuple[str, dict[str, float]]:
        """The batch's status at the simulated now, and when each phase began."""
        now = self._now()
        start = batch.created
        marks: dict[str, float] = {}
        validated = start + self.validating_seconds
        if now < validated:
            return self._cancelled_or("validating", batch, now, marks)
        if batch.errors is not None:
            marks["failed_at"] = validated
            return "failed", marks
        marks["in_progress_at"] = validated
        if batch.fate.outcome == "expired":
            expiry = start + COMPLETION_WINDOW
            if now < expiry:
                return self._cancelled_or("in_progress", batch, now, marks)
            marks["expired_at"] = expiry
            return "expired", marks
        finalizing = validated + self.in_progress_seconds
        if now < finalizing:
            return self._cancelled_or("in_progress", batch, now, marks)
        marks["finalizing_at"] = finalizing
        done = finalizing + self.finalizing_seconds
        if batch.cancel_at is not None and batch.cancel_at < finalizing:
            return self._cancelled_or("in_progress", batch, now, marks)
        if now < done:
            return "finalizing", marks
        marks["completed_at"] = done
        return "completed", marks

    def _cancelled_or(
        self, status: str, batch: _Batch, now: float, marks: dict[str, float]
    ) -> tuple[str, dict[str, float]]:
        if batch.cancel_at is None:
            return status, marks
        marks["cancelling_at"] = batch.cancel_at
        if now < batch.cancel_at + self.cancelling_seconds:
            return "cancelling", marks
        marks["cancelled_at"] = batch.cancel_at + self.cancelling_seconds
        return "cancelled", marks

    def _answered(self, batch: _Batch, status: str, marks: dict[str, float]) -> int:
        """How many requests are done by now (they finish evenly over the run)."""
        total = len(batch.results)
        if status == "completed" or status == "finalizing":
            return total
        begun = marks.get("in_progress_at")
        if begun is None:
            return 0
        if batch.fate.outcome == "expired":
            span = COMPLETION_WINDOW - self.validating_seconds
            limit = math.floor(total * batch.fate.done)
        else:
            span = self.in_progress_seconds
            limit = total
        until = marks.get("cancelling_at", marks.get("expired_at", self._now()))
        share = 1.0 if span <= 0 else max(0.0, min(1.0, (until - begun) / span))
        return min(limit, math.floor(total * share))

    def _object(self, batch: _Batch) -> JSONObject:
        status, marks = self._status(batch)
        total = len(batch.results)
        answered = self._answered(batch, status, marks)
        failed = sum(1 for _, response, _ in batch.results[:answered] if _failed(response))
        if status in _TERMINAL and status != "failed":
            self._write_files(batch, status, answered)
        stamp: Callable[[str], int | None] = lambda name: (  # noqa: E731
            self._epoch + int(marks[name]) if name in marks else None
        )
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model,
            "errors": None
            if batch.errors is None
            else {"object": "list", "data": [dict(e) for e in batch.errors]},
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.files.get("output"),
            "error_file_id": batch.files.get("error"),
            "created_at": self._epoch + int(batch.created),
            "in_progress_at": stamp("in_progress_at"),
            "expires_at": self._epoch + int(batch.created + COMPLETION_WINDOW),
            "finalizing_at": stamp("finalizing_at"),
            "completed_at": stamp("completed_at"),
            "failed_at": stamp("failed_at"),
            "expired_at": stamp("expired_at"),
            "cancelling_at": stamp("cancelling_at"),
            "cancelled_at": stamp("cancelled_at"),
            "request_counts": {
                "total": total,
                "completed": answered - failed,
                "failed": failed,
            },
            "metadata": batch.metadata,
        }

    def _write_files(self, batch: _Batch, status: str, answered: int) -> None:
        """Once terminal: the output file (successes) and error file (failures, unfinished)."""
        if batch.files:
            return
        reason = {
            "expired": (
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            ),
            "cancelled": ("batch_cancelled", "This request was not executed: batch cancelled."),
        }.get(status)
        outputs: list[bytes] = []
        errors: list[bytes] = []
        for index, (custom_id, response, _) in enumerate(batch.results):
            line_id = f"batch_req_{uuid.uuid4().hex[:24]}"
            if index < answered:
                line = {"id": line_id, "custom_id": custom_id, "response": response, "error": None}
                (errors if _failed(response) else outputs).append(_line(line))
            elif reason is not None:
                error = {"code": reason[0], "message": reason[1]}
                errors.append(
                    _line({"id": line_id, "custom_id": custom_id, "response": None, "error": error})
                )
        if outputs:
            name = f"batch_{batch.id}_output.jsonl"
            batch.files["output"] = self._store(name, "batch_output", b"".join(outputs)).id
        if errors:
            name = f"batch_{batch.id}_error.jsonl"
            batch.files["error"] = self._store(name, "batch_output", b"".join(errors)).id


def _failed(response: JSONObject | None) -> bool:
    return response is None or int(response.get("status_code", 500)) >= 400


def _line(obj: JSONObject) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _problem(code: str, message: str, line: int | None = None) -> JSONObject:
    return {"code": code, "message": message, "param": None, "line": line}


def _error(status: int, message: str, param: str | None) -> tuple[int, JSONObject]:
    return status, {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        }
    }


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[bytes, str]] | None:
    """``name -> (value, filename)`` of a multipart/form-data body; None when unparsable."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(head + raw)
    if not message.is_multipart():
        return None
    fields: dict[str, tuple[bytes, str]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        fields[str(name)] = (data, str(part.get_filename() or ""))
    return fields
