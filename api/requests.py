"""Reading request bodies the way ollama does: JSON, unknown fields ignored."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api.errors import APIError, bad_request
from store.errors import InvalidName, first_error
from store.names import ModelName

MAX_JSON_BODY = 32 * 1024 * 1024

M = TypeVar("M", bound=BaseModel)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, however many segments it arrives in; 413 past `limit`.

    (`request.content.read(n)` returns only what is buffered so far, so a body larger
    than one socket read came back cut.)"""
    if request.content_length is not None and request.content_length > limit:
        raise APIError(413, "request body too large")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise APIError(413, "request body too large")
        parts.append(chunk)
    return b"".join(parts)


async def read_json(request: web.Request, model: type[M]) -> M:
    body = await read_body(request, MAX_JSON_BODY)
    if not body.strip():
        raise bad_request("missing request body")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where, message = first_error(exc, "body")
        raise bad_request(f"invalid value for {where}: {message}") from None


def parse_name(text: str, message: str = "invalid model name") -> ModelName:
    """Validate a model name before anything touches the filesystem."""
    try:
        return ModelName.parse(text)
    except InvalidName:
        raise bad_request(message) from None
