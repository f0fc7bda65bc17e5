"""The web inspector's static files at `/ui`: plain HTML, CSS and JavaScript modules shipped in the package.

They hold no data and need no key: the page asks the JSON API for everything, sending the key the user typed.
Every file goes out with a strict Content-Security-Policy (scripts and styles from this origin only, no inline
code, nothing remote), so the pages work offline and a log's content can never run as code in them.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..._errors import NotFoundError

UI_DIR = Path(__file__).parent / "ui"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(html|js|css|svg)")
"""The only file names served: no directories, no dot files, nothing but the page's own kinds of file."""

ui = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    media_type: str
    etag: str


@functools.cache
def _load(name: str) -> _File | None:
    """A file of the UI directory, read once (they ship in the package and never change while it runs)."""
    path = UI_DIR / name
    if not _NAME.fullmatch(name) or not path.is_file():
        return None
    body = path.read_bytes()
    return _File(body, _TYPES[path.suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _headers(etag: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",  # revalidate (cheap: ETag) so an upgraded server's pages are used at once
        "ETag": etag,
    }


def _serve(name: str, request: Request) -> Response:
    found = _load(name)
    if found is None:
        raise NotFoundError(f"the inspector has no file {name!r}; open /ui/")
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=_headers(found.etag))
    return Response(found.body, media_type=found.media_type, headers=_headers(found.etag))


@ui.get("/ui")
async def ui_root() -> Response:
    """The inspector lives at `/ui/` (its modules are loaded relative to it)."""
    return RedirectResponse("/ui/", status_code=308)


@ui.get("/ui/")
async def ui_index(request: Request) -> Response:
    return _serve("index.html", request)


@ui.get("/ui/{name}")
async def ui_file(name: str, request: Request) -> Response:
    return _serve(name, request)
