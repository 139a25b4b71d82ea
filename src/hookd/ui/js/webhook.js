// One webhook: its settings and day, test send, rotate secret, activate or
// deactivate, edit, bulk replay of its dead letters, its latest deliveries.
import { render, stale } from "./app.js";
import { call } from "./api.js";
import { append, badge, confirmAction, field, figures, h, isoFromLocal, link, message, percent, pre, replace, when } from "./dom.js";
import { deliveryTable } from "./deliveries.js";
import { describeError, sessionSecret, webhookFields } from "./webhooks.js";

export async function webhookPage(root, { params: [id], generation }) {
  const [{ data: hook }, { data: stats }, deliveries] = await Promise.all([
    call("GET", `/v1/webhooks/${id}`),
    call("GET", `/v1/webhooks/${id}/stats`),
    call("GET", "/v1/deliveries", { query: { webhookId: id, limit: 20 } }),
  ]);
  if (stale(generation)) return;
  const result = h("div", { id: "action-result", "aria-live": "polite" });
  const secret = sessionSecret.get(id);
  sessionSecret.delete(id);
  append(root, 
    h("h1", null, hook.name, " ", badge(hook.status)),
    secret ? secretNotice("Signing secret — shown only now; store it safely:", secret) : null,
    details(hook),
    dayFigures(stats),
    h("section", { class: "card actions" }, h("h2", null, "Actions"), actions(hook, result), result),
    editForm(hook),
    replayForm(hook),
    h(
      "section",
      null,
      h("h2", null, "Latest deliveries"),
      deliveryTable(deliveries.data),
      link(`/ui/deliveries?webhookId=${id}`, "All deliveries of this webhook →"),
    ),
  );
}

function secretNotice(text, secret) {
  return h("div", { class: "msg info secret" }, h("p", null, text), h("code", { id: "secret" }, secret));
}

function details(hook) {
  const rows = [
    ["ID", h("code", null, hook._id)],
    ["URL", hook.url],
    ["Events", hook.events.join(", ")],
    ["Retry attempts", String(hook.retryAttempts)],
    ["Timeout", `${hook.timeoutMs} ms`],
    ["Secret", h("code", null, hook.secret)],
    ["Created", [when(hook.createdAt), " by ", hook.createdBy]],
  ];
  if (hook.disabledReason) rows.push(["Disabled because", hook.disabledReason]);
  return h("dl", { class: "card details" }, rows.map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

function dayFigures(stats) {
  return h(
    "section",
    { id: "webhook-stats", class: "card" },
    h("h2", null, "Last 24 hours"),
    figures([
      ["success rate", percent(stats.successRate), { "data-figure": "success-rate" }],
      ["delivered", String(stats.delivered)],
      ["dead-lettered", String(stats.deadLettered)],
      ["queued", String(stats.queued)],
      ["in flight", String(stats.inFlight)],
      ["paused until", when(stats.pausedUntil)],
      ["last error", stats.lastError ? describeError(stats.lastError) : "none", { class: "error-text", "data-figure": "last-error" }],
    ]),
  );
}

function actions(hook, result) {
  const path = `/v1/webhooks/${hook._id}`;
  const test = h("button", { id: "send-test" }, "Send test");
  test.addEventListener("click", async () => {
    test.disabled = true;
    replace(result, message("info", "Sending…"));
    try {
      const { data } = await call("POST", `${path}/test`);
      replace(
        result,
        h(
          "div",
          { class: `msg ${data.delivered ? "ok" : "error"}`, id: "test-result" },
          h("p", null, data.delivered ? "Delivered" : "Not delivered", " — ",
            data.statusCode !== null ? `HTTP ${data.statusCode}` : data.error || "no answer", " ",
            link(`/ui/deliveries/${data.deliveryId}`, "see the delivery")),
          data.responseBody ? pre(data.responseBody) : null,
        ),
      );
    } catch (error) {
      replace(result, message("error", error.message));
    } finally {
      test.disabled = false;
    }
  });
  const active = hook.status === "active";
  const toggle = h("button", { id: "toggle-status", class: "secondary" }, active ? "Deactivate" : "Activate");
  toggle.addEventListener("click", async () => {
    try {
      await call("PATCH", path, { body: { status: active ? "inactive" : "active" } });
      render(active ? "Webhook deactivated." : "Webhook activated.");
    } catch (error) {
      replace(result, message("error", error.message));
    }
  });
  const rotate = h("button", { id: "rotate-secret", class: "secondary" }, "Rotate secret");
  rotate.addEventListener("click", async () => {
    const ok = await confirmAction(
      "Rotate the signing secret?",
      "A new secret signs from now on; the old one keeps signing alongside it for the grace period.",
      "Rotate",
    );
    if (!ok) return;
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    const secret = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    try {
      await call("PATCH", path, { body: { secret } });
      sessionSecret.set(hook._id, secret);
      render("Secret rotated.");
    } catch (error) {
      replace(result, message("error", error.message));
    }
  });
  return h("div", { class: "buttons" }, test, toggle, rotate);
}

function editForm(hook) {
  const fields = webhookFields(hook);
  const status = h("div", { class: "status" });
  return h(
    "form",
    {
      id: "edit-webhook",
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        // Only what changed is sent.
        const body = {};
        for (const [name, value] of Object.entries(fields.read())) {
          if (JSON.stringify(value) !== JSON.stringify(hook[name])) body[name] = value;
        }
        if (!Object.keys(body).length) {
          replace(status, message("info", "Nothing changed."));
          return;
        }
        try {
          await call("PATCH", `/v1/webhooks/${hook._id}`, { body });
          render("Webhook saved.");
        } catch (error) {
          replace(status, message("error", error.message));
        }
      },
    },
    h("h2", null, "Edit"),
    fields.labels,
    h("button", { type: "submit" }, "Save"),
    status,
  );
}

function replayForm(hook) {
  const since = h("input", { name: "since", type: "datetime-local", step: 1 });
  const status = h("div", { class: "status", "aria-live": "polite" });
  return h(
    "form",
    {
      id: "bulk-replay",
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        const iso = isoFromLocal(since.value);
        const scope = iso ? `created since ${iso}` : "of any age";
        const ok = await confirmAction(
          "Replay dead letters?",
          `Every dead-lettered delivery of “${hook.name}” ${scope} gets a fresh retry budget and goes back in the queue.`,
          "Replay all",
        );
        if (!ok) return;
        try {
          const { data } = await call("POST", `/v1/webhooks/${hook._id}/replay`, {
            body: iso ? { since: iso } : {},
          });
          replace(status, message("ok", `${data.count} dead letter${data.count === 1 ? "" : "s"} queued again.`));
        } catch (error) {
          replace(status, message("error", error.message));
        }
      },
    },
    h("h2", null, "Replay dead letters"),
    field("Created since (optional, your local time)", since),
    h("button", { type: "submit", class: "danger" }, "Replay dead letters…"),
    status,
  );
}
