// The start page: a glance at the queue, the webhooks with their day, a form
// to create one.
import { navigate, stale } from "./app.js";
import { call } from "./api.js";
import { append, badge, field, figures, h, link, message, percent, replace, when } from "./dom.js";

export async function webhooksPage(root, { generation }) {
  const glance = h("section", { id: "queue", class: "card" }, h("h2", null, "Queue"));
  const list = h("section", { id: "webhooks" }, h("h2", null, "Webhooks"));
  append(root, glance, list, createForm());
  await Promise.all([showQueue(glance, generation), showWebhooks(list, generation)]);
}

export async function showQueue(box, generation) {
  const { data } = await call("GET", "/v1/stats");
  if (stale(generation)) return;
  const order = ["pending", "failed", "rate_limited", "delivered", "dead_letter"];
  replace(
    box,
    h("h2", null, "Queue"),
    figures([
      ...order.map((status) => [badge(status), String(data.deliveries[status] ?? 0), { "data-status": status }]),
      ["in flight", String(data.inFlight), { "data-figure": "in-flight" }],
      [
        "oldest due",
        data.oldestDueAt ? `${data.oldestDueAgeSeconds.toFixed(1)} s` : "nothing due",
        { "data-figure": "oldest-due" },
      ],
    ]),
    h("p", { class: "muted" }, "as of ", when(data.at)),
  );
}

async function showWebhooks(box, generation, cursor = null) {
  const page = await call("GET", "/v1/webhooks", { query: { limit: 50, cursor } });
  if (stale(generation)) return;
  const body = h("tbody");
  const table = h(
    "table",
    null,
    h(
      "thead",
      null,
      h(
        "tr",
        null,
        ["Name", "URL", "Status", "Paused until", "Success 24 h", "Last error", "In flight"].map(
          (title) => h("th", null, title),
        ),
      ),
    ),
    body,
  );
  if (!cursor) replace(box, h("h2", null, "Webhooks"));
  box.append(page.data.length || cursor ? table : h("p", { class: "muted" }, "No webhooks yet."));
  for (const hook of page.data) {
    const cells = {
      paused: h("td", null, "…"),
      rate: h("td", null, "…"),
      error: h("td", { class: "error-text" }, "…"),
      flight: h("td", null, "…"),
    };
    body.append(
      h(
        "tr",
        { "data-webhook": hook._id },
        h("td", null, link(`/ui/webhooks/${hook._id}`, hook.name)),
        h("td", { class: "url" }, hook.url),
        h("td", null, badge(hook.status)),
        cells.paused,
        cells.rate,
        cells.error,
        cells.flight,
      ),
    );
    call("GET", `/v1/webhooks/${hook._id}/stats`)
      .then(({ data }) => {
        replace(cells.paused, when(data.pausedUntil));
        replace(cells.rate, percent(data.successRate));
        replace(cells.error, data.lastError ? describeError(data.lastError) : "—");
        replace(cells.flight, String(data.inFlight));
      })
      .catch((error) => replace(cells.error, error.message));
  }
  if (page.nextCursor) {
    const more = h("button", { class: "secondary" }, "More webhooks");
    more.addEventListener("click", () => {
      more.remove();
      showWebhooks(box, generation, page.nextCursor);
    });
    box.append(more);
  }
}

export function describeError(last) {
  const what = last.statusCode !== null ? `HTTP ${last.statusCode}` : last.error || "error";
  return [link(`/ui/deliveries/${last.deliveryId}`, what), " ", when(last.at)];
}

// The fields of a webhook as a form edits them; `hook` gives the current values.
export function webhookFields(hook) {
  const inputs = {
    name: h("input", { name: "name", required: true, value: hook?.name }),
    url: h("input", { name: "url", type: "url", required: true, placeholder: "https://…", value: hook?.url }),
    events: h("input", { name: "events", required: true, value: hook ? hook.events.join(", ") : "*" }),
    retryAttempts: h("input", { name: "retryAttempts", type: "number", min: 0, max: 20, value: hook?.retryAttempts ?? 3 }),
    timeoutMs: h("input", { name: "timeoutMs", type: "number", min: 100, placeholder: "10000", value: hook?.timeoutMs }),
  };
  const labels = [
    field("Name", inputs.name),
    field("URL", inputs.url),
    field("Events (comma-separated; * or prefix.* allowed)", inputs.events),
    field("Retry attempts", inputs.retryAttempts),
    field("Timeout (ms)", inputs.timeoutMs),
  ];
  // The values as the API takes them (an empty timeout is left to the default).
  const read = () => {
    const body = {
      name: inputs.name.value,
      url: inputs.url.value.trim(),
      events: inputs.events.value.split(",").map((e) => e.trim()).filter(Boolean),
      retryAttempts: Number(inputs.retryAttempts.value),
    };
    if (inputs.timeoutMs.value) body.timeoutMs = Number(inputs.timeoutMs.value);
    return body;
  };
  return { labels, read };
}

function createForm() {
  const fields = webhookFields(null);
  const status = h("div", { class: "status" });
  return h(
    "form",
    {
      id: "create-webhook",
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const { data } = await call("POST", "/v1/webhooks", { body: fields.read() });
          // The only time the whole secret is shown.
          sessionSecret.set(data._id, data.secret);
          navigate(`/ui/webhooks/${data._id}`);
        } catch (error) {
          replace(status, message("error", error.message));
        }
      },
    },
    h("h2", null, "New webhook"),
    fields.labels,
    h("button", { type: "submit" }, "Create webhook"),
    status,
  );
}

// A new secret, held in memory until its webhook's page has shown it once.
export const sessionSecret = new Map();
