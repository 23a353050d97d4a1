"""Image sizes read from headers agree with Pillow's, for every format a chat API accepts."""

from __future__ import annotations

import io

import pytest
from moodlemate.ai.plugin import image_dimensions

PIL = pytest.importorskip("PIL.Image")

FORMATS = [
    ("PNG", {}),
    ("JPEG", {}),
    ("JPEG", {"progressive": True}),
    ("GIF", {}),
    ("WEBP", {"lossless": True}),
    ("WEBP", {"lossless": False}),
]
SIZES = [(1, 1), (64, 32), (513, 2049), (1800, 2400), (4000, 1474), (16383, 3)]


def _image(fmt: str, size: tuple[int, int], **options: object) -> bytes:
    buffer = io.BytesIO()
    mode = "P" if fmt == "GIF" else "RGB"
    PIL.new(mode, size, color=0).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "options"), FORMATS)
@pytest.mark.parametrize("size", SIZES)
def test_dimensions_match_pillows_for_each_format(
    fmt: str, options: dict[str, object], size: tuple[int, int]
) -> None:
    data = _image(fmt, size, **options)
    assert image_dimensions(data) == size


def test_jpeg_with_metadata_segments_before_the_frame() -> None:
    """EXIF and ICC segments come before the frame header; the size is still found."""
    buffer = io.BytesIO()
    image = PIL.new("RGB", (321, 123))
    exif = image.getexif()
    exif[0x010E] = "a description " * 200
    image.save(buffer, format="JPEG", exif=exif.tobytes(), icc_profile=b"\0" * 5000)
    assert image_dimensions(buffer.getvalue()) == (321, 123)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        b"%PDF-1.7\n",
        b"\x89PNG\r\n\x1a\n",  # signature only
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # cut before any frame
        b"\xff\xd8\xff\xe0\x00\x01",  # a segment length below its own size
        b"GIF89a\x00",
        b"RIFF\x00\x00\x00\x00WEBPVP8X",
    ],
)
def test_truncated_or_foreign_bytes_have_no_size(data: bytes) -> None:
    assert image_dimensions(data) is None


def test_a_zero_sized_header_is_no_size() -> None:
    png = _image("PNG", (5, 5))
    zeroed = png[:16] + b"\0\0\0\0" + png[20:]
    assert image_dimensions(zeroed) is None


def test_a_jpeg_of_garbage_segments_ends_without_looping() -> None:
    data = b"\xff\xd8" + b"\xff\xe1\x00\x02" * 100_000
    assert image_dimensions(data) is None
