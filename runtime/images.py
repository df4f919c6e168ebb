"""Checking an image before llama.cpp's decoder (stb_image) sees it.

Policy: an image arrives base64-encoded; it must decode (strict base64, standard or
URL-safe alphabet, optional ``data:`` URL prefix), be 1 byte to ``MAX_IMAGE_BYTES``
long, be a PNG, JPEG, GIF or BMP file (what llama.cpp's multimodal library decodes), and
declare dimensions of at most ``MAX_SIDE`` per side and ``MAX_PIXELS`` in all in its
header, so a small file that would expand to gigabytes (a decompression bomb) is refused
before any pixel is decoded. Anything else is an ``ImageError`` (HTTP 400).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_SIDE = 16384
MAX_PIXELS = 40_000_000

_B64 = re.compile(rb"[A-Za-z0-9+/_-]*={0,2}")


class ImageError(ValueError):
    status = 400


def decode_base64(text: str) -> bytes:
    data = text.strip()
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    raw = "".join(data.split()).encode("ascii", errors="replace")
    if len(raw) > (MAX_IMAGE_BYTES * 4) // 3 + 8:
        raise ImageError(f"image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    if not _B64.fullmatch(raw):
        raise ImageError("image is not valid base64")
    raw = raw.replace(b"-", b"+").replace(b"_", b"/")
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image is not valid base64") from None


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from a PNG, JPEG, GIF or BMP header; ImageError otherwise."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("image is a truncated PNG")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(b"GIF87a") or data.startswith(b"GIF89a"):
        if len(data) < 10:
            raise ImageError("image is a truncated GIF")
        width, height = struct.unpack("<HH", data[6:10])
        return "gif", width, height
    if data.startswith(b"BM"):
        if len(data) < 26:
            raise ImageError("image is a truncated BMP")
        header = struct.unpack("<I", data[14:18])[0]
        if header == 12:
            width, height = struct.unpack("<HH", data[18:22])
        else:
            width, height = struct.unpack("<ii", data[18:26])
        return "bmp", abs(width), abs(height)
    if data.startswith(b"\xff\xd8"):
        return ("jpeg", *_jpeg_size(data))
    raise ImageError("image format is not supported (use PNG, JPEG, GIF or BMP)")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageError("image is a malformed JPEG")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if length < 2:
            raise ImageError("image is a malformed JPEG")
        # Start-of-frame markers carry the dimensions (not DHT C4, JPG C8, DAC CC).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        if marker == 0xD9:
            break
        i += 2 + length
    raise ImageError("image is a truncated JPEG (no frame header)")


def check_image(text: str) -> bytes:
    """The decoded bytes of a base64 image that passes the policy above."""
    data = decode_base64(text)
    if not data:
        raise ImageError("image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    kind, width, height = image_size(data)
    if width <= 0 or height <= 0:
        raise ImageError(f"image has no pixels ({kind} {width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise ImageError(f"image dimensions {width}x{height} are too large (at most {MAX_SIDE} per side "
                         f"and {MAX_PIXELS:,} pixels)")
    return data
