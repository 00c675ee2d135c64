"""ASGI middleware: 413 for a request body over its limit, before the app reads it."""

from __future__ import annotations

from fastapi.responses import JSONResponse


class BodyLimit:
    """JSON bodies get the first limit, multipart uploads the second. The limits are read
    from `app.state.body_limits` (set by the ingress replica from its settings) on each
    request. A body without a Content-Length is read up to the limit, then replayed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        json_limit, upload_limit = scope["app"].state.body_limits
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/form-data")
        limit = upload_limit if multipart else json_limit
        declared = headers.get(b"content-length", b"")
        if declared.isdigit():
            if int(declared) > limit:
                return await _too_large(limit, scope, receive, send)
            return await self.app(scope, receive, send)  # the server holds it to its length
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                return await _too_large(limit, scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:  # the app waits for a disconnect once it has the body
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(limit: int, scope, receive, send) -> None:
    response = JSONResponse(
        status_code=413, content={"detail": f"Request body is too large (limit {limit} bytes)"}
    )
    await response(scope, receive, send)
