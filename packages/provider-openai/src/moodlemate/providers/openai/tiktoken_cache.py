"""tiktoken's BPE files: find them in the cache, fetch them with a deadline, seed them offline.

tiktoken downloads an encoding's BPE file on first use (with ``requests`` and no timeout) into
``TIKTOKEN_CACHE_DIR`` under the SHA-1 of the file's URL, and checks its SHA-256. Offline, that
download hangs or fails with a bare requests exception. So before tiktoken loads an encoding,
:func:`ensure_available` checks the cache itself, downloads what is missing with a timeout,
and otherwise raises :class:`MissingBpeFileError` naming the file, where it must go and how.

Seed a cache on a machine without internet from a file fetched elsewhere::

    python -m moodlemate.providers.openai.tiktoken_cache o200k_base.tiktoken

or ``seed_tiktoken_cache(path)`` from Python; the file is verified against tiktoken's SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from moodlemate.ai.plugin import TokenizerUnavailableError, ValidationError

__all__ = [
    "BPE_FILES",
    "DOWNLOAD_TIMEOUT",
    "BpeFile",
    "MissingBpeFileError",
    "cache_dir",
    "cached_file",
    "ensure_available",
    "is_cached",
    "main",
    "seed_tiktoken_cache",
]

DOWNLOAD_TIMEOUT = 10.0
"""Seconds any one network operation of a BPE download may take before giving up."""


@dataclass(frozen=True, slots=True)
class BpeFile:
    url: str
    sha256: str
    """The content hash tiktoken verifies (from tiktoken_ext/openai_public.py)."""

    @property
    def cache_name(self) -> str:
        """The file's name in tiktoken's cache: the SHA-1 of its URL."""
        return hashlib.sha1(self.url.encode(), usedforsecurity=False).hexdigest()


_BLOB = "https://openaipublic.blob.core.windows.net/"
_R50K = BpeFile(
    _BLOB + "encodings/r50k_base.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
)
_P50K = BpeFile(
    _BLOB + "encodings/p50k_base.tiktoken",
    "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
)
_CL100K = BpeFile(
    _BLOB + "encodings/cl100k_base.tiktoken",
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
)
_O200K = BpeFile(
    _BLOB + "encodings/o200k_base.tiktoken",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
)

BPE_FILES: dict[str, tuple[BpeFile, ...]] = {
    "gpt2": (
        BpeFile(
            _BLOB + "gpt-2/encodings/main/vocab.bpe",
            "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
        ),
        BpeFile(
            _BLOB + "gpt-2/encodings/main/encoder.json",
            "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        ),
    ),
    "r50k_base": (_R50K,),
    "p50k_base": (_P50K,),
    "p50k_edit": (_P50K,),
    "cl100k_base": (_CL100K,),
    "o200k_base": (_O200K,),
    "o200k_harmony": (_O200K,),
}
"""The files each of tiktoken's built-in encodings loads, as tiktoken_ext/openai_public.py
names them (tiktoken 0.7 to 0.12)."""


class MissingBpeFileError(TokenizerUnavailableError):
    """An encoding's BPE file is neither in the cache nor downloadable."""

    def __init__(
        self, message: str, *, encoding: str, url: str, cache_path: Path, sha256: str
    ) -> None:
        super().__init__(message)
        self.encoding = encoding
        self.url = url
        self.cache_path = cache_path
        self.sha256 = sha256


def cache_dir() -> Path | None:
    """The folder tiktoken caches into, resolved as tiktoken does; None when caching is off
    (``TIKTOKEN_CACHE_DIR=""``)."""
    for variable in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if variable in os.environ:
            value = os.environ[variable]
            return Path(value) if value else None
    import tempfile

    return Path(tempfile.gettempdir()) / "data-gym-cache"


def is_cached(encoding: str) -> bool:
    """Whether tiktoken's cache holds a verified copy of each of ``encoding``'s files."""
    files = BPE_FILES.get(encoding)
    directory = cache_dir()
    if files is None or directory is None:
        return False
    return all(_cached_problem(directory / bpe.cache_name, bpe) is None for bpe in files)


def cached_file(encoding: str) -> bytes | None:
    """The verified bytes of a one-file ``encoding`` in tiktoken's cache; None when there
    is no such copy (read once, where asking :func:`is_cached` and loading would read twice)."""
    files = BPE_FILES.get(encoding)
    directory = cache_dir()
    if files is None or len(files) != 1 or directory is None:
        return None
    try:
        data = (directory / files[0].cache_name).read_bytes()
    except OSError:
        return None
    return data if _sha256(data) == files[0].sha256 else None


def ensure_available(encoding: str) -> None:
    """Make sure tiktoken will find ``encoding``'s files in its cache without a network wait.

    Encodings from tiktoken plugins (not in :data:`BPE_FILES`), and a disabled cache, are left
    to tiktoken itself.
    """
    files = BPE_FILES.get(encoding)
    directory = cache_dir()
    if files is None or directory is None:
        return
    for bpe in files:
        path = directory / bpe.cache_name
        problem = _cached_problem(path, bpe)
        if problem is None:
            continue
        import http.client  # only for a download: it costs 15 ms to import

        try:
            data = _download(bpe.url)
        except (OSError, http.client.HTTPException) as exc:
            raise _missing(encoding, bpe, path, problem, f"downloading it failed ({exc})") from None
        if _sha256(data) != bpe.sha256:
            raise _missing(
                encoding, bpe, path, problem, "the downloaded file does not match its SHA-256"
            )
        try:
            _write(path, data)
        except OSError as exc:
            raise _missing(
                encoding, bpe, path, problem, f"it was downloaded but cannot be cached ({exc})"
            ) from None


def seed_tiktoken_cache(
    path: str | os.PathLike[str],
    encoding: str | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Copy a BPE file fetched elsewhere into tiktoken's cache, under the name tiktoken looks
    for; returns where it went.

    The file must have the SHA-256 tiktoken expects for ``encoding`` (any known encoding when
    None, identified by that hash); anything else is refused with ValidationError, so a
    truncated or wrong file never poisons the cache. ``cache_dir`` defaults to the folder
    tiktoken uses (``TIKTOKEN_CACHE_DIR``).
    """
    source = Path(path)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {source}: {exc.strerror or exc}") from None
    if encoding is not None and encoding not in BPE_FILES:
        known = ", ".join(sorted(BPE_FILES))
        raise ValidationError(f"unknown tiktoken encoding {encoding!r}; known: {known}")
    candidates = BPE_FILES[encoding] if encoding is not None else _all_files()
    digest = _sha256(data)
    match = next((bpe for bpe in candidates if bpe.sha256 == digest), None)
    if match is None:
        expected = " or ".join(sorted({bpe.sha256 for bpe in candidates}))
        what = f"tiktoken's {encoding} file" if encoding else "a tiktoken BPE file"
        raise ValidationError(
            f"{source} is not {what}: its SHA-256 is {digest}, expected {expected} "
            "(a truncated or corrupted download?)"
        )
    target_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = target_dir / match.cache_name
    try:
        _write(target, data)
    except OSError as exc:
        raise ValidationError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m moodlemate.providers.openai.tiktoken_cache FILE...``: seed the cache."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m moodlemate.providers.openai.tiktoken_cache",
        description="Put tiktoken BPE files (e.g. o200k_base.tiktoken) into tiktoken's cache, "
        "verified against tiktoken's SHA-256, for offline token counting.",
    )
    parser.add_argument("files", nargs="+", type=Path, help="BPE files fetched elsewhere")
    parser.add_argument("--encoding", help="expected encoding (default: identify by hash)")
    parser.add_argument(
        "--cache-dir", type=Path, help="target folder (default: TIKTOKEN_CACHE_DIR)"
    )
    args = parser.parse_args(argv)
    for file in args.files:
        try:
            target = seed_tiktoken_cache(file, args.encoding, cache_dir=args.cache_dir)
        except ValidationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{file} -> {target}")
    return 0


def _all_files() -> tuple[BpeFile, ...]:
    return tuple(dict.fromkeys(bpe for files in BPE_FILES.values() for bpe in files))


def _default_cache_dir() -> Path:
    directory = cache_dir()
    if directory is None:
        raise ValidationError("TIKTOKEN_CACHE_DIR is empty (caching disabled): pass cache_dir")
    return directory


def _cached_problem(path: Path, bpe: BpeFile) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "it is not in the cache"
    except OSError as exc:
        return f"the cached copy cannot be read ({exc.strerror or exc})"
    if _sha256(data) != bpe.sha256:
        return "the cached copy is corrupt (SHA-256 mismatch)"
    return None


def _download(url: str) -> bytes:
    import urllib.request

    # The URL comes from BPE_FILES (https only); the timeout bounds each network operation.
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:  # noqa: S310
        data: bytes = response.read()
    return data


def _write(path: Path, data: bytes) -> None:
    """Write atomically, so a concurrent reader never sees half a file."""
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _missing(
    encoding: str, bpe: BpeFile, path: Path, problem: str, why: str
) -> MissingBpeFileError:
    where = (
        f"TIKTOKEN_CACHE_DIR={path.parent}"
        if os.environ.get("TIKTOKEN_CACHE_DIR")
        else f"tiktoken's cache {path.parent} (set TIKTOKEN_CACHE_DIR to use another folder)"
    )
    return MissingBpeFileError(
        f"token counting needs tiktoken's {encoding} file, {bpe.url}: {problem} "
        f"(file {bpe.cache_name} in {where}), and {why}. To count offline, download that URL "
        "on a machine with internet access, then run "
        "`python -m moodlemate.providers.openai.tiktoken_cache <downloaded file>` here "
        f"(or copy it to {path}); its SHA-256 must be {bpe.sha256}.",
        encoding=encoding,
        url=bpe.url,
        cache_path=path,
        sha256=bpe.sha256,
    )


if __name__ == "__main__":
    raise SystemExit(main())
