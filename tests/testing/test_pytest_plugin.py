"""The pytest plugin users get with moodlemate-ai-testing: run as pytest runs it, in a fresh
session (pytester), found through its installed ``pytest11`` entry point, with no conftest."""

from __future__ import annotations

import re
from importlib.metadata import entry_points

import pytest
from support import REPO


def _guide_example() -> str:
    guide = (REPO / "docs" / "testing.md").read_text(encoding="utf-8")
    section = guide.split("\n## pytest fixtures\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None
    return found.group(1)


def test_the_plugin_is_an_installed_pytest11_entry_point() -> None:
    (entry,) = [e for e in entry_points(group="pytest11") if e.name == "moodlemate-ai"]
    assert entry.value == "moodlemate.testing.pytest_plugin"
    assert entry.dist is not None
    assert entry.dist.name == "moodlemate-ai-testing"


def test_the_readme_example_passes_as_written(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_greeting=_guide_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_state_never_leaks_from_one_test_to_the_next(pytester: pytest.Pytester) -> None:
    """Each test leaves the shared server dirty in every way reset() promises to undo."""
    pytester.makepyfile(
        test_dirty="""
        import pytest
        from moodlemate.ai import GPT, ProviderError
        from moodlemate.ai.testing import Fault, Reply

        URLS = set()

        @pytest.mark.parametrize("round", range(3))
        def test_dirty(gpt, moodlemate_server, round):
            URLS.add(moodlemate_server.url)
            assert len(URLS) == 1  # one server for the session
            assert moodlemate_server.requests == [] and moodlemate_server.pending == 0
            assert gpt.endpoint.rstrip("/") == moodlemate_server.url
            assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "Echo: hi"
            moodlemate_server.enqueue(Reply(text="left over"), Fault.status(400))
            moodlemate_server.fault_rate(1.0, [Fault.status(500)], seed=round)
            moodlemate_server.responder = lambda body: Reply(text="responder")
            moodlemate_server.api_key = "sk-only-this"
            moodlemate_server.models = []
            moodlemate_server.reject_stream_models.add("gpt-4o-mini")
            moodlemate_server.strict = False
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_gpt_retries_fast_and_is_bounded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_outage="""
        import time
        import pytest
        from moodlemate.ai import ServerError
        from moodlemate.ai.testing import Fault

        def test_persistent_outage(gpt, moodlemate_server):
            moodlemate_server.fault_rate(1.0, [Fault.status(503)])
            started = time.monotonic()
            with pytest.raises(ServerError):
                gpt.chat_completion("gpt-4o-mini", "", "hi")
            assert time.monotonic() - started < 5
            assert len(moodlemate_server.chat_requests) == 4  # moodlemate_retry's attempts
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_projects_own_fixture_wins_and_the_plugin_can_be_turned_off(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def gpt():
            return "the project's own"
        """
    )
    pytester.makepyfile(
        test_own="""
        def test_own(gpt):
            assert gpt == "the project's own"

        def test_server(moodlemate_server):
            assert moodlemate_server.url.startswith("http://127.0.0.1:")
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)
    off = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:moodlemate-ai")
    off.assert_outcomes(passed=1, errors=1)
    off.stdout.fnmatch_lines(["*fixture 'moodlemate_server' not found*"])


def test_loading_the_plugin_imports_neither_the_server_nor_the_sdk(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_light="""
        import sys

        def test_light():
            loaded = {m.split(".")[0] for m in sys.modules} | set(sys.modules)
            assert "moodlemate.testing.pytest_plugin" in loaded
            server = {"moodlemate.testing._server", "moodlemate.ai.testing"}
            assert not {"openai", "tiktoken", "moodlemate.providers", *server} & loaded
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
