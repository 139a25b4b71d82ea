// Building the page.  Everything shown goes in as text (text nodes,
// textContent, attribute values): nothing a receiver or an event controls is
// ever parsed as HTML.  The page's CSP also enforces Trusted Types, so an
// HTML sink given a string would throw rather than render.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "href") {
      el.setAttribute("href", appPath(value));
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  add(el, children);
  return el;
}

// Append children to an element, skipping null/undefined/false (unlike Element.append).
export function append(el, ...children) {
  add(el, children);
  return el;
}

function add(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Links only ever point into the app: no javascript: or foreign URL from data.
export function appPath(path) {
  if (typeof path !== "string" || !path.startsWith("/ui/") || path.includes("//")) {
    throw new Error("not a dashboard path");
  }
  return path;
}

export function link(path, ...children) {
  return h("a", { href: path, "data-nav": true }, ...children);
}

export function replace(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

export function pre(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return h("pre", { class: "body" }, text ?? "");
}

export function when(ts) {
  return ts ? h("time", { datetime: ts }, ts.replace("T", " ").replace(".000Z", "Z")) : "—";
}

export function badge(status) {
  return h("span", { class: `badge s-${String(status).replace(/[^a-z_]/g, "")}` }, status);
}

export function percent(rate) {
  return rate === null || rate === undefined ? "—" : `${(rate * 100).toFixed(1)} %`;
}

export function short(id) {
  return id ? `${id.slice(0, 8)}…${id.slice(-4)}` : "—";
}

export function field(label, input) {
  return h("label", { class: "field" }, h("span", null, label), input);
}

export function message(kind, text) {
  return h("p", { class: `msg ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// datetime-local (the browser's local time) to ISO 8601 UTC, or null.
export function isoFromLocal(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

// Ask before acting; resolves true only for the confirming button.
export function confirmAction(title, text, action) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-label": title },
      h("h2", null, title),
      h("p", null, text),
      h(
        "form",
        { method: "dialog" },
        h("button", { value: "cancel", class: "secondary" }, "Cancel"),
        h("button", { value: "confirm", class: "danger" }, action),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "confirm");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

// Labelled figures: [[label, value, attributes of the value], ...].
export function figures(items) {
  return h(
    "dl",
    { class: "figures" },
    items.map(([label, value, attrs]) => h("div", { class: "figure" }, h("dt", null, label), h("dd", attrs || null, value))),
  );
}
