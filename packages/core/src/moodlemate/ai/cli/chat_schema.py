"""``chat --schema`` and ``--schema-multi``: a typed answer from the command line.

The schema is a JSON schema file, JSON written inline, or the concise syntax people type at a
shell (``'name, age int, bio: a short bio'``, see :mod:`moodlemate.ai._concise_schema`). The
answer is printed as one JSON value, so it can be piped to ``jq``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_USAGE

__all__ = ["add_schema_options", "answer_schema_of", "printed_answer", "schema_from"]

_MAX_SCHEMA_BYTES = 1024 * 1024


def add_schema_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--schema",
        metavar="SCHEMA",
        help="answer as JSON following SCHEMA: a JSON schema file, inline JSON, or fields "
        "such as 'name, age int, bio: a short bio' (types str, int, float, bool)",
    )
    group.add_argument(
        "--schema-multi",
        metavar="SCHEMA",
        help="as --schema, for a list of such answers (printed as a JSON array)",
    )


def answer_schema_of(args: argparse.Namespace) -> dict[str, Any] | None:
    """The JSON schema the model is asked to follow, or None for a text reply."""
    from moodlemate.ai._concise_schema import multi_schema

    spec: str | None = args.schema if args.schema is not None else args.schema_multi
    if spec is None:
        return None
    schema = schema_from(spec)
    return multi_schema(schema) if args.schema_multi is not None else schema


def schema_from(spec: str) -> dict[str, Any]:
    """The JSON schema ``spec`` gives: a file, inline JSON, or the concise syntax."""
    from moodlemate.ai._concise_schema import concise_schema
    from moodlemate.ai.errors import ValidationError

    try:
        schema = _json_schema(spec)
        return concise_schema(spec) if schema is None else schema
    except ValidationError as exc:
        raise CommandError(f"--schema: {exc.message}", EXIT_USAGE) from None


def printed_answer(args: argparse.Namespace, answer: Any) -> Any:
    """What is printed: the list itself for ``--schema-multi``, else the answer."""
    if args.schema_multi is not None and isinstance(answer, dict):
        return answer.get("items", [])
    return answer


def _json_schema(spec: str) -> dict[str, Any] | None:
    """The schema in a file or written as JSON; None when ``spec`` is the concise syntax."""
    text = spec.strip()
    source = "--schema"
    if not text.startswith("{"):
        path = Path(spec).expanduser()
        if not (path.suffix.lower() == ".json" or path.is_file()):
            return None
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_SCHEMA_BYTES + 1)
        except OSError as exc:
            raise CommandError(
                f"--schema: cannot read {spec}: {exc.strerror}", EXIT_USAGE
            ) from None
        if len(data) > _MAX_SCHEMA_BYTES:
            raise CommandError(f"--schema: {spec} is larger than 1 MiB", EXIT_USAGE)
        text, source = data.decode("utf-8", "replace"), spec
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{source}: not valid JSON ({exc})", EXIT_USAGE) from None
    if not isinstance(schema, dict):
        raise CommandError(f"{source}: a JSON schema is an object", EXIT_USAGE)
    return schema
