// Sign in with an API key.  The key is checked against the API before it is
// kept (in sessionStorage, for this tab only).
import { call, session } from "./api.js";
import { field, h, message } from "./dom.js";

export function signIn(done) {
  const key = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const workspace = h("input", {
    id: "workspace",
    name: "workspace",
    placeholder: "ws_…",
    pattern: "ws_[A-Za-z0-9_\\-]{1,61}",
    autocomplete: "off",
  });
  const workspaceField = field("Workspace", workspace);
  workspaceField.hidden = true;
  const status = h("div", { class: "status" });
  key.addEventListener("input", () => {
    const platform = key.value.trim().startsWith("sk_user_");
    workspaceField.hidden = !platform;
    workspace.required = platform;
  });
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (event) => {
        event.preventDefault();
        const typed = key.value.trim();
        const ws = typed.startsWith("sk_user_") ? workspace.value.trim() : null;
        status.replaceChildren();
        try {
          await call("GET", "/v1/stats", { key: typed, workspace: ws });
        } catch (error) {
          status.append(message("error", error.message));
          return;
        }
        session.start(typed, ws);
        done();
      },
    },
    h("h1", null, "Sign in"),
    h(
      "p",
      { class: "muted" },
      "Use a workspace key (sk_…) or a platform key (sk_user_…) with a workspace. " +
        "The key stays in this tab only.",
    ),
    h("label", { for: "api-key" }, "API key"),
    key,
    workspaceField,
    h("button", { type: "submit" }, "Sign in"),
    status,
  );
  return form;
}
