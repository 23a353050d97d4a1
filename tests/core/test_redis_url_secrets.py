"""Every credential a Redis URL can carry (``user:pass@``, ``:pass@``, a bare ``token@``,
``?password=``, ``?username=``, percent-encoded or not) stays out of errors, tracebacks,
reprs and log lines, against a real redis-server that refuses the password and a port where
none listens."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
import redis_server
from moodlemate.ai import GPT, BudgetStoreError, ValidationError
from moodlemate.ai._redis import shown_url
from moodlemate.ai.testing import LoopbackServer
from support import FAST_RETRY, TEST_KEY

RIGHT = "the-right-Pa55word-0001"
WRONG = "wr0ng-Pa55word-s3cret-2"
ENCODED = "p%40ss%2Fw0rd-s3cret-3"  # "p@ss/w0rd-s3cret-3" once decoded


@pytest.fixture(scope="module")
def guarded() -> Iterator[Any]:
    """A real redis-server that requires a password."""
    server = redis_server.start("--requirepass", RIGHT)
    yield server
    server.stop()


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def url_forms(port: int) -> list[tuple[str, str]]:
    """(URL, the secret it carries) for each place a Redis URL can carry one."""
    host = f"127.0.0.1:{port}"
    return [
        (f"redis://{host}/0?password={WRONG}", WRONG),
        (f"redis://{host}/0?db=0&username=default&password={WRONG}", WRONG),
        (f"redis://:{WRONG}@{host}/0", WRONG),
        (f"redis://default:{WRONG}@{host}/0", WRONG),
        (f"redis://{WRONG}@{host}/0", WRONG),
        (f"redis://{host}/0?password={ENCODED}", "p@ss/w0rd-s3cret-3"),
    ]


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(repr(vars(record)))


@pytest.fixture
def logged() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _shown(url: str, server: LoopbackServer) -> str:
    """Everything a user can see of a failing shared budget and pacer on ``url``."""
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        retry=FAST_RETRY,
        budget=1,
        budget_scope="team",
        redis=url,
        pacing=True,
    )
    with pytest.raises(BudgetStoreError) as caught:
        gpt.complete("gpt-4o-mini", "", "hi")
    error = caught.value
    return "\n".join(
        [
            str(error),
            repr(error),
            "".join(traceback.format_exception(error)),
            repr(gpt.shared_budget),
            repr(gpt.pacer),
            repr(gpt),
        ]
    )


def test_a_redis_refusing_the_password_never_shows_it(
    guarded: Any, server: LoopbackServer, logged: Everything
) -> None:
    for url, secret in url_forms(guarded.port):
        shown = _shown(url, server)
        assert "cannot be used" in shown  # the failure is reported...
        assert "127.0.0.1" in shown  # ...with where it happened
        assert secret not in shown, url
        assert ENCODED not in shown
    assert "redis" in "\n".join(logged.lines).lower()  # the failures were logged...
    for _, secret in url_forms(guarded.port):
        assert secret not in "\n".join(logged.lines)  # ...without the password
    assert ENCODED not in "\n".join(logged.lines)
    assert server.chat_requests == []


def test_an_unreachable_redis_never_shows_the_password(
    server: LoopbackServer, logged: Everything
) -> None:
    for url, secret in url_forms(unused_port()):
        shown = _shown(url, server)
        assert secret not in shown, url
        assert secret not in "\n".join(logged.lines)
    assert server.chat_requests == []


def test_the_right_password_in_the_query_is_used_and_never_shown(
    guarded: Any, server: LoopbackServer
) -> None:
    gpt = GPT(
        "openai",
        endpoint=server.url,
        api_key=TEST_KEY,
        budget=1,
        budget_scope="team",
        redis=f"redis://127.0.0.1:{guarded.port}/0?password={RIGHT}",
    )
    assert gpt.complete("gpt-4o-mini", "", "hi").text == "Echo: hi"
    assert RIGHT not in repr(gpt.shared_budget)
    assert "password=***" in repr(gpt.shared_budget)


def test_a_bad_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(ValidationError) as caught:
        GPT(redis=f"http://user:{WRONG}@127.0.0.1:1/0?token={WRONG}x")
    assert WRONG not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://worker:pw-123456@h:1/0", "redis://worker:***@h:1/0"),
        ("redis://:pw-123456@h/0", "redis://:***@h/0"),
        ("redis://tok-123456@h", "redis://***@h"),
        ("redis://h/0?password=p%40ss&db=1", "redis://h/0?password=***&db=1"),
        (
            "unix:///run/r.sock?username=u&password=x",
            "unix:///run/r.sock?username=***&password=***",
        ),
        ("rediss://h:6380/2", "rediss://h:6380/2"),
    ],
)
def test_shown_urls_mask_every_credential_form(url: str, shown: str) -> None:
    assert shown_url(url) == shown
