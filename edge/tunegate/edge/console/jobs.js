// Jobs: start one, list them with status, provider, base model and age, filter by status and
// provider. The list refreshes itself every few seconds while the page is open.

import { call, connection } from "./api.js";
import { errorBox, h, statusBadge, table, timeEl } from "./dom.js";

const STATUSES = ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
const REFRESH_MS = 5000;

export async function jobsPage(root, signal) {
  const statusFilter = h("select", { id: "filter-status" }, h("option", { value: "" }, "Any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  const providerFilter = h("select", { id: "filter-provider" }, h("option", { value: "" }, "Any provider"));
  const list = h("div", { id: "job-list", "aria-live": "off" });
  const refreshError = h("div");
  const filters = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs", onsubmit: (e) => e.preventDefault() },
    h("p", {}, h("label", { for: "filter-status" }, "Status"), statusFilter),
    h("p", {}, h("label", { for: "filter-provider" }, "Provider"), providerFilter),
  );
  root.append(h("h1", {}, "Fine-tuning jobs"), await createForm(signal), h("h2", {}, "Jobs"), filters, refreshError, list);

  let jobs = [];
  let hasMore = false;
  let known = "";
  function render() {
    const providers = [...new Set(jobs.map((j) => j.provider).filter(Boolean))].sort();
    if (providers.join() !== known) {
      known = providers.join();
      const chosen = providerFilter.value;
      providerFilter.replaceChildren(
        h("option", { value: "" }, "Any provider"),
        ...providers.map((p) => h("option", { value: p, selected: p === chosen }, p)),
      );
    }
    // The rows are rebuilt on each refresh: keep the keyboard focus on the job it was on.
    const focused = document.activeElement?.closest?.("#job-list tr")?.dataset.id;
    const shown = jobs.filter(
      (j) => (!statusFilter.value || j.status === statusFilter.value) && (!providerFilter.value || j.provider === providerFilter.value),
    );
    const rows = shown.map((job) =>
      h(
        "tr",
        { dataset: { id: job.id } },
        h("th", { scope: "row" }, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id), job.user_provided_suffix ? h("span", { class: "hint" }, ` ${job.user_provided_suffix}`) : null),
        h("td", {}, statusBadge(job.status)),
        h("td", {}, job.provider || "—"),
        h("td", {}, job.model),
        h("td", {}, timeEl(job.created_at)),
      ),
    );
    const count = `${shown.length} of ${jobs.length} job${jobs.length === 1 ? "" : "s"}${hasMore ? " loaded" : ""}`;
    const parts = [h("p", { class: "hint" }, count)];
    if (shown.length) parts.push(table("Fine-tuning jobs, newest first", ["Job", "Status", "Provider", "Base model", "Created"], rows));
    else parts.push(h("p", {}, jobs.length ? "No job matches these filters." : "No jobs yet: start one above."));
    if (hasMore) parts.push(h("p", {}, h("button", { type: "button", onclick: () => load(jobs[jobs.length - 1].id) }, "Load more")));
    list.replaceChildren(...parts);
    if (focused) list.querySelector(`tr[data-id="${CSS.escape(focused)}"] a`)?.focus();
  }
  async function load(after) {
    const page = await call("GET", "/fine_tuning/jobs", { query: { limit: 50, after }, signal });
    if (after) {
      jobs = jobs.concat(page.data);
      hasMore = page.has_more;
    } else {
      // A refresh replaces the first page and keeps what "Load more" added beyond it.
      const ids = new Set(page.data.map((j) => j.id));
      const older = jobs.slice(page.data.length).filter((j) => !ids.has(j.id));
      jobs = page.data.concat(older);
      if (!older.length) hasMore = page.has_more;
    }
    render();
  }
  statusFilter.addEventListener("change", render);
  providerFilter.addEventListener("change", render);
  await load();
  const refresh = () =>
    load().then(
      () => refreshError.replaceChildren(),
      (error) => signal.aborted || refreshError.replaceChildren(errorBox(error)),
    );
  const timer = setInterval(refresh, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}

async function createForm(signal) {
  const [files, models] = await Promise.all([
    call("GET", "/files", { query: { purpose: "fine-tune", limit: 100 }, signal }),
    call("GET", "/models", { signal }).catch(() => ({ data: [] })),
  ]);
  const trainable = files.data.filter((f) => f.purpose === "fine-tune");
  const fileOptions = (empty) => [h("option", { value: "" }, empty), trainable.map((f) => h("option", { value: f.id }, `${f.filename} (${f.id})`))];
  const field = (id, label, control, hint) => {
    if (hint) control.setAttribute("aria-describedby", `${id}-hint`);
    return h("p", {}, h("label", { for: id }, label), control, hint ? h("span", { class: "hint", id: `${id}-hint` }, hint) : null);
  };
  const model = h("input", { id: "job-model", name: "model", required: true, list: "model-names", value: "tunegate-tiny", autocomplete: "off" });
  const modelNames = h("datalist", { id: "model-names" }, models.data.filter((m) => !m.id.startsWith("ft:")).map((m) => h("option", { value: m.id })));
  const training = h("select", { id: "job-training", name: "training_file", required: true }, fileOptions("Choose a training file"));
  const validation = h("select", { id: "job-validation", name: "validation_file" }, fileOptions("None"));
  const suffix = h("input", { id: "job-suffix", name: "suffix", maxlength: 64, autocomplete: "off" });
  const epochs = h("input", { id: "job-epochs", name: "n_epochs", type: "number", min: 1, inputmode: "numeric", placeholder: "auto" });
  const outcome = h("div", { "aria-live": "polite" });
  const provider = connection().provider || "the default provider";
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "create-title" },
    h("h2", { id: "create-title" }, "Start a job"),
    h("p", { class: "hint" }, `Runs on ${provider} (set in Connection).`),
    field("job-model", "Base model", model),
    modelNames,
    field("job-training", "Training file", training, trainable.length ? null : "Upload a fine-tune file first (Files)."),
    field("job-validation", "Validation file (optional)", validation),
    field("job-suffix", "Suffix (optional)", suffix),
    field("job-epochs", "Epochs (optional)", epochs),
    h("p", { class: "actions" }, h("button", { type: "submit" }, "Start job")),
    outcome,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { model: model.value.trim(), training_file: training.value };
    if (validation.value) body.validation_file = validation.value;
    if (suffix.value.trim()) body.suffix = suffix.value.trim();
    if (epochs.value) body.hyperparameters = { n_epochs: Number(epochs.value) };
    form.querySelector("button[type=submit]").disabled = true;
    try {
      const job = await call("POST", "/fine_tuning/jobs", { json: body });
      location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
    } catch (error) {
      outcome.replaceChildren(errorBox(error));
      form.querySelector("button[type=submit]").disabled = false;
    }
  });
  return form;
}
