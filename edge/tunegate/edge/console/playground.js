// The playground: chat with a tuned model through `POST /v1/chat/completions` (streamed), with
// a system prompt, temperature and max tokens — side by side with a second model (its base
// model, say) when one is named and its provider can serve it.

import { ApiError, call, events } from "./api.js";
import { announce, errorBox, h } from "./dom.js";

export async function playgroundPage(root, signal, params) {
  const models = await call("GET", "/models", { signal }).catch(() => ({ data: [] }));
  const names = models.data.map((m) => m.id);
  const tuned = names.filter((n) => n.startsWith("ft:"));
  const field = (id, label, control) => h("p", {}, h("label", { for: id }, label), control);
  const model = h("input", { id: "pg-model", name: "model", required: true, list: "pg-models", autocomplete: "off", value: params.get("model") || tuned[0] || "" });
  const compare = h("input", { id: "pg-compare", name: "compare", list: "pg-models", autocomplete: "off", value: params.get("compare") || "" });
  const system = h("textarea", { id: "pg-system", name: "system", rows: 2 });
  const temperature = h("input", { id: "pg-temperature", name: "temperature", type: "number", min: 0, max: 2, step: 0.1, value: 0, inputmode: "decimal" });
  const maxTokens = h("input", { id: "pg-max-tokens", name: "max_tokens", type: "number", min: 1, max: 4096, value: 64, inputmode: "numeric" });
  const message = h("textarea", { id: "pg-message", name: "message", rows: 3, required: true });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
  const clear = h("button", { type: "button", class: "secondary" }, "New conversation");
  const columns = h("div", { class: "columns", id: "pg-columns" });

  const form = h(
    "form",
    { class: "card", "aria-labelledby": "pg-title" },
    h("h1", { id: "pg-title" }, "Playground"),
    h("datalist", { id: "pg-models" }, names.map((n) => h("option", { value: n }))),
    h("div", { class: "grid2" }, field("pg-model", "Model", model), field("pg-compare", "Compare with (optional)", compare)),
    field("pg-system", "System prompt (optional)", system),
    h("div", { class: "grid2" }, field("pg-temperature", "Temperature", temperature), field("pg-max-tokens", "Max tokens", maxTokens)),
    field("pg-message", "Message", message),
    h("p", { class: "actions" }, send, " ", stop, " ", clear),
  );
  root.append(form, columns);

  let transcripts = [];
  let running = null;
  function reset() {
    running?.abort();
    const chosen = [model.value.trim(), compare.value.trim()].filter(Boolean);
    transcripts = chosen.map((name) => {
      const list = h("ol", { class: "transcript" });
      const section = h(
        "section",
        { class: "column", "aria-label": `Conversation with ${name}`, dataset: { model: name } },
        h("h2", {}, h("code", {}, name)),
        list,
      );
      return { name, messages: [], list, section };
    });
    columns.replaceChildren(...transcripts.map((t) => t.section));
  }
  clear.addEventListener("click", reset);
  model.addEventListener("change", reset);
  compare.addEventListener("change", reset);
  stop.addEventListener("click", () => running?.abort());
  signal.addEventListener("abort", () => running?.abort());
  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = message.value.trim();
    if (!text) return;
    if (!transcripts.length || transcripts[0].name !== model.value.trim()) reset();
    running = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    message.value = "";
    const settings = { temperature: Number(temperature.value), max_tokens: Number(maxTokens.value) };
    await Promise.all(transcripts.map((t) => ask(t, text, system.value.trim(), settings, running.signal)));
    send.disabled = false;
    stop.disabled = true;
    running = null;
    message.focus();
  });

  reset();
  if (!model.value) columns.replaceChildren(h("p", {}, "No fine-tuned model yet: once a job succeeds, its model is listed here."));
}

async function ask(transcript, text, system, settings, signal) {
  transcript.messages.push({ role: "user", content: text });
  transcript.list.append(h("li", { class: "turn user" }, h("span", { class: "who" }, "You"), h("p", {}, text)));
  const answer = h("p", { class: "answer", "aria-busy": "true" });
  const item = h("li", { class: "turn assistant" }, h("span", { class: "who" }, "Model"), answer);
  transcript.list.append(item);
  const messages = system ? [{ role: "system", content: system }, ...transcript.messages] : transcript.messages;
  let reply = "";
  let finish = null;
  try {
    const body = { model: transcript.name, messages, stream: true, ...settings };
    for await (const data of events("POST", "/chat/completions", { json: body, signal })) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(500, chunk.error);
      const choice = chunk.choices?.[0];
      const piece = choice?.delta?.content ?? choice?.message?.content ?? "";
      if (piece) {
        reply += piece;
        answer.textContent = reply;
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
    }
    transcript.messages.push({ role: "assistant", content: reply });
    if (!reply) answer.textContent = "(an empty answer)";
    if (finish === "length") item.append(h("p", { class: "hint" }, "Stopped at max tokens."));
    announce(`${transcript.name} answered`);
  } catch (error) {
    transcript.messages.pop();
    if (signal.aborted) {
      item.append(h("p", { class: "hint" }, "Stopped."));
    } else {
      item.append(errorBox(error));
    }
  } finally {
    answer.removeAttribute("aria-busy");
  }
}
