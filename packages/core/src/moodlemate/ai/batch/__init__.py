"""Resumable batch jobs: many chat requests from a JSONL file, answered into a JSONL file.

    from moodlemate.ai import GPT
    from moodlemate.ai.batch import read_items, run_batch

    gpt = GPT()
    items = read_items("questions.jsonl", default_model=gpt.model)  # validated, nothing sent
    summary = run_batch(gpt, items, "answers.jsonl", concurrency=8)

Each result is appended to the output (and fsynced) as soon as it arrives; a rerun with the
same output skips the ids already answered successfully and retries the failed ones, so an
interrupted or crashed run loses nothing it had answered. ``moodlemate-ai batch`` is a thin
command-line wrapper around these functions. :func:`moodlemate.ai.batch.remote.run_remote_batch`
answers the same files through the vendor's batch service (OpenAI's Batch API) instead.
"""

from __future__ import annotations

from moodlemate.ai.batch.items import BatchInputError, BatchItem, parse_items, read_items
from moodlemate.ai.batch.results import BatchOutputError, ResultLog
from moodlemate.ai.batch.runner import BatchInterrupted, BatchSummary, run_batch

# Remote batches (run_remote_batch, cancel_remote_batch) live in moodlemate.ai.batch.remote:
# importing them here would load the remote machinery for every local batch.

__all__ = [
    "BatchInputError",
    "BatchInterrupted",
    "BatchItem",
    "BatchOutputError",
    "BatchSummary",
    "ResultLog",
    "parse_items",
    "read_items",
    "run_batch",
]
