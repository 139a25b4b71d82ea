"""Whatever a receiver or an event controls is shown as text, never run or rendered.

The receiver answers with ``<img onerror>`` and ``<script>`` bodies, the event
data and the webhook's name carry the same; every page that shows them is
visited, and a script that ran would set ``window.__xss``.
"""

from __future__ import annotations

from tests.ui.conftest import Stack, Tab

IMG = "<img src=x onerror=\"window.__xss='img'\">"
SCRIPT = "<script>window.__xss='script'</script>"
PAYLOAD = f"{IMG}{SCRIPT}"


def _nothing_ran(tab: Tab) -> None:
    assert tab.xss_flag() is None
    # No element came out of the data: the page has no <img> at all, and no
    # <script> besides the dashboard's own module.
    assert tab.page.locator("img").count() == 0
    sources = tab.page.locator("script").evaluate_all("els => els.map(e => e.src)")
    assert all(src.endswith("/ui/js/app.js") for src in sources), sources


def test_receiver_answers_event_data_and_names_are_shown_literally(tab: Tab, stack: Stack) -> None:
    key = stack.workspace_key("ws_ui_xss")
    url = stack.receiver.answer("/xss", (200, PAYLOAD), (500, PAYLOAD))
    hook = stack.api(
        "POST",
        "/v1/webhooks",
        key,
        {"name": f"evil {IMG}", "url": url, "events": ["*"], "retryAttempts": 0},
    )
    (delivery_id,) = stack.ingest(key, "xss.probe", {"html": PAYLOAD, IMG: [SCRIPT]})
    stack.wait_status(key, delivery_id, "delivered")
    (failed_id,) = stack.ingest(key, "xss.probe", {"again": SCRIPT})
    stack.wait_status(key, failed_id, "dead_letter")

    tab.sign_in(key)
    page = tab.page
    page.get_by_text(f"evil {IMG}").wait_for()
    # The list's last-error cell is filled by a later call; wait for it.
    page.locator(f"tr[data-webhook='{hook['_id']}'] td.error-text a").wait_for()
    _nothing_ran(tab)

    tab.open(f"/ui/webhooks/{hook['_id']}")
    assert page.locator("h1").inner_text().startswith(f"evil {IMG}")
    stack.receiver.answer("/xss", (200, PAYLOAD))
    page.get_by_role("button", name="Send test").click()
    assert page.locator("#test-result pre").inner_text() == PAYLOAD
    _nothing_ran(tab)

    tab.open(f"/ui/deliveries/{delivery_id}")
    data = page.locator("#event-data").inner_text()
    assert PAYLOAD.replace('"', '\\"') in data and IMG.replace('"', '\\"') in data
    assert page.locator("#attempts pre").inner_text() == PAYLOAD
    _nothing_ran(tab)

    tab.open(f"/ui/deliveries/{failed_id}")
    assert page.locator("#attempts pre").inner_text() == PAYLOAD
    tab.open("/ui/deliveries")
    page.locator("table.deliveries").wait_for()
    _nothing_ran(tab)
    tab.shot("xss-shown-as-text")


def test_the_policy_refuses_inline_script_and_html_sinks(tab: Tab, stack: Stack) -> None:
    tab.open("/ui/")
    tab.page.get_by_label("API key").wait_for()
    outcome = tab.page.evaluate(
        """() => {
            const results = {};
            try {
                document.body.insertAdjacentHTML("beforeend", "<b id=sink>html</b>");
                results.html = "rendered";
            } catch (e) { results.html = e.name; }
            try {
                const s = document.createElement("script");
                s.textContent = "window.__xss = 'inline'";
                document.body.append(s);
                results.script = "appended";
            } catch (e) { results.script = e.name; }
            return results;
        }"""
    )
    # Trusted Types: a string never reaches an HTML or script sink.
    assert outcome == {"html": "TypeError", "script": "TypeError"}
    assert tab.page.locator("#sink").count() == 0
    assert tab.xss_flag() is None
