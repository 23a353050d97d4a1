"""OpenAI's published OpenAPI spec (../shared/openai-openapi/openapi.yaml) as validators for the
conformance tests: what we send and what the test server answers are checked against it.

Loading the whole 3 MB spec costs seconds, so only the schemas a check reaches (and the schemas
they refer to) are cut out of it and parsed."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
referencing = pytest.importorskip("referencing")

SPEC = next(
    (
        folder / "shared" / "openai-openapi" / "openapi.yaml"
        for folder in Path(__file__).resolve().parents
        if (folder / "shared" / "openai-openapi" / "openapi.yaml").is_file()
    ),
    Path(__file__).resolve().parents[2] / "shared" / "openai-openapi" / "openapi.yaml",
)
"""The spec beside the checkout (../shared), found from a checkout at any depth."""
_REF = re.compile(r"#/components/schemas/([A-Za-z0-9_.-]+)")


@cache
def blocks() -> dict[str, str]:
    """Each component schema's YAML text, by name."""
    text = SPEC.read_text("utf-8")
    start = text.index("\n  schemas:\n") + len("\n  schemas:\n")
    end_match = re.compile(r"^  \S", re.M).search(text, start)
    section = text[start : end_match.start() if end_match else len(text)]
    blocks: dict[str, str] = {}
    for match in re.finditer(r"^    ([A-Za-z0-9_.-]+):\n((?:(?:      .*)?\n)*)", section, re.M):
        blocks[match.group(1)] = match.group(2)
    return blocks


def validator(name: str) -> Any:
    found = blocks()
    wanted, todo = {}, [name]
    while todo:
        current = todo.pop()
        if current in wanted:
            continue
        wanted[current] = yaml.load(
            found[current], Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
        todo += _REF.findall(found[current])
    document = {"components": {"schemas": wanted}}
    resource = referencing.Resource.from_contents(
        document, default_specification=referencing.jsonschema.DRAFT202012
    )
    registry = referencing.Registry().with_resource("urn:openai", resource)
    return jsonschema.Draft202012Validator(
        {"$ref": f"urn:openai#/components/schemas/{name}"}, registry=registry
    )


def present(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields that are not null. The spec's own example Batch carries null timestamps
    and file ids (as the real API sends them) while its schema types them non-nullable."""
    return {k: v for k, v in obj.items() if v is not None}


def check(name: str, instance: Any) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in validator(name).iter_errors(instance)]
    assert not errors, f"{name}: {errors[:5]}"


requires_spec = pytest.mark.skipif(not SPEC.is_file(), reason="the OpenAPI spec is not present")
