"""The dashboard end to end: a real ``hookd serve``, a scripted receiver, and
Debian's Chromium driven by Playwright (pointed at /usr/bin/chromium; no
browser is ever downloaded).

One browser and one daemon per module; each test gets its own browser
context (fresh sessionStorage) and its own workspace, so tests do not see
each other's webhooks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hookd.keys import generate_key
from tests.ops.support import (
    Receiver,
    Serve,
    create_key,
    http,
    serve_env,
    wait_until,
    with_store,
)
from tests.support.services import require_binary

T = TypeVar("T")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run a helper that uses asyncio.run: Playwright's sync API owns this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


@dataclass
class Stack:
    daemon: Serve
    db: Path
    receiver: Receiver
    shots: Path

    @property
    def base(self) -> str:
        return self.daemon.base_url

    def workspace_key(self, workspace: str) -> str:
        return _off_loop(create_key, self.db, workspace)

    def platform_key(self) -> str:
        key = generate_key(platform=True)
        _off_loop(
            with_store,
            self.db,
            lambda s: s.create_api_key(None, key.digest, key.prefix, "user_ui"),
        )
        return key.plaintext

    def api(self, method: str, path: str, key: str, body: Any = None, **headers: str) -> Any:
        status, raw = http(method, self.daemon.url(path), body, {"X-Api-Key": key, **headers})
        assert 200 <= status < 300, (status, raw)
        return json.loads(raw)["data"]

    def ingest(self, key: str, type_: str = "order.created", data: Any = None) -> list[str]:
        accepted = self.api("POST", "/v1/events", key, {"type": type_, "data": data or {}})
        return list(accepted["deliveryIds"])

    def wait_status(self, key: str, delivery_id: str, status: str, timeout: float = 20) -> None:
        wait_until(
            lambda: self.api("GET", f"/v1/deliveries/{delivery_id}", key)["status"] == status,
            timeout=timeout,
        )


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_binary("chromium", "chromium")


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def stack(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("ui")
    db = root / "hookd.db"
    receiver = Receiver().start()
    daemon = Serve(
        serve_env(
            db,
            HOOKD_DELIVERY_ALLOW_NETWORKS="127.0.0.0/8",
            # The loopback receiver stands in for a public one: the pages show its answers.
            HOOKD_DELIVERY_RECORD_INTERNAL_RESPONSE_BODIES="true",
            HOOKD_DELIVERY_BACKOFF_BASE_SECONDS="0.05",
            HOOKD_DELIVERY_BACKOFF_CAP_SECONDS="0.2",
            HOOKD_LOGGING_LEVEL="debug",
        )
    )
    shots = root / "screenshots"
    shots.mkdir()
    try:
        yield Stack(daemon, db, receiver, shots)
    finally:
        daemon.stop()
        receiver.close()


@dataclass
class Tab:
    """One browser context and page, with what it logged and requested."""

    page: Any
    context: Any
    stack: Stack
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.page.goto(self.stack.base + path)

    def sign_in(self, key: str, workspace: str | None = None) -> None:
        self.open("/ui/")
        self.page.get_by_label("API key").fill(key)
        if workspace is not None:
            self.page.get_by_label("Workspace").fill(workspace)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.locator("#queue dl").wait_for()

    def shot(self, name: str) -> Path:
        path = self.stack.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000
        return path

    def xss_flag(self) -> Any:
        return self.page.evaluate("() => window.__xss")


@pytest.fixture
def tab(browser: Any, stack: Stack) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    opened = Tab(page, context, stack)
    page.on("console", lambda m: opened.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: opened.console.append(f"pageerror: {e}"))
    page.on("request", lambda r: opened.requests.append(r.url))
    yield opened
    context.close()
