// One delivery: its event's body, every attempt, and replay of a dead letter.
import { render, stale } from "./app.js";
import { call } from "./api.js";
import { append, badge, confirmAction, h, link, message, pre, replace, when } from "./dom.js";

export async function deliveryPage(root, { params: [id], generation }) {
  const { data: d } = await call("GET", `/v1/deliveries/${id}`);
  const event = await call("GET", `/v1/events/${d.eventId}`).then(
    (reply) => reply.data,
    (error) => ({ error: error.message }),
  );
  if (stale(generation)) return;
  const result = h("div", { id: "replay-result", "aria-live": "polite" });
  append(root, 
    h("h1", null, "Delivery ", h("code", null, d._id), " ", badge(d.status)),
    h(
      "dl",
      { class: "card details" },
      [
        ["Event type", d.eventType],
        ["Event", h("code", null, d.eventId)],
        ["Webhook", link(`/ui/webhooks/${d.webhookId}`, d.webhookId)],
        ["Created", when(d.createdAt)],
        ["Updated", when(d.updatedAt)],
        ["Next attempt", when(d.nextAttemptAt)],
        ["Attempts", String(d.attemptCount)],
        ["Test send", d.isTest ? "yes" : "no"],
      ].map(([k, v]) => [h("dt", null, k), h("dd", null, v)]),
    ),
    replayBox(d, result),
    result,
    h("section", { class: "card" }, h("h2", null, "Event body"),
      event.error ? message("error", event.error) : h("div", { id: "event-data" }, pre(event.data))),
    h("section", null, h("h2", null, "Attempts"), attempts(d.attempts)),
  );
}

function replayBox(d, result) {
  if (d.status !== "dead_letter" || d.isTest) return null;
  const button = h("button", { id: "replay", class: "danger" }, "Replay…");
  button.addEventListener("click", async () => {
    const ok = await confirmAction(
      "Replay this delivery?",
      "It gets a fresh retry budget; the first new attempt is made now.",
      "Replay",
    );
    if (!ok) return;
    button.disabled = true;
    try {
      const { data } = await call("POST", `/v1/deliveries/${d._id}/replay`);
      const answer = data.httpStatusCode !== null ? `HTTP ${data.httpStatusCode}` : data.error || "queued";
      render(`Replayed: ${data.status} (${answer}).`);
    } catch (error) {
      button.disabled = false;
      replace(result, message("error", error.message));
    }
  });
  return h("div", { class: "buttons" }, button);
}

function attempts(list) {
  if (!list.length) return h("p", { class: "muted" }, "No attempt yet.");
  return h(
    "table",
    { id: "attempts" },
    h("thead", null, h("tr", null, ["#", "Started", "Status", "Duration", "Outcome", "Error", "Response body"].map((t) => h("th", null, t)))),
    h(
      "tbody",
      null,
      list.map((a) =>
        h(
          "tr",
          { "data-attempt": a.number },
          h("td", null, String(a.number)),
          h("td", null, when(a.startedAt)),
          h("td", null, a.statusCode === null ? "—" : String(a.statusCode)),
          h("td", null, `${a.durationMs} ms`),
          h("td", null, a.outcome),
          h("td", { class: "error-text" }, a.error || "—"),
          h("td", { class: "response" }, a.responseBody ? pre(a.responseBody) : "—"),
        ),
      ),
    ),
  );
}
