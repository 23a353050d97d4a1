"""OpenAI's published OpenAPI spec (../shared/openai-openapi/openapi.yaml), for the tests that
check what we send and what the test server answers against it, with jsonschema.

Loading the whole 3 MB spec costs seconds, so only the schemas a check reaches (and the
schemas they refer to) are cut out of it and parsed.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["SPEC", "check_schema"]


def _find() -> Path | None:
    """The spec in a ``shared`` folder beside one of the checkout's parents (a worktree
    sits a level deeper than the main checkout)."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "openai-openapi" / "openapi.yaml"
        if candidate.is_file():
            return candidate
    return None


SPEC = _find()
_REF = re.compile(r"#/components/schemas/([A-Za-z0-9_.-]+)")


@cache
def _blocks() -> dict[str, str]:
    """Each component schema's YAML text, by name."""
    assert SPEC is not None
    text = SPEC.read_text("utf-8")
    start = text.index("\n  schemas:\n") + len("\n  schemas:\n")
    end_match = re.compile(r"^  \S", re.M).search(text, start)
    section = text[start : end_match.start() if end_match else len(text)]
    blocks: dict[str, str] = {}
    for match in re.finditer(r"^    ([A-Za-z0-9_.-]+):\n((?:(?:      .*)?\n)*)", section, re.M):
        blocks[match.group(1)] = match.group(2)
    return blocks


@cache
def _validator(name: str) -> Any:
    import jsonschema
    import referencing
    import referencing.jsonschema
    import yaml

    blocks = _blocks()
    wanted, todo = {}, [name]
    while todo:
        current = todo.pop()
        if current in wanted:
            continue
        wanted[current] = yaml.load(
            blocks[current],
            Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),  # noqa: S506 (a safe loader)
        )
        todo += _REF.findall(blocks[current])
    document = {"components": {"schemas": wanted}}
    resource = referencing.Resource.from_contents(
        document, default_specification=referencing.jsonschema.DRAFT202012
    )
    registry = referencing.Registry().with_resource("urn:openai", resource)
    return jsonschema.Draft202012Validator(
        {"$ref": f"urn:openai#/components/schemas/{name}"}, registry=registry
    )


def check_schema(name: str, instance: Any) -> None:
    """Assert ``instance`` is valid against the spec's component schema ``name``."""
    errors = [f"{list(e.path)}: {e.message}" for e in _validator(name).iter_errors(instance)]
    assert not errors, f"{name}: {errors[:5]}"
