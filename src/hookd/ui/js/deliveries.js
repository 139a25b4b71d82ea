// Deliveries, newest first: filters in the URL, cursor paging.
import { navigate, stale } from "./app.js";
import { call } from "./api.js";
import { append, badge, field, h, isoFromLocal, link, replace, short, when } from "./dom.js";

const STATUSES = ["pending", "failed", "rate_limited", "delivered", "dead_letter"];
const FILTERS = ["status", "webhookId", "eventType", "since", "until"];

export function deliveryTable(items) {
  if (!items.length) return h("p", { class: "muted", id: "no-deliveries" }, "No deliveries.");
  return h(
    "table",
    { class: "deliveries" },
    h(
      "thead",
      null,
      h("tr", null, ["Delivery", "Created", "Status", "Event type", "Webhook", "Attempts", "Last answer"].map((t) => h("th", null, t))),
    ),
    h(
      "tbody",
      null,
      items.map((d) =>
        h(
          "tr",
          { "data-delivery": d._id },
          h("td", null, link(`/ui/deliveries/${d._id}`, short(d._id))),
          h("td", null, when(d.createdAt)),
          h("td", null, badge(d.status), d.isTest ? h("span", { class: "muted" }, " test") : null),
          h("td", null, d.eventType),
          h("td", null, link(`/ui/webhooks/${d.webhookId}`, short(d.webhookId))),
          h("td", null, String(d.attemptCount)),
          h(
            "td",
            { class: "error-text" },
            d.lastStatusCode !== null ? `HTTP ${d.lastStatusCode}` : d.lastError || "—",
          ),
        ),
      ),
    ),
  );
}

// Cursors of the pages before the one shown, per filter set, for "Newer".
const previous = new Map();

export async function deliveriesPage(root, { query, generation }) {
  const filters = Object.fromEntries(FILTERS.map((name) => [name, query.get(name) || ""]));
  const cursor = query.get("cursor") || "";
  const key = JSON.stringify(filters);
  const page = await call("GET", "/v1/deliveries", { query: { ...filters, cursor, limit: query.get("limit") || 25 } });
  if (stale(generation)) return;
  const stack = previous.get(key) || [];
  if (!cursor) stack.length = 0;
  previous.set(key, stack);
  const go = (nextCursor) => {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(filters)) if (value) params.set(name, value);
    if (query.get("limit")) params.set("limit", query.get("limit"));
    if (nextCursor) params.set("cursor", nextCursor);
    const text = params.toString();
    navigate(`/ui/deliveries${text ? `?${text}` : ""}`);
  };
  const pager = h("div", { class: "pager" });
  if (cursor) {
    const newer = h("button", { id: "newer", class: "secondary" }, "← Newer");
    newer.addEventListener("click", () => go(stack.pop() || ""));
    pager.append(newer);
  }
  if (page.nextCursor) {
    const older = h("button", { id: "older", class: "secondary" }, "Older →");
    older.addEventListener("click", () => {
      stack.push(cursor);
      go(page.nextCursor);
    });
    pager.append(older);
  }
  append(root, h("h1", null, "Deliveries"), filterForm(filters, go), deliveryTable(page.data), pager);
}

function filterForm(filters, go) {
  const status = h(
    "select",
    { name: "status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: filters.status === s }, s)),
  );
  const webhookId = h("input", { name: "webhookId", value: filters.webhookId, size: 26, pattern: "[0-9a-f]{24}" });
  const eventType = h("input", { name: "eventType", value: filters.eventType });
  const since = h("input", { name: "since", type: "datetime-local", step: 1 });
  const until = h("input", { name: "until", type: "datetime-local", step: 1 });
  const shown = h("p", { class: "muted" });
  for (const [name, value] of [["since", filters.since], ["until", filters.until]]) {
    if (value) shown.append(`${name} ${value} `);
  }
  return h(
    "form",
    {
      id: "filters",
      class: "card filters",
      onsubmit: (event) => {
        event.preventDefault();
        Object.assign(filters, {
          status: status.value,
          webhookId: webhookId.value.trim(),
          eventType: eventType.value.trim(),
          since: isoFromLocal(since.value) || (since.value ? "" : filters.since),
          until: isoFromLocal(until.value) || (until.value ? "" : filters.until),
        });
        go("");
      },
    },
    field("Status", status),
    field("Webhook ID", webhookId),
    field("Event type", eventType),
    field("Created since", since),
    field("Created until", until),
    h("button", { type: "submit" }, "Filter"),
    h("a", { href: "/ui/deliveries", "data-nav": true, class: "button secondary" }, "Clear"),
    shown,
  );
}

