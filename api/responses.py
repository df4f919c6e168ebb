"""JSON responses encoded as ollama's Go server encodes them."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from store.gojson import go_json

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def encode_json(body: BaseModel | dict[str, Any]) -> bytes:
    """The body json_response sends (call it in a worker thread for large answers)."""
    if isinstance(body, BaseModel):
        data = body.model_dump(mode="json", exclude_none=True)
    else:
        data = body
    return go_json(data)


def json_response(body: BaseModel | dict[str, Any] | bytes, status: int = 200) -> web.Response:
    """`body` may be already encoded (encode_json) bytes."""
    data = body if isinstance(body, bytes) else encode_json(body)
    return web.Response(status=status, body=data, headers={"Content-Type": JSON_CONTENT_TYPE})


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)
