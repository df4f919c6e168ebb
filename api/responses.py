"""JSON responses encoded as ollama's Go server encodes them."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from store.gojson import go_json

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def json_response(body: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    if isinstance(body, BaseModel):
        data = body.model_dump(mode="json", exclude_none=True)
    else:
        data = body
    return web.Response(status=status, body=go_json(data), headers={"Content-Type": JSON_CONTENT_TYPE})


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)
