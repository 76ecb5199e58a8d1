// The gateway's REST API, as any client calls it. The credentials live in this tab only
// (sessionStorage): they are sent as headers and never stored anywhere else.

const STORE = "tunegate.console.connection";
const FIELDS = ["apiKey", "provider", "providerKey", "virtualKey"];

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = error?.code ?? null;
    this.param = error?.param ?? null;
  }
}

export function connection() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE) || "{}");
    return Object.fromEntries(FIELDS.map((k) => [k, typeof saved[k] === "string" ? saved[k] : ""]));
  } catch {
    return Object.fromEntries(FIELDS.map((k) => [k, ""]));
  }
}

export function saveConnection(values) {
  const clean = Object.fromEntries(FIELDS.map((k) => [k, (values[k] || "").trim()]));
  sessionStorage.setItem(STORE, JSON.stringify(clean));
}

export function forget() {
  sessionStorage.removeItem(STORE);
}

// The API key travels as the OpenAI SDK sends it (`Authorization: Bearer`), so the console sees
// what a script with the same key sees. Once provider credentials are given, `Authorization`
// carries the provider's key and the gateway key moves to `x-portkey-api-key`.
export function headers() {
  const c = connection();
  const out = {};
  const routed = c.provider || c.providerKey || c.virtualKey;
  if (routed) {
    if (c.apiKey) out["x-portkey-api-key"] = c.apiKey;
    if (c.provider) out["x-portkey-provider"] = c.provider;
    if (c.virtualKey) out["x-portkey-virtual-key"] = c.virtualKey;
    if (c.providerKey) out["Authorization"] = `Bearer ${c.providerKey}`;
  } else if (c.apiKey) {
    out["Authorization"] = `Bearer ${c.apiKey}`;
  }
  return out;
}

// A 401 anywhere (a revoked or expired key) is also announced to the page as an
// `unauthorized` event on `window`, so the console can ask for a key again.
function refused(status, error) {
  const failure = new ApiError(status, error);
  if (status === 401) dispatchEvent(new CustomEvent("unauthorized", { detail: failure }));
  return failure;
}

async function failure(response) {
  let error = null;
  try {
    error = (await response.json()).error;
  } catch {
    // not the JSON envelope (a proxy's page): the status says enough
  }
  return refused(response.status, error);
}

export async function call(method, path, { query, json, signal } = {}) {
  const url = new URL(`/v1${path}`, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(url, init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

// A stream of server-sent events: yields each event's `data` (the lines joined), stops at the
// end of the body. The caller stops early by aborting `signal`.
export async function* events(method, path, { json, query, signal } = {}) {
  const url = new URL(`/v1${path}`, location.origin);
  for (const [k, v] of Object.entries(query || {})) url.searchParams.set(k, v);
  const init = { method, headers: { ...headers(), Accept: "text/event-stream" }, signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(url, init);
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("Content-Type") || "";
  if (!type.startsWith("text/event-stream")) {
    yield JSON.stringify(await response.json());
    return;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""));
      if (data.length) yield data.join("\n");
    }
  }
}

// Files up to one part's size go up as one `POST /v1/files`; larger ones through the Uploads
// API (`POST /v1/uploads`, 64 MiB parts — the gateway's default `max_part_bytes` — then
// `complete`), which also passes the Files API's 512 MiB limit. An upload that fails or is
// stopped part-way is cancelled, so nothing half-uploaded stays behind.
export const PART_BYTES = 64 * 1024 * 1024;

// XHR, not fetch: only XHR reports upload progress. `onProgress(sentBytes)`.
function post(path, form, onProgress, control) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    control.abort = () => xhr.abort();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else reject(refused(xhr.status, xhr.response?.error));
    };
    xhr.onerror = () => reject(new ApiError(0, { message: "The upload failed: the connection was lost." }));
    xhr.onabort = () => reject(new ApiError(0, { message: "Upload cancelled." }));
    xhr.send(form);
  });
}

// Resolves to the file object; `abort()` on the returned handle stops it.
// `onProgress(sentBytes, totalBytes)`.
export function upload(file, purpose, onProgress) {
  const control = { stopped: false, abort: () => {} };
  const stop = () => {
    control.stopped = true;
    control.abort();
  };
  const single = async () => {
    const form = new FormData();
    form.append("purpose", purpose);
    form.append("file", file, file.name);
    return post("/v1/files", form, (sent) => onProgress(Math.min(sent, file.size), file.size), control);
  };
  const inParts = async () => {
    const mime = file.type || "text/jsonl";
    const created = await call("POST", "/uploads", { json: { filename: file.name, purpose, bytes: file.size, mime_type: mime } });
    const path = `/v1/uploads/${encodeURIComponent(created.id)}`;
    try {
      const parts = [];
      for (let start = 0; start < file.size; start += PART_BYTES) {
        if (control.stopped) throw new ApiError(0, { message: "Upload cancelled." });
        const form = new FormData();
        form.append("data", file.slice(start, start + PART_BYTES), file.name);
        const part = await post(`${path}/parts`, form, (sent) => onProgress(Math.min(start + sent, file.size), file.size), control);
        parts.push(part.id);
      }
      const done = await call("POST", `/uploads/${encodeURIComponent(created.id)}/complete`, { json: { part_ids: parts } });
      return done.file;
    } catch (error) {
      await call("POST", `/uploads/${encodeURIComponent(created.id)}/cancel`).catch(() => {});
      throw error;
    }
  };
  return { done: file.size > PART_BYTES ? inParts() : single(), abort: stop };
}

// A file's content, handed to the browser as a download (a link cannot carry the headers).
export async function download(fileId, filename) {
  const response = await fetch(new URL(`/v1/files/${encodeURIComponent(fileId)}/content`, location.origin), {
    headers: headers(),
  });
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename || fileId;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

export async function text(fileId) {
  const response = await fetch(new URL(`/v1/files/${encodeURIComponent(fileId)}/content`, location.origin), {
    headers: headers(),
  });
  if (!response.ok) throw await failure(response);
  return response.text();
}
