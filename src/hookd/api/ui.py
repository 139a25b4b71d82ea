"""The dashboard at ``/ui/``: static files shipped inside the package.

The files (plain ES modules, a stylesheet, one HTML page) are read once when
the application is built and served from memory; only names found in the
package can be asked for, so no path ever reaches the file system.  Any other
path without a file extension is a page of the app (``/ui/deliveries/<id>``)
and gets ``index.html``, whose script routes on the URL.

The pages need no key to load; every figure they show comes from the API,
which the script calls with the key the user typed (kept in
``sessionStorage``, sent as a header).  Every answer under ``/ui/`` carries a
Content-Security-Policy that allows only this origin's scripts and styles
(no inline script, no eval, Trusted Types required for HTML sinks) and
forbids framing.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

PREFIX = "/ui"
# The routes' canonical paths (the authentication middleware lets them through).
PATHS = frozenset({PREFIX, PREFIX + "/{path}"})

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    # The files change with an upgrade of hookd; revalidating is cheap.
    "Cache-Control": "no-cache",
}


def _collect(folder: Traversable, prefix: str = "") -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            files.update(_collect(entry, name + "/"))
            continue
        suffix = "." + entry.name.rpartition(".")[2]
        if suffix in CONTENT_TYPES:
            files[name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    return files


def load_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the dashboard by its path under ``/ui/``."""
    return _collect(resources.files("hookd") / "ui")


FILES: web.AppKey[dict[str, tuple[bytes, str]]] = web.AppKey("hookd_ui_files", dict)


async def redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(PREFIX + "/", headers=HEADERS)


async def serve_file(request: web.Request) -> web.Response:
    files = request.app[FILES]
    path = request.match_info["path"]
    found = files.get(path)
    if found is None and "." not in path.rpartition("/")[2]:
        # A page of the app (a deep link): its script reads the URL.
        found = files["index.html"]
    if found is None:
        return web.Response(
            status=404, text="not found\n", content_type="text/plain", headers=HEADERS
        )
    body, content_type = found
    return web.Response(body=body, headers={**HEADERS, "Content-Type": content_type})


def add_routes(app: web.Application) -> None:
    app[FILES] = load_files()
    app.router.add_get(PREFIX, redirect)
    app.router.add_get(PREFIX + "/{path:.*}", serve_file)
