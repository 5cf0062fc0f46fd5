"""A client that starts sending a request body and then stalls is answered 408 and let go,
instead of holding its connection (and a slot of the server) forever; a body over its size
limit is answered 413 before it is read."""

from __future__ import annotations

import asyncio
import json
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyTimeout:
    """Pure ASGI middleware: each part of a request body must arrive within ``seconds``.

    Reading the body happens inside the framework, which turns any error there into its own
    response; so the stall is noted, and the response that follows is replaced by a 408.
    """

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stalled = False
        replaced = False
        body_done = False

        async def timed_receive() -> Message:
            nonlocal stalled, body_done
            if body_done:  # e.g. a file response listening for a disconnect: no limit
                return await receive()
            try:
                message: Message = await asyncio.wait_for(receive(), self.seconds)
            except asyncio.TimeoutError:
                stalled = True
                raise TimeoutError(f"no request body for {self.seconds:g} s") from None
            body_done = message.get("type") != "http.request" or not message.get("more_body")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if not stalled:
                await send(message)
                return
            if replaced:
                return
            replaced = True
            error = {"error": f"the request body stalled for over {self.seconds:g} s"}
            body = json.dumps(error).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 408,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        try:
            await self.app(scope, timed_receive, guarded_send)
        except TimeoutError:
            if not stalled:
                raise
            # an endpoint reading the body itself (no framework to turn this into a response)
            await guarded_send({"type": "http.response.start", "status": 408, "headers": []})


class _TooLarge(ValueError):
    """Raised to the app reading a body past its limit."""


class BodyLimit:
    """Pure ASGI middleware: the request body of a path in ``limits`` may take at most that
    many bytes. A ``Content-Length`` over it is answered 413 at once, without reading the
    body (and the connection is closed); a body sent in chunks is counted as it arrives and
    answered 413 as soon as it passes the limit, so nothing bigger is ever held or parsed.
    """

    def __init__(self, app: Any, limits: dict[str, int]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        limit = self.limits.get(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_error(send, 413, self._message(int(declared), limit))
            return
        seen = 0
        too_large = False
        replaced = False

        async def counted_receive() -> Message:
            nonlocal seen, too_large
            message: Message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    too_large = True
                    raise _TooLarge(f"request body over {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if not too_large:
                await send(message)
                return
            if not replaced:
                replaced = True
                await _send_error(send, 413, self._message(None, limit))

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooLarge:
            # an endpoint reading the body itself (no framework to turn this into a response)
            await guarded_send({"type": "http.response.start", "status": 413, "headers": []})

    @staticmethod
    def _message(size: int | None, limit: int) -> str:
        what = "the request body" if size is None else f"a request body of {size} bytes"
        return f"{what} is over this server's limit of {limit} bytes for this path"


async def _send_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request head (the request line and
    headers) is not complete ``seconds`` after it began: a client sending its headers a byte
    at a time, or not at all, cannot hold a connection open. Pass it as ``uvicorn.run(...,
    http=...)``; uvicorn's own keep-alive timeout still covers idle connections between
    requests."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # the next request's head is incomplete
                self._arm()
            elif self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:  # from the first byte on: trickling does not extend it
                self._head_timer = self.loop.call_later(seconds, self._head_timeout)

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol
