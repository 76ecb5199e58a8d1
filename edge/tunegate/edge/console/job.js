// One job: its fields and hyperparameters, its events as they happen (the watch stream,
// `GET …/events?stream=true`), the loss chart, checkpoints, result files, and cancel / pause /
// resume.

import { ApiError, call, download, events, text } from "./api.js";
import { metricsView } from "./chart.js";
import { announce, bytes, errorBox, fields, h, statusBadge, table, timeEl, when } from "./dom.js";

const ACTIVE = ["validating_files", "queued", "running", "paused"];
const TERMINAL = ["succeeded", "failed", "cancelled"];
const RETRY_MS = 3000;

// Metric names as events, checkpoints and result files spell them → the chart's keys.
const METRIC_KEYS = {
  train_loss: "train_loss",
  valid_loss: "valid_loss",
  full_valid_loss: "valid_loss",
  train_accuracy: "train_accuracy",
  train_mean_token_accuracy: "train_accuracy",
  valid_accuracy: "valid_accuracy",
  valid_mean_token_accuracy: "valid_accuracy",
  full_valid_mean_token_accuracy: "valid_accuracy",
};

export async function jobPage(root, signal, jobId) {
  const path = `/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
  let job = await call("GET", path, { signal });
  const rows = new Map();
  const seen = new Set();
  let lastEvent = null;

  const heading = h("h1", {}, "Job ", h("code", {}, job.id));
  const status = h("p", { class: "job-status", "aria-live": "polite" });
  const actions = h("p", { class: "actions" });
  const actionError = h("div");
  const summary = h("section", { "aria-labelledby": "fields-title" });
  const chartBox = h("div", { id: "chart" }, h("p", { class: "hint" }, "The chart appears with the first training metrics."));
  const eventList = h("ol", { id: "events", class: "events" });
  const eventCount = h("span", { class: "hint" });
  const streamState = h("p", { class: "hint", id: "stream-state" });
  const checkpoints = h("div", { id: "checkpoints" });
  const results = h("div", { id: "result-files" });

  root.append(
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    heading,
    status,
    actions,
    actionError,
    summary,
    h("section", { "aria-labelledby": "chart-title" }, h("h2", { id: "chart-title" }, "Training metrics"), chartBox),
    h(
      "section",
      { "aria-labelledby": "events-title" },
      h("h2", { id: "events-title" }, "Events ", eventCount),
      streamState,
      h("div", { class: "events-box", tabindex: "0", role: "region", "aria-label": "Events, oldest first" }, eventList),
    ),
    h("section", { "aria-labelledby": "checkpoints-title" }, h("h2", { id: "checkpoints-title" }, "Checkpoints"), checkpoints),
    h("section", { "aria-labelledby": "results-title" }, h("h2", { id: "results-title" }, "Result files"), results),
  );

  function showJob() {
    status.replaceChildren("Status: ", statusBadge(job.status), job.error?.message ? ` — ${job.error.message}` : "");
    root.dataset.status = job.status;
    actions.replaceChildren(...jobActions());
    const hp = job.hyperparameters || job.method?.supervised?.hyperparameters || job.method?.dpo?.hyperparameters || {};
    const tuned = job.fine_tuned_model
      ? h(
          "span",
          {},
          h("code", {}, job.fine_tuned_model),
          " ",
          h("a", { href: `#/playground?model=${encodeURIComponent(job.fine_tuned_model)}&compare=${encodeURIComponent(job.model)}` }, "Try it in the playground"),
        )
      : null;
    summary.replaceChildren(
      h("h2", { id: "fields-title" }, "Details"),
      fields([
        ["Provider", job.provider],
        ["Base model", job.model],
        ["Fine-tuned model", tuned],
        ["Method", job.method?.type || "supervised"],
        ["Created", job.created_at ? when(job.created_at) : null],
        ["Finished", job.finished_at ? when(job.finished_at) : null],
        ["Estimated finish", job.estimated_finish ? when(job.estimated_finish) : null],
        ["Trained tokens", job.trained_tokens ?? null],
        ["Training file", h("code", {}, job.training_file)],
        ["Validation file", job.validation_file ? h("code", {}, job.validation_file) : null],
        ["Suffix", job.user_provided_suffix],
        ["Seed", String(job.seed ?? "")],
      ]),
      h("h3", {}, "Hyperparameters"),
      fields(Object.entries(hp).map(([k, v]) => [k, String(v)])),
    );
  }

  function jobActions() {
    const act = (label, verb, cls) =>
      h("button", {
        type: "button",
        class: cls,
        onclick: async (event) => {
          if (verb === "cancel" && !confirm(`Cancel job ${job.id}?`)) return;
          event.target.disabled = true;
          actionError.replaceChildren();
          try {
            job = await call("POST", `${path}/${verb}`);
            announce(`Job ${job.status}`);
            showJob();
          } catch (error) {
            actionError.replaceChildren(errorBox(error));
            event.target.disabled = false;
          }
        },
      }, label);
    const out = [];
    if (job.status === "running") out.push(act("Pause", "pause", "secondary"));
    if (job.status === "paused") out.push(act("Resume", "resume", "secondary"));
    if (ACTIVE.includes(job.status)) out.push(act("Cancel job", "cancel", "danger"));
    return out;
  }

  function addMetrics(step, values) {
    if (!Number.isFinite(step)) return;
    const row = rows.get(step) || {};
    for (const [name, key] of Object.entries(METRIC_KEYS)) {
      const v = Number(values[name]);
      if (values[name] !== undefined && values[name] !== null && values[name] !== "" && Number.isFinite(v)) row[key] = v;
    }
    rows.set(step, row);
  }

  let drawing = 0;
  function drawChart() {
    if (drawing) return;
    drawing = requestAnimationFrame(() => {
      drawing = 0;
      if (!rows.size) return;
      chartBox.replaceChildren(metricsView(rows, Math.max(280, chartBox.clientWidth)));
    });
  }
  const onResize = () => drawChart();
  addEventListener("resize", onResize);
  signal.addEventListener("abort", () => removeEventListener("resize", onResize));

  function addEvent(event) {
    if (seen.has(event.id)) return;
    seen.add(event.id);
    lastEvent = event.id;
    eventList.append(
      h("li", { class: `level-${event.level}` }, timeEl(event.created_at, new Date(event.created_at * 1000).toLocaleTimeString()), " ", event.level === "info" ? "" : h("strong", {}, `${event.level}: `), event.message),
    );
    eventCount.textContent = `(${seen.size})`;
    const box = eventList.parentElement;
    box.scrollTop = box.scrollHeight;
    if (event.type === "metrics" && event.data) {
      addMetrics(Number(event.data.step), event.data);
      drawChart();
    }
  }

  async function loadCheckpoints() {
    const page = await call("GET", `${path}/checkpoints`, { query: { limit: 100 }, signal });
    for (const c of page.data) addMetrics(Number(c.step_number), c.metrics || {});
    if (!page.data.length) {
      checkpoints.replaceChildren(h("p", {}, "No checkpoints yet."));
      return;
    }
    const rowsHtml = [...page.data]
      .sort((a, b) => a.step_number - b.step_number)
      .map((c) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, String(c.step_number)),
          h("td", {}, timeEl(c.created_at)),
          h("td", {}, fmtMetric(c.metrics?.train_loss)),
          h("td", {}, fmtMetric(c.metrics?.valid_loss ?? c.metrics?.full_valid_loss)),
          h("td", {}, h("code", {}, c.fine_tuned_model_checkpoint)),
        ),
      );
    checkpoints.replaceChildren(table("Checkpoints by step", ["Step", "Created", "Training loss", "Validation loss", "Model"], rowsHtml));
    drawChart();
  }

  async function loadResults() {
    if (!job.result_files?.length) {
      results.replaceChildren(h("p", {}, TERMINAL.includes(job.status) ? "This job produced no result files." : "Result files appear when the job finishes."));
      return;
    }
    const items = [];
    for (const id of job.result_files) {
      let file = { id, filename: id };
      try {
        file = await call("GET", `/files/${encodeURIComponent(id)}`, { signal });
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) throw error;
      }
      const failed = h("span");
      items.push(
        h(
          "li",
          {},
          h("span", {}, file.filename), " ", h("code", {}, id), " ", file.bytes ? `(${bytes(file.bytes)}) ` : "",
          h("button", { type: "button", class: "secondary", onclick: () => download(id, file.filename).catch((e) => failed.replaceChildren(errorBox(e))) }, `Download ${file.filename}`),
          failed,
        ),
      );
      if (/\.csv$/i.test(file.filename)) readCsv(await text(id));
    }
    results.replaceChildren(h("ul", { class: "plain" }, items));
    drawChart();
  }

  function readCsv(body) {
    const lines = body.trim().split(/\r?\n/);
    const names = (lines.shift() || "").split(",").map((s) => s.trim());
    if (!names.includes("step")) return;
    for (const line of lines) {
      const values = Object.fromEntries(line.split(",").map((v, i) => [names[i], v.trim()]));
      addMetrics(Number(values.step), values);
    }
  }

  async function finished() {
    streamState.textContent = `The job is ${job.status}; no more events will come.`;
    await Promise.all([loadCheckpoints(), loadResults()]);
  }

  async function watch() {
    for (;;) {
      streamState.textContent = "Following the job live…";
      let error = null;
      let terminal = false;
      try {
        const query = { stream: "true", ...(lastEvent ? { after: lastEvent } : {}) };
        for await (const data of events("GET", `${path}/events`, { query, signal })) {
          if (data === "[DONE]") break;
          const item = JSON.parse(data);
          if (item.error) throw new ApiError(500, item.error);
          if (item.object === "fine_tuning.job") {
            const changed = item.status !== job.status;
            job = item;
            showJob();
            if (changed && item.status === "running") loadCheckpoints().catch(() => {});
            terminal = TERMINAL.includes(job.status);
          } else if (item.object === "fine_tuning.job.event") {
            addEvent(item);
            if (/checkpoint/i.test(item.message)) loadCheckpoints().catch(() => {});
          }
        }
      } catch (e) {
        error = e;
      }
      if (signal.aborted) return;
      if (terminal) return finished();
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) throw error;
      // The stream ended without a finished job (a timeout, a restart): follow it again.
      streamState.replaceChildren(error ? errorBox(error) : "", ` Reconnecting in ${RETRY_MS / 1000} s…`);
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      if (signal.aborted) return;
    }
  }

  showJob();
  await loadCheckpoints();
  // The page is ready; following the job goes on until it finishes or the user leaves.
  watch().catch((error) => {
    if (!signal.aborted) streamState.replaceChildren(errorBox(error));
  });
}

function fmtMetric(v) {
  return Number.isFinite(Number(v)) && v !== null && v !== undefined ? Number(v).toFixed(4) : "—";
}
