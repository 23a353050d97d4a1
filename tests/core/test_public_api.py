"""The names users import from ``moodlemate.ai``: all resolve, and type checkers see them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import moodlemate.ai as api

USER_CODE = """
from decimal import Decimal

from moodlemate.ai import GPT, Completion, RateLimitError, RetryPolicy, TextStream

gpt = GPT(retry=RetryPolicy(attempts=3))
text: str = gpt.chat_completion("gpt-4o-mini", "s", "u")
tokens: int = gpt.count_tokens(text)
result: Completion | None = gpt.last_result
cost: Decimal | None = result.cost if result else None
stream: TextStream = gpt.stream("gpt-4o-mini", "s", "u")
try:
    gpt.context_assistant("hi")
except RateLimitError as exc:
    wait: float | None = exc.retry_after
"""


def test_every_public_name_resolves() -> None:
    for name in api.__all__:
        assert getattr(api, name) is not None, name


def test_lazy_table_and_type_checking_imports_agree() -> None:
    tree = ast.parse(Path(api.__file__).read_text())
    typed = {
        alias.asname
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moodlemate")
        for alias in node.names
        if alias.asname == alias.name  # the explicit re-export form
    }
    assert typed == set(api._DEFINED_IN)
    assert set(api._DEFINED_IN) <= set(api.__all__)


def test_users_strict_mypy_accepts_imports_from_the_package(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(USER_CODE)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(app)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
