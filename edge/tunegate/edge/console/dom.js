// Small DOM helpers: elements are built with `h`, never from HTML strings, so nothing a provider
// or a file name says can become markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function announce(message) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => (region.textContent = message), 50);
}

export function errorBox(error) {
  const box = h("p", { class: "error", role: "alert" });
  box.append(h("strong", {}, "Error: "), error.message || String(error));
  if (error.code) box.append(" ", h("code", {}, `(${error.code})`));
  return box;
}

export function when(seconds) {
  if (!seconds) return "—";
  return new Date(seconds * 1000).toLocaleString();
}

export function age(seconds) {
  if (!seconds) return "—";
  const s = Math.max(0, Math.round(Date.now() / 1000 - seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function timeEl(seconds, text) {
  if (!seconds) return "—";
  return h("time", { datetime: new Date(seconds * 1000).toISOString(), title: when(seconds) }, text ?? age(seconds));
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

// A status as words and a mark that does not rely on colour.
const MARKS = {
  succeeded: "✓",
  failed: "✗",
  cancelled: "⊘",
  running: "▶",
  paused: "❚❚",
  queued: "…",
  validating_files: "…",
};

export function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, h("span", { "aria-hidden": "true" }, MARKS[status] || "•"), " ", status);
}

export function fields(pairs) {
  const dl = h("dl", { class: "fields" });
  for (const [name, value] of pairs) {
    dl.append(h("dt", {}, name), h("dd", {}, value === null || value === undefined || value === "" ? "—" : value));
  }
  return dl;
}

export function table(caption, headings, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}
