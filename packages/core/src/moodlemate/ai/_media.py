"""Bytes a message carries (images, PDFs, audio): what they are and how they are read.

The type of a part is sniffed from its first bytes, never taken from a file name or a
``data:`` URL's label: a renamed file or a mislabelled upload fails here, with a message that
says what it is, instead of as a vague 400 from the server. Local files are read with
``O_NONBLOCK`` after a ``stat``, so a directory, a FIFO or a device is refused at once
instead of hanging the call. The size limits are OpenAI's published ones (see
docs/messages.md), which other OpenAI-compatible servers do not exceed in practice.
"""

from __future__ import annotations

import os
import stat
from binascii import b2a_base64  # a builtin module: no import cost for GPT()
from os import PathLike

from moodlemate.ai._error_base import ValidationError

__all__ = [
    "AUDIO_TYPES",
    "FILE_TYPES",
    "IMAGE_TYPES",
    "MAX_AUDIO_BYTES",
    "MAX_FILE_BYTES_PER_REQUEST",
    "MAX_IMAGES_PER_REQUEST",
    "MAX_IMAGE_BYTES_PER_REQUEST",
    "URL_SCHEMES",
    "data_url",
    "parse_data_url",
    "read_local",
    "sniff",
]

MAX_IMAGE_BYTES_PER_REQUEST = 50 * 1024 * 1024
"""OpenAI: up to 50 MB of image payload in one request."""
MAX_IMAGES_PER_REQUEST = 500
"""OpenAI: up to 500 image inputs in one request."""
MAX_FILE_BYTES_PER_REQUEST = 32 * 1024 * 1024
"""OpenAI: up to 32 MB of file (PDF) content in one request, across its file inputs."""
MAX_AUDIO_BYTES = 25 * 1024 * 1024
"""OpenAI states no limit for chat audio input; 25 MB is its audio upload limit, the most a
clip is sensibly sent inline."""
MAX_READ_BYTES = max(MAX_IMAGE_BYTES_PER_REQUEST, MAX_FILE_BYTES_PER_REQUEST, MAX_AUDIO_BYTES)

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
FILE_TYPES = ("application/pdf",)
AUDIO_TYPES = ("audio/wav", "audio/mpeg")
URL_SCHEMES = ("https", "http", "data")


def sniff(data: bytes) -> str | None:
    """The MIME type ``data`` starts like, among the types a chat request may carry."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"  # an ID3 tag, or an MPEG audio frame sync
    return None


def read_local(path: str | PathLike[str], what: str) -> bytes:
    """The bytes of a regular file at ``path``; a ValidationError for anything else (missing,
    unreadable, a directory, a FIFO, a device, too large), never a hang."""
    shown = os.fspath(path)
    try:
        info = os.stat(shown)
    except OSError as exc:
        raise ValidationError(f"{what}: cannot read {shown!r} ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ValidationError(f"{what}: {shown!r} is {kind}")
    if info.st_size > MAX_READ_BYTES:
        raise ValidationError(
            f"{what}: {shown!r} is {info.st_size:,} bytes, over the "
            f"{MAX_READ_BYTES // (1024 * 1024)} MB any part may carry"
        )
    try:
        # O_NONBLOCK: if the file was swapped for a FIFO since the stat, open does not wait
        # for a writer.
        fd = os.open(shown, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ValidationError(f"{what}: cannot read {shown!r} ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValidationError(f"{what}: {shown!r} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_READ_BYTES + 1)
    except OSError as exc:
        raise ValidationError(f"{what}: cannot read {shown!r} ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_READ_BYTES:
        raise ValidationError(f"{what}: {shown!r} grew past {MAX_READ_BYTES:,} bytes while read")
    return data


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{b2a_base64(data, newline=False).decode('ascii')}"


def parse_data_url(url: str, what: str) -> tuple[str, bytes]:
    """The declared type and the decoded bytes of a base64 ``data:`` URL."""
    head, comma, payload = url.partition(",")
    if not comma or not head.endswith(";base64"):
        raise ValidationError(f"{what}: a data: URL must be base64 (data:TYPE;base64,...)")
    declared = head[len("data:") : -len(";base64")].lower()
    return declared, decode_base64(payload, what)


def decode_base64(payload: str, what: str) -> bytes:
    from base64 import b64decode

    try:
        return b64decode(payload, validate=True)
    except ValueError:  # binascii.Error is one
        raise ValidationError(f"{what}: the data is not valid base64") from None
