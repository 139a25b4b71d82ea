"""The dashboard in headless Chromium against a real daemon: sign in, create,
test, watch a delivery fail then succeed, replay, bulk replay, filter, page."""

from __future__ import annotations

import re

from tests.ops.support import wait_until
from tests.ui.conftest import Stack, Tab


def _no_errors(tab: Tab) -> None:
    problems = [line for line in tab.console if line.startswith(("error", "pageerror"))]
    assert not problems, problems


def test_sign_in_create_test_send_fail_then_succeed_and_sign_out(tab: Tab, stack: Stack) -> None:
    key = stack.workspace_key("ws_ui_flow")
    page = tab.page
    tab.open("/ui/")
    # Not signed in: the form, and nothing else of the app.
    assert page.get_by_label("API key").get_attribute("type") == "password"
    assert page.locator("#nav").is_hidden()
    tab.sign_in(key)
    # The key lives in this tab's sessionStorage only.
    storage = page.evaluate("() => ({...sessionStorage})")
    assert storage == {"hookd.apiKey": key}
    assert page.evaluate("() => localStorage.length") == 0
    assert tab.context.cookies() == []

    url = stack.receiver.answer("/orders", (200, "thanks"))
    page.fill("#create-webhook input[name=name]", "Orders CRM")
    page.fill("#create-webhook input[name=url]", url)
    page.fill("#create-webhook input[name=events]", "order.*")
    page.get_by_role("button", name="Create webhook").click()
    secret = page.locator("#secret").inner_text()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert page.locator("h1").inner_text().startswith("Orders CRM")

    page.get_by_role("button", name="Send test").click()
    result = page.locator("#test-result")
    result.wait_for()
    assert "Delivered" in result.inner_text() and "HTTP 200" in result.inner_text()
    assert "thanks" in result.locator("pre").inner_text()
    tab.shot("webhook-after-test")

    # Edit, rotate the secret, deactivate and activate again.
    page.fill("#edit-webhook input[name=name]", "Orders CRM v2")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Webhook saved.").wait_for()
    assert page.locator("h1").inner_text().startswith("Orders CRM v2")
    page.get_by_role("button", name="Rotate secret").click()
    page.locator("dialog.confirm").get_by_role("button", name="Rotate").click()
    page.get_by_text("Secret rotated.").wait_for()
    rotated = page.locator("#secret").inner_text()
    assert re.fullmatch(r"[0-9a-f]{64}", rotated) and rotated != secret
    page.get_by_role("button", name="Deactivate").click()
    page.get_by_text("Webhook deactivated.").wait_for()
    assert "inactive" in page.locator("h1 .badge").inner_text()
    page.get_by_role("button", name="Activate").click()
    page.get_by_text("Webhook activated.").wait_for()
    hook_id = page.url.rsplit("/", 1)[1]
    saved = stack.api("GET", f"/v1/webhooks/{hook_id}", key)
    assert (saved["name"], saved["status"]) == ("Orders CRM v2", "active")

    # A real event: the receiver fails it once, the retry succeeds.
    stack.receiver.answer("/orders", (500, "database down"))
    (delivery_id,) = stack.ingest(key, "order.created", {"order": 17})
    stack.wait_status(key, delivery_id, "delivered")
    page.locator("#nav").get_by_role("link", name="Deliveries").click()
    row = page.locator(f"tr[data-delivery='{delivery_id}']")
    assert "delivered" in row.inner_text()
    row.get_by_role("link").first.click()
    page.wait_for_url(f"**/ui/deliveries/{delivery_id}")
    page.locator("#attempts").wait_for()
    attempts = page.locator("#attempts tbody tr")
    assert attempts.count() == 2
    first, second = attempts.nth(0).inner_text(), attempts.nth(1).inner_text()
    assert "500" in first and "5xx" in first and "database down" in first
    assert "200" in second and "2xx" in second
    assert '"order": 17' in page.locator("#event-data").inner_text()
    tab.shot("delivery-failed-then-delivered")

    # A deep link opens the same page in a fresh load (same tab: same session).
    tab.open(f"/ui/deliveries/{delivery_id}")
    page.locator("#attempts").wait_for()

    page.locator("#sign-out").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("() => sessionStorage.length") == 0
    # The key never travelled in a URL, and the daemon never logged it.
    assert not [u for u in tab.requests if key in u]
    assert key not in stack.daemon.output
    assert not [line for line in tab.console if key in line]
    _no_errors(tab)


def test_replay_a_dead_letter_and_bulk_replay_with_confirmation(tab: Tab, stack: Stack) -> None:
    key = stack.workspace_key("ws_ui_replay")
    url = stack.receiver.answer("/down", *[(503, "maintenance")] * 3)
    hook = stack.api(
        "POST",
        "/v1/webhooks",
        key,
        {"name": "Down", "url": url, "events": ["*"], "retryAttempts": 0},
    )
    ids = [stack.ingest(key)[0] for _ in range(3)]
    for delivery_id in ids:
        stack.wait_status(key, delivery_id, "dead_letter")
    tab.sign_in(key)
    page = tab.page
    tab.open(f"/ui/deliveries/{ids[0]}")
    page.get_by_role("button", name="Replay…").click()
    dialog = page.locator("dialog.confirm")
    assert "Replay this delivery?" in dialog.inner_text()
    dialog.get_by_role("button", name="Cancel").click()
    dialog.wait_for(state="detached")
    assert stack.api("GET", f"/v1/deliveries/{ids[0]}", key)["status"] == "dead_letter"

    page.get_by_role("button", name="Replay…").click()
    page.locator("dialog.confirm").get_by_role("button", name="Replay", exact=True).click()
    page.get_by_text("Replayed: delivered (HTTP 200).").wait_for()
    assert "delivered" in page.locator("h1 .badge").inner_text()
    assert stack.api("GET", f"/v1/deliveries/{ids[0]}", key)["status"] == "delivered"

    tab.open(f"/ui/webhooks/{hook['_id']}")
    page.get_by_role("button", name="Replay dead letters…").click()
    page.locator("dialog.confirm").get_by_role("button", name="Replay all").click()
    page.get_by_text("2 dead letters queued again.").wait_for()
    for delivery_id in ids[1:]:
        stack.wait_status(key, delivery_id, "delivered")
    tab.shot("after-bulk-replay")
    _no_errors(tab)


def test_filter_and_cursor_paging(tab: Tab, stack: Stack) -> None:
    key = stack.workspace_key("ws_ui_pages")
    url = stack.receiver.url("/pages")
    stack.api("POST", "/v1/webhooks", key, {"name": "Pages", "url": url, "events": ["*"]})
    wanted = [stack.ingest(key, "invoice.paid", {"n": n})[0] for n in range(7)]
    others = [stack.ingest(key, "invoice.voided")[0] for _ in range(2)]
    for delivery_id in wanted + others:
        stack.wait_status(key, delivery_id, "delivered")
    tab.sign_in(key)
    page = tab.page
    tab.open("/ui/deliveries?limit=3")
    page.fill("#filters input[name=eventType]", "invoice.paid")
    page.select_option("#filters select[name=status]", "delivered")
    page.get_by_role("button", name="Filter").click()

    def shown() -> list[str]:
        page.locator("table.deliveries").wait_for()
        return page.locator("tr[data-delivery]").evaluate_all(
            "rows => rows.map(r => r.dataset.delivery)"
        )

    wait_until(lambda: "eventType=invoice.paid" in page.url)
    pages = [shown()]
    while page.locator("#older").count():
        before = pages[-1]
        page.locator("#older").click()
        wait_until(lambda before=before: shown() != before)
        pages.append(shown())
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [d for p in pages for d in p]
    # Newest first, each once, and only what the filter asked for.
    assert seen == list(reversed(wanted))
    page.locator("#newer").click()
    wait_until(lambda: shown() == pages[1])
    page.locator("#newer").click()
    wait_until(lambda: shown() == pages[0])
    assert page.locator("#newer").count() == 0
    tab.shot("deliveries-filtered")
    _no_errors(tab)


def test_a_platform_key_picks_a_workspace(tab: Tab, stack: Stack) -> None:
    platform = stack.platform_key()
    for ws in ("ws_ui_one", "ws_ui_two"):
        key = stack.workspace_key(ws)
        stack.api(
            "POST",
            "/v1/webhooks",
            key,
            {"name": f"hook of {ws}", "url": stack.receiver.url("/p"), "events": ["*"]},
        )
    page = tab.page
    tab.open("/ui/")
    page.get_by_label("API key").fill(platform)
    page.get_by_label("Workspace").fill("ws_ui_one")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("hook of ws_ui_one").wait_for()
    assert page.get_by_text("hook of ws_ui_two").count() == 0
    page.locator("#workspace-switch").fill("ws_ui_two")
    page.get_by_role("button", name="Switch").click()
    page.get_by_text("hook of ws_ui_two").wait_for()
    assert page.get_by_text("hook of ws_ui_one").count() == 0
    assert page.evaluate("() => sessionStorage.getItem('hookd.workspace')") == "ws_ui_two"
    _no_errors(tab)


def test_a_wrong_key_is_refused_and_not_kept(tab: Tab, stack: Stack) -> None:
    page = tab.page
    tab.open("/ui/")
    page.get_by_label("API key").fill("sk_" + "0" * 48)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").wait_for()
    assert "invalid API key" in page.get_by_role("alert").inner_text()
    assert page.evaluate("() => sessionStorage.length") == 0
