"""Checking a typed answer against plain ``json.loads`` of the same 2 KB reply.

What a typed answer adds to a call is the parse and the validation of the model's text; the
call itself is measured elsewhere. The raw figure is ``json.loads`` (what a caller does without
validation); ours is ``AnswerSchema.parse`` (parse, validate, build the type), for a dataclass
checked with jsonschema and a pydantic model checked by pydantic.

Run alone: ``python bench/answers.py``.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

from measure import Row, Target, interleaved, median, timed

SECTION = "typed answers (raw: json.loads of the same 2 KB reply)"
REPEAT = 200


@dataclasses.dataclass
class Line:
    item: str
    quantity: int
    total: Decimal


@dataclasses.dataclass
class Invoice:
    number: str
    customer: str
    lines: list[Line]
    paid: bool


def reply_text() -> str:
    lines = [{"item": f"item number {i}", "quantity": i, "total": i * 1.25} for i in range(30)]
    invoice = {"number": "INV-2026-0042", "customer": "Ada", "lines": lines, "paid": True}
    return json.dumps(invoice)


def run(rounds: int) -> list[Row]:
    from moodlemate.ai._answer_schema import answer_schema

    text = reply_text()
    rows: list[Row] = []
    contenders = {
        "dataclass, checked by jsonschema": answer_schema(Invoice, engine="jsonschema"),
        "dataclass, checked by pydantic": answer_schema(Invoice),
    }
    try:
        import pydantic

        class Model(pydantic.BaseModel):
            number: str
            customer: str
            lines: list[dict[str, object]]
            paid: bool

        contenders["pydantic model"] = answer_schema(Model)
    except ImportError:
        pass
    for label, schema in contenders.items():
        schema.parse(text)  # warm: imports, compiled validators
        samples = interleaved(
            rounds,
            {
                "ours": lambda s=schema: timed(lambda: s.parse(text), REPEAT),
                "raw": lambda: timed(lambda: json.loads(text), REPEAT),
            },
        )
        ours, raw = median(samples["ours"]), median(samples["raw"])
        rows.append(
            Row(
                SECTION,
                f"parse and validate a {len(text):,}-byte reply: {label}",
                "µs",
                ours=ours * 1e6,
                raw=raw * 1e6,
                target=Target("ours<=", 1000.0),
                detail={"added_us": (ours - raw) * 1e6},
            )
        )
    return rows


if __name__ == "__main__":
    for row in run(5):
        added = row.detail["added_us"]
        print(f"{row.metric}: {row.ours:.0f} µs (json.loads {row.raw:.0f} µs, +{added:.0f} µs)")
