// The API, called with the key the user signed in with.  The key lives in
// sessionStorage only (gone when the tab closes), travels in the X-Api-Key
// header and nowhere else: never in a URL, a cookie or a log.

const KEY = "hookd.apiKey";
const WORKSPACE = "hookd.workspace";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  get workspace() {
    return sessionStorage.getItem(WORKSPACE);
  },
  get isPlatform() {
    return (sessionStorage.getItem(KEY) || "").startsWith("sk_user_");
  },
  start(key, workspace) {
    sessionStorage.setItem(KEY, key);
    if (workspace) sessionStorage.setItem(WORKSPACE, workspace);
    else sessionStorage.removeItem(WORKSPACE);
  },
  pick(workspace) {
    sessionStorage.setItem(WORKSPACE, workspace);
  },
  end() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(WORKSPACE);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// Listeners for a key the API refused (revoked, wrong): the app signs out.
const onUnauthorized = [];
export function whenUnauthorized(fn) {
  onUnauthorized.push(fn);
}

export async function call(method, path, { body, query, key, workspace } = {}) {
  const headers = { Accept: "application/json", "X-Api-Key": key ?? session.key ?? "" };
  const ws = workspace ?? session.workspace;
  if (ws) headers["X-Workspace-Id"] = ws;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") params.set(name, value);
    }
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  const resp = await fetch(url, {
    method,
    headers,
    body: payload,
    credentials: "omit",
    cache: "no-store",
    redirect: "error",
  });
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!resp.ok) {
    const error = new ApiError(resp.status, json?.message || `HTTP ${resp.status}`);
    if (resp.status === 401 && key === undefined) onUnauthorized.forEach((fn) => fn(error));
    throw error;
  }
  return json;
}
