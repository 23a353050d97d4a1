"""The message model: what one turn of a chat carries, beyond plain text.

Plain frozen values, vendor-neutral: a message's content is a string or a tuple of parts
(text, image, file, input audio); assistant turns carry tool calls and refusals, and ``tool``
turns answer a tool call by its id. Parts that carry bytes are resolved when built: a local
path is read (safely, see :mod:`moodlemate.ai._media`) and the type sniffed from the bytes,
so a bad part fails where the user wrote it, before anything is sent. Providers map these
values to their wire shapes; :mod:`moodlemate.ai._message_dicts` reads and writes them as
the OpenAI-shaped dicts users copy from documentation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from os import PathLike
from typing import Literal

from moodlemate.ai import _media
from moodlemate.ai._error_base import ValidationError

__all__ = [
    "AudioPart",
    "Detail",
    "FilePart",
    "ImagePart",
    "Message",
    "Part",
    "Role",
    "TextPart",
    "ToolCall",
    "attachment",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]
Detail = Literal["auto", "low", "high"]
_DETAILS = ("auto", "low", "high")


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


def _scheme(source: str) -> str | None:
    head, sep, _ = source.partition(":")
    if not sep or not head or len(head) == 1:  # "C:\\photo.png" is a Windows path
        return None
    if head.isascii() and head[0].isalpha() and all(c.isalnum() or c in "+-." for c in head):
        return head.lower()
    return None


def _load(
    source: object, what: str, accepted: tuple[str, ...]
) -> tuple[bytes, str, str | None, str | None]:
    """``source`` (bytes, a ``data:`` URL or a local path) as (bytes, sniffed type, path,
    http URL); an ``http(s)`` URL is kept as it is (the server fetches it)."""
    path: str | None = None
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | PathLike):
        text = os.fspath(source)
        if not isinstance(text, str):
            raise ValidationError(f"{what}: a path must be text, not bytes")
        scheme = _scheme(text) if isinstance(source, str) else None
        if scheme in ("http", "https"):
            return b"", "", None, text
        if scheme == "data":
            declared, data = _media.parse_data_url(text, what)
            sniffed = _media.sniff(data)
            if sniffed is not None and declared and _alias(declared) != sniffed:
                raise ValidationError(f"{what}: the data: URL says {declared} but holds {sniffed}")
        elif scheme is not None and "://" in text:
            raise ValidationError(
                f"{what}: URL scheme {scheme!r} is not allowed (only https, http and data)"
            )
        else:
            path = text
            data = _media.read_local(text, what)
    else:
        raise ValidationError(f"{what} takes bytes, a path or a URL, not {type(source).__name__}")
    media_type = _media.sniff(data)
    if media_type not in accepted:
        shown = media_type or "of an unknown type"
        raise ValidationError(
            f"{what}: the data is {shown}, not one of {', '.join(accepted)} "
            "(the type is read from the bytes, not the name)"
        )
    return data, media_type, path, None


def _alias(declared: str) -> str:
    return {
        "image/jpg": "image/jpeg",
        "audio/mp3": "audio/mpeg",
        "audio/x-wav": "audio/wav",
        "audio/wave": "audio/wav",
    }.get(declared, declared)


def _size_repr(data: bytes | None) -> str:
    return f"<{len(data):,} bytes>" if data is not None else "None"


@dataclass(frozen=True, slots=True, init=False, repr=False)
class ImagePart:
    """An image: ``ImagePart("photo.png")``, ``ImagePart(raw_bytes)``, an ``https://`` URL
    (fetched by the server) or a ``data:`` URL; ``detail`` is ``auto``, ``low`` or ``high``.
    PNG, JPEG, GIF and WEBP, recognised from the bytes."""

    url: str | None
    """The http(s) URL, when the image is one the server fetches."""
    data: bytes | None
    """The image's bytes, when sent inline."""
    media_type: str | None
    detail: Detail
    path: str | None
    """The local file the bytes were read from (kept for saving by reference)."""

    def __init__(self, source: bytes | str | PathLike[str], detail: Detail = "auto") -> None:
        if detail not in _DETAILS:
            raise ValidationError(f"image detail must be auto, low or high, not {detail!r}")
        data, media_type, path, url = _load(source, "image", _media.IMAGE_TYPES)
        set_ = object.__setattr__
        set_(self, "url", url)
        set_(self, "data", None if url else data)
        set_(self, "media_type", None if url else media_type)
        set_(self, "detail", detail)
        set_(self, "path", path)

    def __repr__(self) -> str:
        where = self.url or self.path or self.media_type
        return f"ImagePart({where!r}, detail={self.detail!r}, data={_size_repr(self.data)})"


@dataclass(frozen=True, slots=True, init=False, repr=False)
class FilePart:
    """A document: ``FilePart("report.pdf")``, ``FilePart(raw_bytes, filename="a.pdf")`` or
    ``FilePart(file_id="file-...")`` for one uploaded to the vendor. PDF, as chat completions
    accept it."""

    data: bytes | None
    file_id: str | None
    filename: str | None
    media_type: str | None
    path: str | None

    def __init__(
        self,
        source: bytes | str | PathLike[str] | None = None,
        *,
        file_id: str | None = None,
        filename: str | None = None,
    ) -> None:
        if (source is None) == (file_id is None):
            raise ValidationError("a file part takes either data (bytes or a path) or file_id")
        if filename is not None and (not isinstance(filename, str) or not filename):
            raise ValidationError("a file part's filename must be a non-empty string")
        data = media_type = path = None
        if file_id is not None:
            if not isinstance(file_id, str) or not file_id.strip():
                raise ValidationError("file_id must be a non-empty string")
        else:
            data, media_type, path, url = _load(source, "file", _media.FILE_TYPES)
            if url:
                raise ValidationError("file: a URL is not accepted; pass the bytes or a path")
            if filename is None:
                filename = os.path.basename(path) if path else "document.pdf"
        set_ = object.__setattr__
        set_(self, "data", data)
        set_(self, "file_id", file_id)
        set_(self, "filename", filename)
        set_(self, "media_type", media_type)
        set_(self, "path", path)

    def __repr__(self) -> str:
        where = self.file_id or self.path or self.filename
        return f"FilePart({where!r}, data={_size_repr(self.data)})"


@dataclass(frozen=True, slots=True, init=False, repr=False)
class AudioPart:
    """Input audio: ``AudioPart("question.wav")`` or raw WAV/MP3 bytes."""

    data: bytes
    format: Literal["wav", "mp3"]
    path: str | None

    def __init__(self, source: bytes | str | PathLike[str]) -> None:
        data, media_type, path, url = _load(source, "audio", _media.AUDIO_TYPES)
        if url:
            raise ValidationError("audio: a URL is not accepted; pass the bytes or a path")
        if len(data) > _media.MAX_AUDIO_BYTES:
            raise ValidationError(
                f"audio: {len(data):,} bytes, over the {_media.MAX_AUDIO_BYTES:,} an audio "
                "part may carry"
            )
        set_ = object.__setattr__
        set_(self, "data", data)
        set_(self, "format", "wav" if media_type == "audio/wav" else "mp3")
        set_(self, "path", path)

    def __repr__(self) -> str:
        return f"AudioPart({(self.path or self.format)!r}, data={_size_repr(self.data)})"


Part = TextPart | ImagePart | FilePart | AudioPart


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call an assistant turn asked for; ``arguments`` is the JSON text the model
    wrote (untrusted: it may not even parse)."""

    id: str
    name: str
    arguments: str = "{}"


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. ``Message("user", "Hi")`` is the plain form; ``content`` may also be a tuple
    of parts. Assistant turns may carry ``tool_calls`` and ``refusal``; a ``tool`` turn
    answers the tool call ``tool_call_id`` names."""

    role: Role
    content: str | tuple[Part, ...]
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    refusal: str | None = None

    @property
    def text(self) -> str:
        """The content's text: the string itself, or its text parts joined."""
        content = self.content
        if isinstance(content, str):
            return content
        return "".join(part.text for part in content if isinstance(part, TextPart))


def attachment(source: Part | bytes | str | PathLike[str]) -> Part:
    """A part for ``source``, of the kind its bytes are: an image, a PDF or audio (an
    ``http(s)`` URL is taken as an image). What ``chat -a`` and ``attachments=`` take."""
    if isinstance(source, TextPart | ImagePart | FilePart | AudioPart):
        return source
    path = None
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | PathLike):
        text = os.fspath(source)
        scheme = _scheme(text) if isinstance(source, str) else None
        if scheme in ("http", "https"):
            return ImagePart(text)
        if scheme == "data":
            data = _media.parse_data_url(text, "attachment")[1]
        elif scheme is not None and "://" in text:
            raise ValidationError(
                f"attachment: URL scheme {scheme!r} is not allowed (only https, http and data)"
            )
        else:
            path = text
            data = _media.read_local(text, "attachment")
    else:
        raise ValidationError(
            f"an attachment is a part, bytes, a path or a URL, not {type(source).__name__}"
        )
    kind = _media.sniff(data)
    part: Part
    if kind in _media.IMAGE_TYPES:
        part = ImagePart(data)
    elif kind in _media.FILE_TYPES:
        part = FilePart(data, filename=os.path.basename(path) if path else None)
    elif kind in _media.AUDIO_TYPES:
        part = AudioPart(data)
    else:
        shown = repr(path) if path else "the data"
        raise ValidationError(
            f"attachment: {shown} is not an image (PNG, JPEG, GIF, WEBP), a PDF or audio "
            "(WAV, MP3); the type is read from the bytes, not the name"
        )
    if path is not None:
        object.__setattr__(part, "path", path)  # kept for saving by reference
    return part
