"""The image checks that run before llama.cpp's decoder sees a byte."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import images
from runtime.images import ImageError, check_image, image_size
from tests.tinyprojector import png_bytes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_formats_and_sizes() -> None:
    assert image_size(png_bytes(7, 5)) == ("png", 7, 5)
    assert image_size(b"GIF89a" + struct.pack("<HH", 3, 4) + b"\x00" * 8) == ("gif", 3, 4)
    bmp = b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, 6, -9) + b"\x00" * 8
    assert image_size(bmp) == ("bmp", 6, 9)
    jpeg = (b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", 4) + b"JF"
            + b"\xff\xc0" + struct.pack(">HBHH", 11, 8, 12, 34) + b"\x03" * 6)
    assert image_size(jpeg) == ("jpeg", 34, 12)


def test_check_image_accepts_a_png_in_any_base64_dress() -> None:
    data = png_bytes(4, 4)
    assert check_image(b64(data)) == data
    assert check_image("data:image/png;base64," + b64(data)) == data
    assert check_image(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("%%%", "base64"),
    (b64(b"plain text"), "not supported"),
    (b64(png_bytes(4, 4)[:20]), "truncated"),
    (b64(b"\xff\xd8\xff\xd9"), "JPEG"),
])
def test_refusals(text: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        check_image(text)


def test_bombs_and_giants(monkeypatch: pytest.MonkeyPatch) -> None:
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
    for w, h in ((100_000, 10), (10_000, 10_000), (0, 5)):
        with pytest.raises(ImageError):
            check_image(b64(header + struct.pack(">II", w, h) + b"\x08\x02\x00\x00\x00"))
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(ImageError, match="larger"):
        check_image(b64(png_bytes(4, 4) + b"\x00" * 200))


@given(st.binary(max_size=300))
def test_any_bytes_pass_or_fail_cleanly(data: bytes) -> None:
    try:
        check_image(b64(data))
    except ImageError:
        pass
