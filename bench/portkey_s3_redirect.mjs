// Node preload for the Bedrock upload bench: sends Portkey's gateway's S3 calls to a local S3
// (moto) instead of AWS, without touching the gateway's code.
//
// Portkey's Bedrock file upload builds its S3 URLs itself, always
// `https://${bucket}.s3.${region}.amazonaws.com/${key}?…` (class of `initiateMultipartUpload`
// in build/start-server.js; neither AWS_ENDPOINT_DOMAIN nor x-portkey-custom-host reaches it), so
// this preload wraps the global `fetch` and rewrites exactly those URLs to path style on
// S3_REDIRECT_ENDPOINT (e.g. http://127.0.0.1:5000/${bucket}/${key}?…). Any other URL is left
// alone. The signature still names the AWS host; moto does not check signatures.
//
// With S3_REDIRECT_LOG set, one JSON line per S3 request goes to that file:
// {"method","query","status","body_bytes"} — how many parts and of what size.
//   node --import bind_loopback.mjs --import portkey_s3_redirect.mjs start-server.js …
import fs from "node:fs";

const ENDPOINT = (process.env.S3_REDIRECT_ENDPOINT || "").replace(/\/+$/, "");
const LOG = process.env.S3_REDIRECT_LOG || "";
const AWS_S3 = /^https:\/\/([a-z0-9.-]+)\.s3\.([a-z0-9-]+)\.amazonaws\.com\/(.*)$/;
const origFetch = globalThis.fetch;

if (ENDPOINT) {
  globalThis.fetch = async function (input, init) {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input?.url;
    const m = typeof url === "string" ? AWS_S3.exec(url) : null;
    if (!m) return origFetch(input, init);
    const target = `${ENDPOINT}/${m[1]}/${m[3]}`;
    const headers = new Headers(init?.headers || {});
    headers.delete("host");
    const res = await origFetch(target, { ...init, headers });
    if (LOG) {
      const body = init?.body;
      const n = body == null ? 0 : typeof body === "string" ? Buffer.byteLength(body) : body.byteLength ?? -1;
      const q = new URL(target).search;
      fs.appendFileSync(LOG, JSON.stringify({ method: init?.method || "GET", query: q, status: res.status, body_bytes: n }) + "\n");
    }
    return res;
  };
}
