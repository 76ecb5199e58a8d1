// The console's shell: the sign-in gate, the hash router and the connection settings. Each page
// lives in its own module and gets an AbortSignal that fires when the user leaves it.

import { ApiError, call, connection, forget, saveConnection } from "./api.js";
import { announce, errorBox, h } from "./dom.js";
import { filesPage } from "./files.js";
import { jobPage } from "./job.js";
import { jobsPage } from "./jobs.js";
import { playgroundPage } from "./playground.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let leaving = new AbortController();
let signedIn = false;

const PROVIDERS = [
  ["", "Default (the gateway's own: local)"],
  ["local", "local"],
  ["openai", "openai"],
  ["azure-openai", "azure-openai"],
  ["bedrock", "bedrock"],
  ["vertex-ai", "vertex-ai"],
  ["fireworks-ai", "fireworks-ai"],
];

// Whether the gateway answers with the credentials this tab holds (with `auth = keys` and no
// key it answers 401, and the console shows nothing but the sign-in form).
async function check() {
  try {
    await call("GET", "/files", { query: { limit: 1 } });
    return null;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return error;
    throw error;
  }
}

function connectionForm({ title, intro, submitLabel, onDone, refused }) {
  const c = connection();
  const input = (id, label, value, attrs = {}, hint = null) =>
    h(
      "p",
      {},
      h("label", { for: id }, label),
      h("input", { id, name: id, value, autocomplete: "off", spellcheck: "false", "aria-describedby": hint ? `${id}-hint` : null, ...attrs }),
      hint && h("span", { class: "hint", id: `${id}-hint` }, hint),
    );
  const provider = h(
    "select",
    { id: "provider", name: "provider" },
    PROVIDERS.map(([value, label]) => h("option", { value, selected: value === c.provider }, label)),
  );
  const form = h(
    "form",
    { class: "card narrow", "aria-labelledby": "connection-title" },
    h("h1", { id: "connection-title" }, title),
    intro && h("p", {}, intro),
    refused && errorBox(refused),
    input("apiKey", "API key", c.apiKey, { type: "password" }, "A gateway key, or the key your scripts pass as the SDK's api_key."),
    h(
      "details",
      { open: Boolean(c.provider || c.providerKey || c.virtualKey) },
      h("summary", {}, "Provider (optional)"),
      h("p", { class: "hint" }, "Calls name this provider with Portkey's headers; the API key then travels as x-portkey-api-key."),
      h("p", {}, h("label", { for: "provider" }, "Provider"), provider),
      input("providerKey", "Provider API key", c.providerKey, { type: "password" }),
      input("virtualKey", "Virtual key", c.virtualKey),
    ),
    h("p", { class: "actions" }, h("button", { type: "submit" }, submitLabel)),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    saveConnection(Object.fromEntries(data.entries()));
    await onDone();
  });
  return form;
}

function showSignIn(refused) {
  signedIn = false;
  nav.hidden = true;
  main.replaceChildren(
    connectionForm({
      title: "Sign in",
      intro: "This gateway needs a key. It stays in this browser tab only.",
      submitLabel: "Sign in",
      refused,
      onDone: start,
    }),
  );
  main.querySelector("input").focus();
}

function connectionPage() {
  const signOut = h("button", { type: "button", class: "secondary" }, "Sign out");
  signOut.addEventListener("click", () => {
    forget();
    location.hash = "#/jobs";
    start();
  });
  main.replaceChildren(
    connectionForm({
      title: "Connection",
      intro: "What the console sends with each call. It is kept in this browser tab only and forgotten when the tab closes.",
      submitLabel: "Save",
      onDone: async () => {
        announce("Connection saved");
        await start();
      },
    }),
    h("p", {}, signOut),
  );
}

const ROUTES = [
  [/^#\/files$/, () => filesPage],
  [/^#\/jobs$/, () => jobsPage],
  [/^#\/jobs\/([^/?]+)$/, (m) => (root, signal) => jobPage(root, signal, decodeURIComponent(m[1]))],
  [/^#\/playground(\?.*)?$/, (m) => (root, signal) => playgroundPage(root, signal, new URLSearchParams((m[1] || "").slice(1)))],
  [/^#\/connection$/, () => connectionPage],
];

async function route() {
  if (!signedIn) return;
  leaving.abort();
  leaving = new AbortController();
  const hash = location.hash || "#/jobs";
  const found = ROUTES.map(([pattern, page]) => [hash.match(pattern), page]).find(([m]) => m);
  if (!found) {
    location.replace("#/jobs");
    return;
  }
  const [match, page] = found;
  for (const link of nav.querySelectorAll("a")) {
    const current = hash.startsWith(link.getAttribute("href"));
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const signal = leaving.signal;
  main.replaceChildren();
  try {
    await page(match)(main, signal);
  } catch (error) {
    if (signal.aborted) return;
    if (error instanceof ApiError && error.status === 401) {
      showSignIn(error);
      return;
    }
    main.append(errorBox(error));
  }
  const heading = main.querySelector("h1");
  if (heading) document.title = `${heading.textContent} · tunegate console`;
}

async function start() {
  let refused;
  try {
    refused = await check();
  } catch (error) {
    main.replaceChildren(errorBox(error));
    return;
  }
  if (refused) {
    showSignIn(connection().apiKey ? refused : null);
    return;
  }
  signedIn = true;
  nav.hidden = false;
  await route();
}

// Any page that meets a 401 later (a revoked or expired key) goes back to the sign-in form.
addEventListener("unauthorized", (event) => {
  if (signedIn) {
    leaving.abort();
    showSignIn(event.detail);
  }
});
// After a move to another page, focus goes to its content (a screen reader reads it from there).
addEventListener("hashchange", () => {
  route().then(() => main.focus());
});
start();
