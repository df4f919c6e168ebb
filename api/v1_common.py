"""What the /v1 encoders (OpenAI, Anthropic) share: error shapes, image data URLs, ids,
and collecting a whole answer from the inference service's events."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from api.responses import json_response
from runtime.errors import BadInferenceRequest
from runtime.service import Delta, Done, Prepared, Rendered

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, n: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


# -- errors ---------------------------------------------------------------------------------

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                    503: "overloaded_error", 529: "overloaded_error"}


def is_anthropic(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind = _OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    code = "model_not_found" if status == 404 and "model" in message else None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def shaped_error(path: str, status: int, message: str) -> dict[str, Any]:
    return anthropic_error(status, message) if is_anthropic(path) else openai_error(status, message)


@web.middleware
async def v1_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On /v1 paths, every `{"error": "..."}` answer (from the handlers, the request
    reader, the Host and path guards, the API-key rule) becomes the OpenAI shape, or the
    Anthropic one on /v1/messages; unknown /v1 paths and methods too."""
    path = request.path
    if not (path == "/v1" or path.startswith("/v1/")):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = "method not allowed" if exc.status == 405 else exc.reason.lower()
        return json_response(shaped_error(path, exc.status, text), exc.status)
    if response.status < 400 or not isinstance(response, web.Response) or response.prepared:
        return response
    try:
        data = json.loads(bytes(response.body or b""))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return response
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return response
    return json_response(shaped_error(path, response.status, data["error"]), response.status)


# -- content -------------------------------------------------------------------------------


def data_url_image(url: str) -> str:
    """The base64 payload of a `data:image/...;base64,` URL; corral fetches nothing."""
    if not url.startswith("data:"):
        raise BadInferenceRequest("image URLs must be data URLs (data:image/...;base64,...); "
                                  "corral does not fetch remote images")
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise BadInferenceRequest("invalid image data URL: expected data:<type>;base64,<data>")
    return payload


def tool_arguments(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    if text in (None, ""):
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise BadInferenceRequest("tool call arguments must be a JSON object") from None
    if not isinstance(value, dict):
        raise BadInferenceRequest("tool call arguments must be a JSON object")
    return value


def stop_list(stop: str | list[str] | None) -> list[str] | None:
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


# -- answers -------------------------------------------------------------------------------


@dataclass
class Answer:
    """A whole answer of one generation."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    done: Done | None = None
    rendered: str | None = None

    def add(self, event: Delta | Done | Rendered, single_call: bool = False) -> None:
        if isinstance(event, Rendered):
            self.rendered = event.prompt
            return
        self.content += event.content
        if isinstance(event, Delta):
            self.thinking += event.thinking
        for call in event.tool_calls:
            if not (single_call and self.tool_calls):
                self.tool_calls.append(call)
        self.logprobs.extend(event.logprobs)
        if isinstance(event, Done):
            self.done = event

    @property
    def prompt_tokens(self) -> int:
        return self.done.prompt_eval_count if self.done else 0

    @property
    def completion_tokens(self) -> int:
        return self.done.eval_count if self.done else 0


async def collect(prepared: Prepared, single_call: bool = False) -> Answer:
    answer = Answer()
    async for event in prepared.events():
        answer.add(event, single_call)
    return answer
