"""``chat -T NAME`` and ``chat --functions FILE.py``: tools for the model to call, and the
approval each call needs before it runs.

-T picks tools the installed plugins register (the ``register_tools`` hook); --functions
makes every public function defined in a Python file a tool. A tool runs on this machine with
the user's rights, so each call is shown and asked about on the terminal first (``--yes``
runs them without asking); without a terminal to ask on, the command refuses to start unless
``--yes`` is given, before anything is sent.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moodlemate.ai.cli.common import CommandError
from moodlemate.ai.cli.exits import EXIT_USAGE
from moodlemate.ai.cli.terminal import is_terminal, safe

if TYPE_CHECKING:
    from moodlemate.ai._messages import ToolCall
    from moodlemate.ai._tool_calls import Approval
    from moodlemate.ai._tools import Tool

__all__ = ["add_tool_options", "chosen_tools", "tool_approval"]

ARGUMENTS_SHOWN = 300
"""Characters of a call's arguments shown in the approval prompt (the rest is cut)."""


def add_tool_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-T",
        "--tool",
        dest="tools",
        action="append",
        metavar="NAME",
        help="let the model call tool NAME, registered by an installed plugin (repeatable)",
    )
    parser.add_argument(
        "--functions",
        dest="function_files",
        action="append",
        metavar="FILE.py",
        help="let the model call every public function defined in FILE.py (repeatable)",
    )
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="run the model's tool calls without asking (needed when not on a terminal)",
    )


def chosen_tools(args: argparse.Namespace) -> list[Tool]:
    """The tools -T and --functions name, checked (and the approval possible) before
    anything is sent."""
    from moodlemate.ai._tools import tool_set
    from moodlemate.ai.errors import ValidationError

    names: list[str] = args.tools or []
    files: list[str] = args.function_files or []
    if not names and not files:
        return []
    if not args.yes and not is_terminal(sys.stdin):
        raise CommandError(
            "tool calls are approved on a terminal, one by one; pass --yes to run them "
            "without asking",
            EXIT_USAGE,
        )
    found: list[object] = []
    if names:
        found += _plugin_tools(names)
    for path in files:
        found += _file_functions(Path(path))
    try:
        return list(tool_set(found).values())
    except ValidationError as exc:
        raise CommandError(exc.message, EXIT_USAGE) from None


def tool_approval(args: argparse.Namespace) -> Approval | None:
    """None with --yes; else a prompt on the terminal for each call."""
    return None if args.yes else _ask


def _ask(call: ToolCall, tool: Tool) -> bool | str:
    arguments = call.arguments
    if len(arguments) > ARGUMENTS_SHOWN:
        arguments = arguments[: ARGUMENTS_SHOWN - 1] + "…"
    sys.stderr.write(safe(f"Run tool {call.name}({arguments})? [y/N] "))
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() in ("y", "yes"):
        return True
    if not answer:  # end of input: nobody to say yes
        sys.stderr.write("\n")
    return "The user did not allow this call."


def _plugin_tools(names: list[str]) -> list[object]:
    from moodlemate.ai._plugins import registry
    from moodlemate.ai.errors import ValidationError

    try:
        offered = registry.tools()
    except ValidationError as exc:
        raise CommandError(f"the plugins' tools: {exc.message}") from None
    except Exception as exc:  # a plugin's register_tools hook failed
        raise CommandError(f"the plugins' tools: {type(exc).__name__}: {exc}") from None
    unknown = [name for name in names if name not in offered]
    if unknown:
        known = ", ".join(sorted(offered)) or "none (no installed plugin registers tools)"
        raise CommandError(f"no tool named {', '.join(unknown)}; tools: {known}", EXIT_USAGE)
    return [offered[name] for name in dict.fromkeys(names)]


def _file_functions(path: Path) -> list[object]:
    """Every public function ``path`` defines (not the ones it imports), as tools."""
    import importlib.util

    if not path.is_file():
        raise CommandError(f"--functions {path}: no such file", EXIT_USAGE)
    name = f"moodlemate_functions_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CommandError(f"--functions {path}: not a Python file", EXIT_USAGE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing hints look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise CommandError(f"--functions {path}: {type(exc).__name__}: {exc}") from None
    functions: list[Any] = [
        value
        for attribute, value in vars(module).items()
        if not attribute.startswith("_") and inspect.isfunction(value) and value.__module__ == name
    ]
    if not functions:
        raise CommandError(f"--functions {path}: defines no public function", EXIT_USAGE)
    return functions
