"""The API key never shows: not in any log record at any level from any logger, not in our
errors (str, repr, traceback with its chained SDK exception), not in the GPT repr."""

from __future__ import annotations

import logging
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from moodlemate.ai import GPT, AuthenticationError, MoodlemateError, NotFoundError, RateLimitError
from moodlemate.ai._config import resolve_settings
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from support import FAST_RETRY, TEST_KEY

ECHO = f"Incorrect API key provided: {TEST_KEY}. You can find your API key elsewhere."
LIBRARY_LOGGERS = ("moodlemate.ai", "openai", "httpx", "httpx2", "httpcore", "httpcore2", "stamina")


class Everything(logging.Handler):
    """Keeps every record and everything a handler could render from it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.rendered: list[str] = []
        self.formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        # the formatted line with any traceback, plus every attribute incl. `extra` fields
        self.rendered.append(self.format(record))
        self.rendered.append(repr(vars(record)))


# Transport-level bounds: each test runs on both HTTP transports (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("each_transport")


@pytest.fixture
def captured() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    old_root_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_root_level)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_key_appears_in_no_log_record_and_no_error(
    captured: Everything, each_transport: str
) -> None:
    errors: list[BaseException] = []
    with LoopbackServer(api_key=TEST_KEY) as server:
        gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
        # retried failures whose bodies quote the key, then success
        server.enqueue(
            Fault.status(429, retry_after=0, message=ECHO),
            Fault.reset(),
            Fault.status(503, message=ECHO),
            Reply(text="ok"),
        )
        assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "ok"
        # a 401 that echoes the key in full
        server.enqueue(Fault.status(401, message=ECHO))
        with pytest.raises(AuthenticationError) as auth:
            gpt.chat_completion("gpt-4o-mini", "", "hi")
        errors.append(auth.value)
        # rate limited with a wait too long to sleep through
        server.enqueue(Fault.status(429, retry_after=3600, message=ECHO))
        with pytest.raises(RateLimitError) as limited:
            gpt.chat_completion("gpt-4o-mini", "", "hi")
        errors.append(limited.value)
        # the key pasted where the model name goes; the server quotes it back
        server.enqueue(Fault.status(404))
        with pytest.raises(NotFoundError) as unknown:
            gpt.chat_completion(TEST_KEY, "", "hi")
        errors.append(unknown.value)
        # what an application does with an error it cannot handle
        for error in errors:
            logging.getLogger("app").error("call failed", exc_info=error)
        shown = repr(gpt)

    text = "\n".join(captured.rendered)
    names = {r.name.split(".")[0] for r in captured.records}
    # the capture really saw the libraries' DEBUG output and stamina's retry records
    assert {"moodlemate", "stamina", "app"} <= names
    if each_transport == "openai-sdk":
        assert "openai" in names
    if each_transport == "lean":  # the HTTP stack is the transport's own
        assert any(r.name == "moodlemate.ai.transport" for r in captured.records)
    else:
        assert names & {"httpcore", "httpcore2"}  # the HTTP stack of openai 1-2 or of 3
    assert any(r.name == "stamina" for r in captured.records)
    assert TEST_KEY not in text
    for error in errors:
        assert isinstance(error, MoodlemateError)
        assert TEST_KEY not in str(error)
        assert TEST_KEY not in repr(error)
        assert TEST_KEY not in "".join(traceback.format_exception(error))
        if each_transport == "openai-sdk":  # the SDK's own exception is chained on
            assert error.__cause__ is not None
        assert TEST_KEY not in str(error.__cause__)
    assert TEST_KEY not in shown
    assert "sk-...5c3e" in shown  # masked, still recognisable


def test_stamina_retry_records_carry_no_arguments(
    server: LoopbackServer, captured: Everything
) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    server.enqueue(Fault.status(500), Fault.status(502), Reply(text="ok"))
    gpt.chat_completion("gpt-4o-mini", "", "hi")
    retries = [r for r in captured.records if r.name == "stamina"]
    assert len(retries) == 2
    for record in retries:
        fields = vars(record)
        assert fields["stamina.args"] == ()
        assert fields["stamina.kwargs"] == {}
        assert TEST_KEY not in repr(fields)


def test_redacting_filter_masks_keys_in_an_applications_own_handler() -> None:
    from moodlemate.ai._secrets import RedactingFilter

    GPT(api_key=TEST_KEY)  # a key becomes known to the library when it is set
    handler = Everything()
    handler.addFilter(RedactingFilter())
    app = logging.getLogger("app.billing")
    app.addHandler(handler)
    try:
        app.warning("calling with key %s", TEST_KEY)
    finally:
        app.removeHandler(handler)
    assert handler.records[0].getMessage() == "calling with key sk-...5c3e"


def test_resolved_settings_do_not_show_credential_headers_in_their_repr(tmp_path: Path) -> None:
    secret = "gw-secret-0123456789abcdef"
    (tmp_path / "moodlemate.toml").write_text(
        f'endpoint = "http://127.0.0.1:9/v1"\n[headers]\nX-Api-Key = "{secret}"\n'
    )
    from_file = resolve_settings()
    from_argument = resolve_settings(headers={"Authorization": f"Bearer {secret}"})
    assert from_file.headers == {"X-Api-Key": secret}
    assert secret not in repr(from_file)
    assert secret not in repr(from_argument)


def test_a_bearer_token_in_configured_headers_is_redacted_when_a_server_echoes_it(
    server: LoopbackServer,
) -> None:
    token = "gw-token-0123456789abcdef"
    gpt = GPT(
        "openai",
        endpoint=server.url,
        retry=FAST_RETRY,
        headers={"Authorization": f"Bearer {token}"},
    )
    server.enqueue(Fault.status(401, message=f"Incorrect API key provided: {token}."))
    with pytest.raises(AuthenticationError) as caught:
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    shown = "".join(traceback.format_exception(caught.value))
    assert token not in shown


def test_a_key_per_user_keeps_creating_instances_cheap() -> None:
    """A service making calls with each user's key registers thousands of secrets; the
    thousandth must cost what the first did. Run apart: the keys would slow later tests.

    Measured as the fastest of five rounds, in the process's own CPU time: a loaded machine
    takes the CPU away for whole rounds (wall-clock ratios of two moments then swing by 3x),
    while a cost that grows with the secrets held shows in every round (40x more of them)."""
    code = """
import time
from moodlemate.ai import GPT
from moodlemate.ai._secrets import register_secret

def users(first, count):
    started = time.process_time()
    for n in range(first, first + count):
        GPT("openai", endpoint="http://127.0.0.1:9/v1", api_key=f"sk-user-{n:08d}-0123456789")
    return time.process_time() - started

def fastest(first):
    return min(users(first + 200 * round, 200) for round in range(5))

users(0, 10)
early = fastest(10)
for n in range(40_000):
    register_secret(f"sk-other-{n:08d}-0123456789")
print(fastest(30_000) / early)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    ratio = float(out.stdout)
    assert ratio < 3, f"41,000 secrets made creating an instance {ratio:.1f}x dearer"


# -- echoes the HTTP stack would print, and keys that are short, encoded or in headers -------


def test_a_key_echoed_in_a_response_header_leaves_no_trace_at_debug(
    server: LoopbackServer, captured: Everything
) -> None:
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    server.enqueue(Reply(text="ok", headers={"x-echo-authorization": f"Bearer {TEST_KEY}"}))
    assert gpt.chat_completion("gpt-4o-mini", "", "hi") == "ok"
    text = "\n".join(captured.rendered)
    # the HTTP stack did log the response headers (the echo went through its loggers)
    assert "x-echo-authorization" in text
    assert TEST_KEY not in text


def test_cli_at_vv_prints_no_key_a_server_echoed(server: LoopbackServer) -> None:
    from test_cli import run_cli

    server.enqueue(Reply(text="ok", headers={"x-echo-authorization": f"Bearer {TEST_KEY}"}))
    done = run_cli("-vv", "chat", "--endpoint", server.url, "--key", TEST_KEY, "hi")
    assert done.returncode == 0, done.stderr
    assert "x-echo-authorization" in done.stderr  # the DEBUG lines were printed
    assert TEST_KEY not in done.stderr
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {TEST_KEY}"


def test_a_short_key_is_redacted_as_a_whole_token(server: LoopbackServer) -> None:
    short = "kq7Zp2"
    gpt = GPT("openai", endpoint=server.url, api_key=short, retry=FAST_RETRY)
    server.enqueue(Fault.status(401, message=f"Incorrect API key provided: {short}."))
    with pytest.raises(AuthenticationError) as caught:
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    assert short not in "".join(traceback.format_exception(caught.value))
    assert server.chat_requests[0].headers["authorization"] == f"Bearer {short}"


def test_a_percent_encoded_echo_of_the_key_is_redacted(server: LoopbackServer) -> None:
    encoded = TEST_KEY.replace("-", "%2D")
    gpt = GPT("openai", endpoint=server.url, api_key=TEST_KEY, retry=FAST_RETRY)
    server.enqueue(Fault.status(401, message=f"Incorrect API key provided: {encoded}"))
    with pytest.raises(AuthenticationError) as caught:
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    shown = "".join(traceback.format_exception(caught.value))
    assert encoded not in shown
    assert encoded.lower() not in shown.lower()
    assert TEST_KEY not in shown


CREDENTIAL_HEADERS = {
    "Cookie": "session-cookie-value-01",
    "X-Auth": "x-auth-value-0002",
    "Api-Pass": "api-pass-value-03",
    "X-Access": "x-access-value-04",
    "X-Signature": "x-signature-value-05",
    "X-Session": "x-session-value-06",
}


def test_credential_header_values_are_redacted_from_errors(server: LoopbackServer) -> None:
    gpt = GPT("openai", endpoint=server.url, retry=FAST_RETRY, headers=CREDENTIAL_HEADERS)
    echo = " ".join(CREDENTIAL_HEADERS.values())
    server.enqueue(Fault.status(400, message=f"bad request with {echo}"))
    with pytest.raises(MoodlemateError) as caught:
        gpt.chat_completion("gpt-4o-mini", "", "hi")
    shown = "".join(traceback.format_exception(caught.value))
    assert "bad request with" in shown
    for value in CREDENTIAL_HEADERS.values():
        assert value not in shown
    assert server.chat_requests[0].headers["x-signature"] == "x-signature-value-05"


# -- loggers created after the guards are in place ---------------------------------------------

_LATER_LOGGERS = """
import logging, sys
from moodlemate.ai import GPT
from moodlemate.ai.testing import Reply

KEY, URL = sys.argv[1], sys.argv[2]
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(message)s")
gpt = GPT("openai", endpoint=URL, api_key=KEY)
print(gpt.chat_completion("gpt-4o-mini", "", "hi"), file=sys.stderr)
# Loggers the HTTP stack (today's names, the older ones, and a rename yet to come) creates
# after GPT() and its first call: each logs the key as an argument and inside its message.
for name in ("httpcore.http11", "httpx._client", "httpcore2.http11", "httpx2._client",
             "httpcore2.connection_pool", "httpcore3.http11", "some_sdk.transport"):
    later = logging.getLogger(name + ".later")
    later.debug("receive_response_headers.complete return_value=%r", [(b"x-echo", KEY.encode())])
    later.debug(f"Authorization: Bearer {KEY}")
    later.info("sent %s", {"authorization": f"Bearer {KEY}"})
print("done", file=sys.stderr)
"""


def test_loggers_created_after_gpt_exists_never_show_a_key(server: LoopbackServer) -> None:
    """Both HTTP stacks (httpcore/httpx and httpcore2/httpx2) and a future rename, DEBUG on,
    a server echoing the key in a response header; a fresh process, so every logger of the
    stack is created as it is in an application (after the library's filters)."""
    server.enqueue(Reply(text="ok", headers={"x-echo-authorization": f"Bearer {TEST_KEY}"}))
    done = subprocess.run(
        [sys.executable, "-c", _LATER_LOGGERS, TEST_KEY, server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "x-echo-authorization" in done.stderr  # the stack's DEBUG lines were printed
    assert "httpcore3.http11.later sent" in done.stderr
    assert done.stderr.rstrip().endswith("done")
    assert TEST_KEY not in done.stderr
    assert TEST_KEY.encode().hex() not in done.stderr
    assert "sk-...5c3e" in done.stderr  # masked, not dropped


def test_a_record_reaching_logging_last_resort_is_redacted() -> None:
    """No handler configured at all: Python prints warnings through ``logging.lastResort``."""
    code = (
        "import logging, sys\nfrom moodlemate.ai import GPT\n"
        "GPT(api_key=sys.argv[1])\n"
        "logging.getLogger('httpx2.later').warning('refused key %s', sys.argv[1])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, TEST_KEY], capture_output=True, text=True, timeout=60
    )
    assert "refused key sk-...5c3e" in done.stderr
    assert TEST_KEY not in done.stderr
