// Files: upload (with progress), list, download, delete.

import { call, download, upload } from "./api.js";
import { announce, bytes, errorBox, h, table, timeEl } from "./dom.js";

const PURPOSES = ["fine-tune", "batch", "assistants", "vision", "user_data", "evals"];

export async function filesPage(root, signal) {
  const list = h("div", { id: "file-list" });
  root.append(h("h1", {}, "Files"), uploadForm(() => refresh()), h("h2", {}, "Your files"), list);

  let after = null;
  async function refresh(more = false) {
    if (!more) after = null;
    const page = await call("GET", "/files", { query: { limit: 100, after }, signal });
    const rows = page.data.map((file) => fileRow(file, refresh));
    const body = more && list.querySelector("tbody");
    if (body) body.append(...rows);
    else if (!page.data.length) list.replaceChildren(h("p", {}, "No files yet. Upload a JSONL training file above."));
    else list.replaceChildren(table("Files, newest first", ["File", "Purpose", "Size", "Uploaded", "Status", "Actions"], rows));
    list.querySelector(".more")?.remove();
    if (page.has_more && page.data.length) {
      after = page.data[page.data.length - 1].id;
      list.append(h("p", { class: "more" }, h("button", { type: "button", onclick: () => refresh(true) }, "Load more")));
    }
  }
  await refresh();
}

function fileRow(file, refresh) {
  const actions = h("td", { class: "row-actions" });
  const failed = h("span");
  actions.append(
    h("button", {
      type: "button",
      class: "secondary",
      "aria-label": `Download ${file.filename}`,
      onclick: () => download(file.id, file.filename).catch((e) => failed.replaceChildren(errorBox(e))),
    }, "Download"),
    h("button", {
      type: "button",
      class: "danger",
      "aria-label": `Delete ${file.filename}`,
      onclick: async () => {
        if (!confirm(`Delete ${file.filename} (${file.id})? This cannot be undone.`)) return;
        try {
          await call("DELETE", `/files/${encodeURIComponent(file.id)}`);
          announce(`Deleted ${file.filename}`);
          await refresh();
        } catch (error) {
          failed.replaceChildren(errorBox(error));
        }
      },
    }, "Delete"),
    failed,
  );
  return h(
    "tr",
    { dataset: { id: file.id } },
    h("th", { scope: "row" }, h("span", { class: "name" }, file.filename), h("br"), h("code", { class: "id" }, file.id)),
    h("td", {}, file.purpose),
    h("td", {}, bytes(file.bytes)),
    h("td", {}, timeEl(file.created_at)),
    h("td", {}, file.status || "—"),
    actions,
  );
}

function uploadForm(onUploaded) {
  const chooser = h("input", { type: "file", id: "upload-file", name: "file", required: true, accept: ".jsonl,.json,.csv,.txt" });
  const purpose = h(
    "select",
    { id: "upload-purpose", name: "purpose" },
    PURPOSES.map((p) => h("option", { value: p }, p)),
  );
  const bar = h("progress", { id: "upload-progress", max: 100, value: 0, "aria-label": "Upload progress" });
  const label = h("span", { class: "progress-text" });
  const progress = h("p", { class: "progress", hidden: true }, bar, " ", label);
  const outcome = h("div", { "aria-live": "polite" });
  const send = h("button", { type: "submit" }, "Upload");
  const stop = h("button", { type: "button", class: "secondary", hidden: true }, "Cancel upload");
  let running = null;
  stop.addEventListener("click", () => running?.abort());

  const form = h(
    "form",
    { class: "card", "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Upload a file"),
    h("p", {}, h("label", { for: "upload-file" }, "File"), chooser),
    h("p", {}, h("label", { for: "upload-purpose" }, "Purpose"), purpose),
    h("p", { class: "actions" }, send, " ", stop),
    progress,
    outcome,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = chooser.files[0];
    if (!file) return;
    send.disabled = true;
    stop.hidden = false;
    progress.hidden = false;
    outcome.replaceChildren();
    running = upload(file, purpose.value, (sent, total) => {
      const percent = total ? Math.floor((sent / total) * 100) : 0;
      bar.value = percent;
      label.textContent = `${percent}% · ${bytes(sent)} of ${bytes(total)}`;
    });
    try {
      const created = await running.done;
      bar.value = 100;
      label.textContent = "100%";
      outcome.replaceChildren(h("p", { class: "ok" }, `Uploaded ${created.filename} as `, h("code", {}, created.id), "."));
      announce(`Uploaded ${created.filename}`);
      form.reset();
      await onUploaded();
    } catch (error) {
      outcome.replaceChildren(errorBox(error));
    } finally {
      running = null;
      send.disabled = false;
      stop.hidden = true;
    }
  });
  return form;
}
