// Node preload for the Fireworks upload bench: sends Portkey's gateway's Fireworks calls to the
// local fake (tests/fakes/fireworks_upstream.py) instead of api.fireworks.ai, without touching the
// gateway's code, and logs what it sent.
//
// Portkey's Fireworks provider builds its base URL itself, always
// `https://api.fireworks.ai/v1/accounts/${fireworksAccountId}` (`getBaseURL` of the Fireworks
// provider config in build/start-server.js; x-portkey-custom-host is not read by its `uploadFile`
// request handler), so this preload wraps the global `fetch` and rewrites exactly that origin to
// FIREWORKS_REDIRECT_ENDPOINT (e.g. http://127.0.0.1:5000). The signed upload URL the fake hands
// out already points at the fake and is left as it is.
//
// FIREWORKS_REDIRECT_MODE:
//   as-is    (default) nothing but the origin is changed.
//   lenient  also what a strict reading of the API refuses but Fireworks may take, to see how far
//            the upload then gets: its JSON bodies get `Content-Type: application/json` (Portkey
//            sends none, so fetch labels them text/plain), `crypto.randomUUID()` (Portkey's dataset
//            id) starts with a letter (Fireworks dataset ids must; a v4 UUID starts with a digit
//            10 times in 16), and `filenameToSize` values are sent as strings (the API's
//            int64-as-string; proto3 JSON parsers also take a number).
//   sized    lenient, and the signed-URL PUT is made the way the API wants it: FIREWORKS_REDIRECT_SIZE
//            (the file's real size) in `filenameToSize`, `Content-Length` and
//            `x-goog-content-length-range`, instead of Portkey's guess.
//
// With FIREWORKS_REDIRECT_LOG set, one JSON line per Fireworks request goes to that file:
// {"method","path","status","t_start","t_end"} plus, for getUploadEndpoint, the size Portkey
// declared; for the PUT, the bytes of the body Portkey streamed and how many U+FFFD (EF BF BD)
// it contained; for an error answer, its first 500 characters.
//   node --import bind_loopback.mjs --import portkey_fireworks_redirect.mjs start-server.js …
import fs from "node:fs";

const ENDPOINT = (process.env.FIREWORKS_REDIRECT_ENDPOINT || "").replace(/\/+$/, "");
const LOG = process.env.FIREWORKS_REDIRECT_LOG || "";
const MODE = process.env.FIREWORKS_REDIRECT_MODE || "as-is";
const SIZE = process.env.FIREWORKS_REDIRECT_SIZE || "";
const API = /^https:\/\/api\.fireworks\.ai(\/.*)$/;
const FFFD = Buffer.from([0xef, 0xbf, 0xbd]);
const origFetch = globalThis.fetch;

function log(entry) {
  if (LOG) fs.appendFileSync(LOG, JSON.stringify(entry) + "\n");
}

function counted(body, stats) {
  return body.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        stats.body_bytes += buf.length;
        for (let i = buf.indexOf(FFFD); i !== -1; i = buf.indexOf(FFFD, i + 3)) stats.fffd += 1;
        controller.enqueue(chunk);
      },
    }),
  );
}

if (ENDPOINT && MODE !== "as-is") {
  const proto = Object.getPrototypeOf(globalThis.crypto);
  const orig = proto.randomUUID;
  Object.defineProperty(proto, "randomUUID", {
    configurable: true,
    writable: true,
    value: function () {
      const id = orig.call(this);
      return /^[0-9]/.test(id) ? "abcdefghij"[Number(id[0])] + id.slice(1) : id;
    },
  });
}

if (ENDPOINT) {
  globalThis.fetch = async function (input, init) {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input?.url;
    const api = typeof url === "string" ? API.exec(url) : null;
    const signed = typeof url === "string" && url.startsWith(ENDPOINT + "/signed-upload/");
    if (!api && !signed) return origFetch(input, init);
    const target = api ? ENDPOINT + api[1] : url;
    const entry = { method: init?.method || "GET", path: new URL(target).pathname, t_start: Date.now() };
    let next = { ...init };
    if (api && MODE !== "as-is" && typeof init?.body === "string") {
      const headers = new Headers(init?.headers || {});
      if (!headers.has("content-type")) headers.set("content-type", "application/json");
      next.headers = headers;
    }
    if (api && target.endsWith(":getUploadEndpoint") && typeof init?.body === "string") {
      const body = JSON.parse(init.body);
      entry.declared = { ...body.filenameToSize };
      if (MODE !== "as-is") {
        for (const name of Object.keys(body.filenameToSize)) {
          body.filenameToSize[name] = MODE === "sized" ? String(SIZE) : String(body.filenameToSize[name]);
        }
        next.body = JSON.stringify(body);
        entry.sent = body.filenameToSize;
      }
    }
    let stats = null;
    if (signed) {
      stats = { body_bytes: 0, fffd: 0 };
      const headers = new Headers(init?.headers || {});
      if (MODE === "sized") {
        headers.set("content-length", String(SIZE));
        headers.set("x-goog-content-length-range", `${SIZE},${SIZE}`);
      }
      entry.headers = Object.fromEntries(headers);
      next = { ...next, headers, body: init?.body ? counted(init.body, stats) : init?.body };
    }
    let res;
    try {
      res = await origFetch(target, next);
    } catch (err) {
      log({ ...entry, ...stats, t_end: Date.now(), error: String(err?.cause || err) });
      throw err;
    }
    entry.status = res.status;
    if (!res.ok) entry.answer = (await res.clone().text()).slice(0, 500);
    // For the PUT: the bytes streamed until its answer came (all of them unless it was refused).
    log({ ...entry, ...stats, t_end: Date.now() });
    return res;
  };
}
