"""DirectRoute: an APIRoute documented in OpenAPI like any other, dispatched without FastAPI's machinery.

The endpoint takes the Request and returns a Response itself: no dependency solving, no response
model serialisation, no per-request exit stacks. The body is validated inside the endpoint with the
same pydantic model the OpenAPI schema documents (passed as `body_schema`). Used for the hot routes
of the service and, so that the comparison is fair, by the validation-only baseline in bench/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.inference.schemas import BadRequest

Endpoint = Callable[[Request], Awaitable[Response]]


def _direct_app(endpoint: Endpoint) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


class DirectRoute(APIRoute):
    def __init__(self, path: str, endpoint: Endpoint, *, body_schema: str | None = None, **kwargs: Any) -> None:
        if body_schema is not None:
            extra = kwargs.setdefault("openapi_extra", {})
            extra["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{body_schema}"}}},
            }
        super().__init__(path, endpoint, **kwargs)
        self.app = _direct_app(endpoint)


class JSONBytes(Response):
    """A JSON body serialised already (orjson): the two headers are built directly, nothing else is done."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.body = body
        self.status_code = status_code
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]


def body_too_large(limit: int, size: int | None = None) -> str:
    got = f"{size} bytes" if size is not None else "the body"
    return f"body: {got} is over the limit of {limit} bytes (deployment.max_body_bytes)"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (BadRequest 413 naming the limit) when over `limit` bytes, chunked or not."""
    for key, value in request.scope["headers"]:
        if key == b"content-length":
            try:
                size = int(value)
            except ValueError:
                raise BadRequest(400, f"invalid Content-Length header {value[:40]!r}") from None
            if size > limit:
                raise BadRequest(413, body_too_large(limit, size))
            return await request.body()
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, body_too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks)
