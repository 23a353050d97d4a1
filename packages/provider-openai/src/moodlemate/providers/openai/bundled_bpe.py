"""The BPE files of o200k_base and cl100k_base, shipped inside this package.

tiktoken downloads an encoding's file on first use; offline (air-gapped hosts, CI) there is
nothing to download from. These two encodings cover every current OpenAI chat model, so the
package carries them (about 5 MB) and builds the tiktoken Encoding from the shipped file
whenever tiktoken's own cache lacks it: no ``TIKTOKEN_CACHE_DIR``, no network, no copy written
anywhere. Each file is checked against the SHA-256 tiktoken itself expects before use.

The split pattern and special tokens are tiktoken's own (``tiktoken_ext/openai_public.py``);
the test suite checks that an Encoding built here equals tiktoken's.
"""

from __future__ import annotations

import hashlib
from binascii import a2b_base64
from typing import TYPE_CHECKING

from moodlemate.ai.plugin import TokenizerUnavailableError
from moodlemate.providers.openai.package_files import read_package_bytes
from moodlemate.providers.openai.tiktoken_cache import BPE_FILES

if TYPE_CHECKING:
    import tiktoken

__all__ = ["BUNDLED", "bundled_file", "encoding_from", "load_bundled"]

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"
_FIM = ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>")

_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

BUNDLED: dict[str, tuple[str, dict[str, int]]] = {
    "o200k_base": (_O200K_PATTERN, {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018}),
    "cl100k_base": (
        _CL100K_PATTERN,
        {
            _ENDOFTEXT: 100257,
            _FIM[0]: 100258,
            _FIM[1]: 100259,
            _FIM[2]: 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
}
"""Encodings shipped with the package: their split pattern and special tokens."""


def bundled_file(encoding: str) -> bytes | None:
    """The shipped BPE file of ``encoding``, verified; None when the package ships none."""
    if encoding not in BUNDLED:
        return None
    expected = BPE_FILES[encoding][0].sha256
    try:
        data = read_package_bytes("_bpe", f"{encoding}.tiktoken")
    except OSError as exc:
        raise _broken(encoding, f"it cannot be read ({exc})") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise _broken(encoding, f"its SHA-256 is not {expected}")
    return data


def load_bundled(encoding: str) -> tiktoken.Encoding | None:
    """A tiktoken Encoding built from the shipped file; None when the package ships none."""
    data = bundled_file(encoding)
    return None if data is None else encoding_from(encoding, data)


def encoding_from(encoding: str, data: bytes) -> tiktoken.Encoding:
    """The Encoding ``encoding`` (one of :data:`BUNDLED`) from its verified BPE file."""
    import tiktoken

    pattern, special_tokens = BUNDLED[encoding]
    return tiktoken.Encoding(
        encoding,
        pat_str=pattern,
        mergeable_ranks=_ranks(data),
        special_tokens=special_tokens,
    )


def _ranks(data: bytes) -> dict[bytes, int]:
    """tiktoken's file format: one ``base64(token) rank`` pair per line, parsed as tiktoken
    does (``b64decode``, ``int``) but in C loops: a third of tiktoken's own parsing time.
    The file's SHA-256 was checked before: a malformed one cannot get here."""
    fields = data.split()
    return dict(zip(map(a2b_base64, fields[0::2]), map(int, fields[1::2]), strict=True))


def _broken(encoding: str, problem: str) -> TokenizerUnavailableError:
    return TokenizerUnavailableError(
        f"the {encoding} file shipped with moodlemate-ai-openai is damaged: {problem}. "
        "Reinstall moodlemate-ai-openai (from a clone: "
        "pip install --force-reinstall ./packages/provider-openai)."
    )
