"""Tools: what a model may call, described to it by a JSON schema, run here by a Python callable.

A tool is usually a plain function: its name, its docstring's summary and a schema from its type
hints (:mod:`moodlemate.ai._json_schema`) describe it. It can also be a raw definition (an
OpenAI-shaped ``{"type": "function", "function": {...}}``, as users copy them from the docs)
paired with a callable, or a :class:`Tool` built by hand. Definitions are vendor-neutral here;
the provider rewrites them into its vendor's strict form when the model takes one.

What the model sends as arguments is untrusted: :meth:`Tool.bind` parses it and checks every
argument against the tool's schema (names, required ones, types, converted to the hinted types)
before the function sees it, and says what was wrong in words the model can act on.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moodlemate.ai._json_schema import function_schema
from moodlemate.ai.errors import ValidationError

__all__ = ["MAX_ARGUMENT_CHARS", "Tool", "ToolInputError", "as_tool", "tool_set"]

MAX_ARGUMENT_CHARS = 1_000_000
"""Longest arguments text read (a model looping on a string could send megabytes)."""
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolInputError(Exception):
    """The model's arguments do not fit the tool; the message says why, for the model."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the model may call: ``name``, ``description`` and the JSON schema of its
    ``parameters``; ``function`` runs it (sync or async). ``timeout`` bounds one execution (None:
    the run's default); ``strict`` asks for the vendor's strict mode (None: the provider
    decides by the model)."""

    name: str
    parameters: Mapping[str, Any]
    description: str | None = None
    function: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    timeout: float | None = None
    strict: bool | None = None
    _binder: _Binder | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValidationError(
                f"tool name {self.name!r} must be 1 to 64 letters, digits, _ or -"
            )
        if not isinstance(self.parameters, Mapping) or self.parameters.get("type") != "object":
            raise ValidationError(f"tool {self.name}: parameters must be an object schema")
        if self.description is not None and not isinstance(self.description, str):
            raise ValidationError(f"tool {self.name}: description must be text")
        if self.function is not None and not callable(self.function):
            raise ValidationError(f"tool {self.name}: function must be callable")
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise ValidationError(f"tool {self.name}: timeout must be a positive number")
        if self.function is not None:
            object.__setattr__(self, "_binder", _Binder(self.function, self.parameters))

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        strict: bool | None = None,
    ) -> Tool:
        """A tool described by ``function``'s signature, type hints and docstring."""
        schema = function_schema(function, name=name)
        return cls(
            name=schema["name"],
            parameters=schema["parameters"],
            description=description if description is not None else schema.get("description"),
            function=function,
            timeout=timeout,
            strict=strict,
        )

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def definition(self) -> dict[str, Any]:
        """The OpenAI-shaped definition sent to the model (the provider may rewrite it)."""
        function: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            function["description"] = self.description
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}

    def bind(self, arguments: str) -> dict[str, Any]:
        """The model's ``arguments`` text as keyword arguments for :attr:`function`, checked
        and converted; :class:`ToolInputError` says what is wrong."""
        if self._binder is None:
            raise ToolInputError(f"the tool {self.name} has no function to run here")
        return self._binder.bind(arguments)


class _Binder:
    """Checks one function's arguments: names against its signature, values against the
    parameter types (pydantic when installed, else jsonschema, as for typed answers)."""

    def __init__(self, function: Callable[..., Any], parameters: Mapping[str, Any]) -> None:
        self.parameters = parameters
        self.hints: dict[str, Any] | None
        try:
            signature = inspect.signature(function)
            self.hints = typing.get_type_hints(function, include_extras=True)
        except (TypeError, ValueError, NameError):
            signature, self.hints = None, None
        if signature is not None and all(
            p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in signature.parameters.values()
        ):
            self.names: tuple[str, ...] | None = tuple(signature.parameters)
            self.required = tuple(
                p.name for p in signature.parameters.values() if p.default is p.empty
            )
            # Strict modes send an optional parameter as required and nullable: a null for a
            # parameter with a default means "not given".
            self.optional = frozenset(
                p.name for p in signature.parameters.values() if p.default is not p.empty
            )
        else:
            self.names = None
            self.required = tuple(parameters.get("required", ()))
            self.optional = frozenset()
        self._checkers: dict[str, Any] = {}

    def bind(self, arguments: str) -> dict[str, Any]:
        if not isinstance(arguments, str):
            raise ToolInputError("the arguments must be a JSON object")
        if len(arguments) > MAX_ARGUMENT_CHARS:
            raise ToolInputError(
                f"the arguments are {len(arguments):,} characters, over {MAX_ARGUMENT_CHARS:,}"
            )
        try:
            values = json.loads(arguments) if arguments.strip() else {}
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ToolInputError(f"the arguments are not valid JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ToolInputError("the arguments must be a JSON object of named arguments")
        known = self.names if self.names is not None else tuple(self._properties())
        unknown = sorted(set(values) - set(known))
        missing = [name for name in self.required if name not in values]
        problems = []
        if unknown:
            problems.append(f"unknown argument(s): {', '.join(unknown)}")
        if missing:
            problems.append(f"missing required argument(s): {', '.join(missing)}")
        if problems:
            problems.append(f"the tool takes: {', '.join(known) or 'no arguments'}")
            raise ToolInputError("; ".join(problems))
        return {
            name: self._convert(name, value)
            for name, value in values.items()
            if not (value is None and name in self.optional)
        }

    def _properties(self) -> Mapping[str, Any]:
        properties = self.parameters.get("properties")
        return properties if isinstance(properties, Mapping) else {}

    def _convert(self, name: str, value: Any) -> Any:
        from moodlemate.ai._answer_schema import AnswerProblems, answer_schema

        checker = self._checkers.get(name)
        if checker is None:
            if self.hints is not None and name in self.hints:
                checker = answer_schema(self.hints[name]).convert
            else:
                schema = self._properties().get(name)
                if not isinstance(schema, Mapping):
                    return value
                checker = answer_schema({"type": "object", "properties": {"v": schema}}).convert
                plain = checker
                checker = lambda v: plain({"v": v})["v"]  # noqa: E731
            self._checkers[name] = checker
        try:
            return checker(value)
        except AnswerProblems as problems:
            details = "; ".join(p.removeprefix("the answer: ") for p in problems.problems)
            raise ToolInputError(f"argument {name!r}: {details}") from None


def as_tool(value: object) -> Tool:
    """A :class:`Tool` from what a user hands over: a Tool, a function, or an OpenAI-shaped
    definition paired with its callable as ``(definition, function)``."""
    if isinstance(value, Tool):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Mapping):
        definition, function = value
        spec = definition.get("function", definition)
        if not isinstance(spec, Mapping):
            raise ValidationError("a tool definition needs a function object")
        parameters = spec.get("parameters") or {"type": "object", "properties": {}}
        return Tool(
            name=str(spec.get("name", "")),
            parameters=parameters,
            description=spec.get("description"),
            function=function,
            strict=spec.get("strict"),
        )
    if isinstance(value, Mapping):
        raise ValidationError(
            "a tool definition alone cannot be run: pass (definition, function), or a Tool"
        )
    if callable(value):
        return Tool.from_function(value)
    raise ValidationError(f"a tool is a function, a Tool or (definition, function), not {value!r}")


def tool_set(tools: Iterable[object]) -> dict[str, Tool]:
    """``tools`` as :class:`Tool` values by name; two tools may not share a name."""
    found: dict[str, Tool] = {}
    for value in tools:
        tool = as_tool(value)
        if tool.name in found:
            raise ValidationError(f"two tools are named {tool.name!r}")
        found[tool.name] = tool
    return found
