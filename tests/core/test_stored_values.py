"""What the library stores and prints of a server's reply: a key the server echoes into its
``model`` never reaches a span, a metric, the spend log, ``logs``, ``spend`` or a batch file;
a reported cost of ``1e-999999999`` is money at a bounded precision; the spend log is
private. Real HTTP (the loopback server), the real OpenTelemetry SDK, real SQLite files and
the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from moodlemate.ai import GPT
from moodlemate.ai._plugins import PluginRegistry
from moodlemate.ai._spend_log import SpendLog
from moodlemate.ai.otel import instrument, uninstrument
from moodlemate.ai.testing import Fault, LoopbackServer, Reply
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import FAST_RETRY, TEST_KEY

COMMAND = [sys.executable, "-m", "moodlemate.ai.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
        cwd=cwd,
    )


def _echoing(server: LoopbackServer) -> None:
    """Every reply names the caller's key as its model."""
    server.responder = lambda body: Reply(text="ok", model=TEST_KEY)


# -- 11: a key echoed in the reply's model ----------------------------------------------


def test_an_echoed_key_reaches_no_span_and_no_metric(server: LoopbackServer) -> None:
    _echoing(server)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    plugins = PluginRegistry()
    instrument(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        plugins=plugins,
    )
    try:
        gpt = GPT(
            "openai", endpoint=server.url, api_key=TEST_KEY, plugins=plugins, retry=FAST_RETRY
        )
        assert gpt.complete("gpt-4o-mini", "", "hi").text == "ok"
        with gpt.stream("gpt-4o-mini", "", "hi") as stream:
            assert "".join(stream) == "ok"
    finally:
        uninstrument(plugins)
    finished = spans.get_finished_spans()
    assert len(finished) == 2
    models = {span.attributes.get("gen_ai.response.model") for span in finished if span.attributes}
    assert models == {"sk-...5c3e"}  # masked, and still there
    metrics = reader.get_metrics_data()
    everything = "\n".join([s.to_json() for s in finished] + [metrics.to_json() if metrics else ""])
    assert "gen_ai.response.model" in everything
    assert TEST_KEY not in everything


def test_an_echoed_key_reaches_no_spend_log_row(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    _echoing(server)
    gpt.log = SpendLog(tmp_path / "spend.db", text=True)
    gpt.complete("gpt-4o-mini", "", f"my key is {TEST_KEY}")
    gpt.log.close()
    raw = (tmp_path / "spend.db").read_bytes()
    assert TEST_KEY.encode() not in raw
    with sqlite3.connect(tmp_path / "spend.db") as conn:
        served, prompt = conn.execute("SELECT served_model, prompt FROM calls").fetchone()
    assert served == "sk-...5c3e"
    assert "sk-...5c3e" in prompt


def test_an_echoed_key_reaches_no_cli_output_and_no_batch_file(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _echoing(server)
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    monkeypatch.setenv("MOODLEMATE_API_KEY", TEST_KEY)
    chat = run_cli("chat", "--json", "--model", "gpt-4o-mini", "hi")
    assert chat.returncode == 0, chat.stderr
    (tmp_path / "in.jsonl").write_text('{"id": 1, "user": "hi"}\n')
    batch = run_cli("batch", "in.jsonl", "-o", "out.jsonl", "-m", "gpt-4o-mini", cwd=tmp_path)
    assert batch.returncode == 0, batch.stderr
    outputs = [
        chat,
        batch,
        run_cli("logs"),
        run_cli("logs", "--json"),
        run_cli("spend", "--by", "model"),
        run_cli("spend", "--by", "model", "--json"),
    ]
    for out in outputs:
        assert out.returncode == 0, out.stderr
        assert TEST_KEY not in out.stdout + out.stderr
    assert "sk-...5c3e" in outputs[2].stdout  # the served model, masked
    written = (tmp_path / "out.jsonl").read_text()
    assert json.loads(written.splitlines()[0])["model"] == "sk-...5c3e"
    assert TEST_KEY not in written
    log = Path(os.environ["XDG_DATA_HOME"]) / "moodlemate-ai" / "logs.db"
    assert TEST_KEY.encode() not in log.read_bytes()


# -- 14: money at a bounded precision ---------------------------------------------------


def _reply_with_cost(cost: str) -> Fault:
    """A 200 whose ``usage.cost`` is written as raw JSON text."""
    body = (
        '{"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini", '
        '"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, '
        '"finish_reason": "stop"}], '
        f'"usage": {{"prompt_tokens": 10, "completion_tokens": 1, "cost": {cost}}}}}'
    )
    return Fault(kind="status", http_status=200, body=body.encode())


@pytest.mark.parametrize(
    ("reported", "recorded"),
    [
        ('"1e-999999999"', Decimal(0)),
        ("1e-999999999", Decimal(0)),
        ('"0.000123456789012345"', Decimal("0.0001234568")),
        ('"0.00075"', Decimal("0.00075")),
    ],
)
def test_a_reported_cost_is_money_rounded_to_a_ten_billionth_of_a_dollar(
    gpt: GPT, server: LoopbackServer, reported: str, recorded: Decimal
) -> None:
    server.enqueue(_reply_with_cost(reported))
    result = gpt.complete("gpt-4o-mini", "", "hi")
    assert result.cost == recorded
    assert result.cost is not None
    assert len(format(result.cost, "f")) <= 20


def test_spend_prints_a_tiny_or_absurd_cost_in_a_few_characters(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    monkeypatch.setenv("MOODLEMATE_API_KEY", TEST_KEY)
    server.enqueue(_reply_with_cost('"1e-999999999"'))
    assert run_cli("chat", "--model", "gpt-4o-mini", "hi").returncode == 0
    log = Path(os.environ["XDG_DATA_HOME"]) / "moodlemate-ai" / "logs.db"
    # A row an earlier version wrote with the server's figure as it came.
    with sqlite3.connect(log) as conn:
        conn.execute(
            "INSERT INTO calls (time, provider, requested_model, outcome, cost) "
            "VALUES ('2026-01-01T00:00:00.000000Z', 'openai', 'gpt-4o-mini', 'ok', ?)",
            ("1e-999999999",),
        )
    for args in (("spend",), ("spend", "--json"), ("logs",), ("logs", "--json")):
        out = run_cli(*args)
        assert out.returncode == 0, out.stderr
        assert len(out.stdout) < 2000, args  # was 3 MB for one row
    total = json.loads(run_cli("spend", "--json").stdout)["total"]
    assert Decimal(total["cost"]) == 0


# -- 9: the spend log is private --------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_clis_default_spend_log_is_private(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOODLEMATE_ENDPOINT", server.url)
    monkeypatch.setenv("MOODLEMATE_API_KEY", TEST_KEY)
    out = run_cli("chat", "--model", "gpt-4o-mini", "a private question")
    assert out.returncode == 0, out.stderr
    log = Path(os.environ["XDG_DATA_HOME"]) / "moodlemate-ai" / "logs.db"
    assert _mode(log.parent) == 0o700
    assert _mode(log) == 0o600


def test_a_new_spend_log_and_its_wal_and_shm_files_are_private(
    gpt: GPT, server: LoopbackServer, tmp_path: Path
) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / "dir" / "spend.db"
        gpt.log = SpendLog(path, text=True)
        gpt.complete("gpt-4o-mini", "", "hi")  # the connection stays open: -wal and -shm exist
        for name in ("spend.db", "spend.db-wal", "spend.db-shm"):
            assert _mode(path.parent / name) == 0o600, name
        assert _mode(path.parent) == 0o700
        gpt.log.close()
    finally:
        os.umask(old)


def test_an_existing_spend_log_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch()
    os.chmod(path, 0o640)  # a log shared with a group on purpose
    SpendLog(path).recent()
    assert _mode(path) == 0o640
