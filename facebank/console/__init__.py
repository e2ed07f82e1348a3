"""The web console: static files shipped in the package, served by ``facebank serve``.

The console is plain JavaScript modules (no build step) that call the same Rekognition API as any
client (``POST /`` with ``X-Amz-Target``), so it adds no second API. The HTTP layer calls
``static_response`` for ``GET /`` and ``GET /console/<path>``; it only ever serves a file that is
in the package's ``static`` folder (the set is listed once, at import), so no request path can
reach anything else. docs/console.md describes the pages.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from urllib.parse import unquote

PREFIX = "/console/"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
# Scripts and styles only from this server, no inline code, no framing; images the user picked are
# shown through blob: URLs; the API is called on the same origin.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@cache
def files() -> dict[str, Traversable]:
    """Every servable file by its path under ``/console/`` (e.g. ``app.js``, ``vendor/aws4fetch.mjs``)."""
    found: dict[str, Traversable] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.name.startswith((".", "_")):
                continue
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif any(entry.name.endswith(suffix) for suffix in TYPES):
                found[prefix + entry.name] = entry

    walk(resources.files(__name__).joinpath("static"), "")
    return found


def _name(path: str) -> str | None:
    """The file a request path names: ``/`` and ``/console/`` are the page itself; a path without
    a leading slash is taken as the ``<path>`` part of ``/console/<path>``."""
    path = unquote(path.split("?", 1)[0].split("#", 1)[0])
    if not path.startswith("/"):
        path = PREFIX + path
    if path in ("", "/", PREFIX, PREFIX.rstrip("/")):
        return "index.html"
    if path.startswith(PREFIX):
        return path[len(PREFIX) :]
    return None


def static_response(path: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for ``GET <path>``: ``/`` or ``/console/<file>`` (or just ``<file>``),
    query ignored.

    Only files listed by ``files()`` are served, looked up by exact name, so ``..``, encoded
    slashes or absolute paths find nothing (404)."""
    name = _name(path)
    entry = files().get(name) if name is not None else None
    if name is None or entry is None:
        return 404, {"Content-Type": "text/plain; charset=utf-8", **SECURITY_HEADERS}, b"Not Found\n"
    content_type = TYPES["." + name.rsplit(".", 1)[-1]]
    return 200, {"Content-Type": content_type, **SECURITY_HEADERS}, entry.read_bytes()
