"""The dashboard's files as HTTP serves them: headers, deep links, nothing else.

The browser tests (tests/ui/) show what the pages do; these check what any
client gets, and that a wheel carries the files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hookd.api import ui
from tests.api.conftest import Api

ROOT = Path(__file__).resolve().parents[2]


def _secured(headers: dict[str, str]) -> None:
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "path",
    ["/ui/", "/ui/deliveries", f"/ui/deliveries/{'a' * 24}", f"/ui/webhooks/{'b' * 24}"],
)
async def test_every_page_of_the_app_is_the_app_without_a_key(api: Api, path: str) -> None:
    reply = await api.call("GET", path)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert reply.raw == ui.load_files()["index.html"][0]
    _secured(reply.headers)


async def test_files_have_their_types_and_nothing_else_is_served(api: Api) -> None:
    reply = await api.call("GET", "/ui/js/app.js")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/javascript")
    _secured(reply.headers)
    assert (await api.call("GET", "/ui/app.css")).headers["Content-Type"].startswith("text/css")
    # Only the package's own files: a name that is not one of them is 404,
    # whatever it points at on disk.
    for path in ("/ui/js/nope.js", "/ui/..%2fapi%2fui.py", "/ui/%2e%2e%2fapi%2fui.py", "/ui/ui.py"):
        missing = await api.call("GET", path)
        assert missing.status == 404, path
        _secured(missing.headers)
    moved = await api.call("GET", "/ui", headers={})
    assert moved.status == 200  # followed to /ui/
    async with api.session.get(api.base_url + "/ui", allow_redirects=False) as resp:
        assert resp.status == 308 and resp.headers["Location"] == "/ui/"


def test_the_page_has_no_inline_script_and_the_code_no_html_sink() -> None:
    files = ui.load_files()
    page = files["index.html"][0].decode()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all('src="/ui/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son\w+\s*=", page), "inline event handler"
    code = {name: body.decode() for name, (body, _) in files.items() if name.endswith(".js")}
    assert code
    for name, text in code.items():
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, (name, sink)
        # The key is never logged from the browser either.
        assert "console." not in text, name


def test_a_wheel_carries_the_dashboard(tmp_path: Path) -> None:
    source = tmp_path / "src-copy"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("hookd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"hookd/ui/{name}" for name in ui.load_files()}
    assert expected <= names, expected - names
    assert "hookd/ui/index.html" in names and "hookd/ui/js/app.js" in names
