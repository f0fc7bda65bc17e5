"""The HTTP/1.1 protocol uvicorn serves with: its own parser (httptools when installed, else h11), with the request
line and headers bounded by `max_header_bytes` and refused with 431.

The bound is kept at the connection, not in the app: by the time an ASGI app sees a request, its headers have been
read whole, so a 100 MB header would already cost 100 MB. httptools has no limit of its own, so the bytes received
while a request's head is incomplete are counted as they arrive, before and after each feed to the parser: memory
stays within the limit plus one read (asyncio reads at most 256 KiB at a time), and the parser runs unchanged, at
its own speed. h11 keeps an exact limit of its own (`max_incomplete_event_size`), set to the same bound; its refusal
(uvicorn's plain 400) is answered as the 431 it is.

After the 431 the connection is closed gently: the answer, then the end of our side (FIN), and what the client
still sends is read and dropped for a moment before the socket closes. Closing at once with its bytes unread would
reset the connection (RST), and a client still sending would lose the answer that tells it why.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("contextfold.server")
_LINGER = 2.0
"""Seconds a refused connection is kept, dropping what arrives, so that its client can read the 431."""


def refusal(limit: int) -> bytes:
    """A whole 431 answer, in the API's error shape, that closes the connection."""
    body = json.dumps(
        {
            "error": {
                "message": f"the request line and headers are over the {limit}-byte limit (max_header_bytes); "
                "send fewer or smaller headers",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_header_fields_too_large",
            }
        }
    ).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def refuse(transport: asyncio.Transport, limit: int) -> None:
    log.warning("refused a request whose head is over %d bytes (max_header_bytes)", limit)
    transport.write(refusal(limit))
    if transport.can_write_eof():
        transport.write_eof()
    asyncio.get_running_loop().call_later(_LINGER, transport.close)


def protocol(max_header_bytes: int) -> type[asyncio.Protocol]:
    """uvicorn's protocol class (`uvicorn.Config(http=...)`) with the header bound."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed: h11, as uvicorn itself would pick
        return _h11(max_header_bytes)
    return _httptools(HttpToolsProtocol, max_header_bytes)


def _httptools(base: Any, limit: int) -> type[asyncio.Protocol]:
    class Bounded(base):  # type: ignore[misc]
        """Counts the bytes of each request's head (from the end of the last message to its headers' end)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True
            self._head_bytes = 0
            self._refused = False

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return  # read and dropped until the connection closes
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            # Still in the head after this read, and over the limit: every byte counted was the head's.
            if self._in_head and self._head_bytes > limit and not self.transport.is_closing():
                self._refused = True
                refuse(self.transport, limit)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0  # the next request's head may follow

    return Bounded


def _h11(limit: int) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Bounded(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limit)
            self._too_large = False
            parse = self.conn.next_event

            def next_event() -> Any:
                try:
                    return parse()
                except h11.RemoteProtocolError as error:
                    self._too_large = error.error_status_hint == 431
                    raise

            self.conn.next_event = next_event  # type: ignore[method-assign]

        def data_received(self, data: bytes) -> None:
            if not self._too_large:  # after the 431: read and dropped until the connection closes
                super().data_received(data)

        def send_400_response(self, msg: str) -> None:
            if not self._too_large:
                super().send_400_response(msg)
            elif not self.transport.is_closing():
                refuse(self.transport, limit)

    return Bounded
