// The dashboard's entry point: session, header, router.
import { session, whenUnauthorized } from "./api.js";
import { h, message, replace } from "./dom.js";
import { signIn } from "./signin.js";
import { webhooksPage } from "./webhooks.js";
import { webhookPage } from "./webhook.js";
import { deliveriesPage } from "./deliveries.js";
import { deliveryPage } from "./delivery.js";

const ID = "([0-9a-f]{24})";
const ROUTES = [
  [new RegExp("^/ui/?$"), webhooksPage],
  [new RegExp(`^/ui/webhooks/${ID}$`), webhookPage],
  [new RegExp("^/ui/deliveries/?$"), deliveriesPage],
  [new RegExp(`^/ui/deliveries/${ID}$`), deliveryPage],
];

const main = () => document.getElementById("main");

export function navigate(path) {
  history.pushState(null, "", path);
  render();
}

// A number bumped at every render: a page whose answers arrive after the user
// moved on drops them (see stale()).
let generation = 0;
export function stale(mine) {
  return mine !== generation;
}

export async function render(notice) {
  const mine = ++generation;
  renderSession();
  const root = main();
  if (!session.key) {
    replace(root, signIn(() => render()));
    return;
  }
  for (const [pattern, page] of ROUTES) {
    const match = pattern.exec(location.pathname);
    if (match) {
      replace(root, notice ? message("info", notice) : null);
      try {
        await page(root, { params: match.slice(1), query: new URLSearchParams(location.search), generation: mine });
      } catch (error) {
        if (!stale(mine)) root.append(message("error", error.message));
      }
      return;
    }
  }
  replace(root, h("h1", null, "Not found"), h("p", null, "There is no such page."));
}

function renderSession() {
  const box = document.getElementById("session");
  const nav = document.getElementById("nav");
  const signedIn = Boolean(session.key);
  box.hidden = nav.hidden = !signedIn;
  if (!signedIn) {
    box.replaceChildren();
    return;
  }
  const parts = [];
  if (session.isPlatform) {
    const input = h("input", {
      id: "workspace-switch",
      value: session.workspace || "",
      pattern: "ws_[A-Za-z0-9_\\-]{1,61}",
      required: true,
      size: 14,
      "aria-label": "Workspace",
    });
    parts.push(
      h(
        "form",
        {
          class: "inline",
          onsubmit: (event) => {
            event.preventDefault();
            session.pick(input.value.trim());
            navigate("/ui/");
          },
        },
        input,
        h("button", { class: "secondary" }, "Switch"),
      ),
    );
  } else {
    parts.push(h("span", { class: "muted" }, "workspace key"));
  }
  parts.push(
    h(
      "button",
      {
        id: "sign-out",
        class: "secondary",
        onclick: () => {
          session.end();
          navigate("/ui/");
        },
      },
      "Sign out",
    ),
  );
  replace(box, parts);
}

document.addEventListener("click", (event) => {
  const anchor = event.target.closest?.("a[data-nav]");
  if (!anchor || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(anchor.getAttribute("href"));
});
window.addEventListener("popstate", () => render());
whenUnauthorized((error) => {
  session.end();
  render(`Signed out: ${error.message}`);
});
render();
