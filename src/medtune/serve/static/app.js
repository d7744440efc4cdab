// medtune web chat: streams replies from /v1/chat/completions. Model output is only ever set as textContent,
// so a reply holding HTML (<script>, <img onerror>) is shown as characters and never runs.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { messages: [], key: sessionStorage.getItem("medtune-api-key") || "", controller: null };

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.key) h.Authorization = "Bearer " + state.key;
  return h;
}

function setStatus(text) { $("status").textContent = text; }

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function loadCard() {
  const health = await (await fetch("/health")).json();
  $("auth").hidden = !health.auth_required;
  const r = await fetch("/v1/models", { headers: headers() });
  if (r.status === 401) {
    $("card").replaceChildren(el("span", "muted", "enter the API key to see the model card"));
    setStatus("this server needs an API key");
    return;
  }
  const m = (await r.json()).data[0];
  const stages = m.stages.map((s) => s.stage).join(" → ") || "no medtune stages";
  const metrics = Object.entries(m.metrics || {}).map(([k, v]) => `${k} ${typeof v === "number" ? +v.toFixed(4) : v}`);
  $("card").replaceChildren(
    el("strong", "model-id", m.id), document.createTextNode(" · base "), el("span", "base", m.base_model),
    document.createTextNode(" · "), el("span", "stages", stages),
    ...(metrics.length ? [document.createTextNode(" · "), el("span", "metrics", metrics.join(", "))] : []));
  $("max-tokens").max = m.max_tokens;
  if (+$("max-tokens").value > m.max_tokens) $("max-tokens").value = m.max_tokens;
  setStatus("ready");
}

function addMessage(role, text) {
  const box = el("div", "msg " + role);
  const body = el("div", "text", text);
  box.append(el("span", "who", role === "user" ? "you" : "model"), body);
  $("log").append(box);
  box.scrollIntoView({ block: "end" });
  return box;
}

// Server-sent events: "data: <json>\n\n" blocks, ending with "data: [DONE]".
async function* sseChunks(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function send(text) {
  state.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const box = addMessage("assistant", "");
  const out = box.querySelector(".text");
  box.classList.add("streaming");
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  setStatus("generating…");
  let reply = "";
  let finish = null;
  try {
    const body = { messages: state.messages, stream: true, temperature: +$("temperature").value,
                   max_tokens: +$("max-tokens").value };
    const r = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body),
                                                    signal: controller.signal });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      throw new Error((e.error && e.error.message) || `HTTP ${r.status}`);
    }
    for await (const chunk of sseChunks(r)) {
      if (chunk.error) throw new Error(chunk.error.message);
      for (const choice of chunk.choices) {
        if (choice.delta && choice.delta.content) {
          reply += choice.delta.content;
          out.textContent = reply;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    if (finish === "length") box.append(el("span", "end", "(cut at the token limit)"));
    setStatus("ready");
  } catch (err) {
    if (err.name === "AbortError") {
      finish = "stopped";
      box.append(el("span", "end", "(stopped)"));
      setStatus("stopped");
    } else {
      finish = "error";
      box.append(el("span", "end", "error: " + err.message));
      setStatus("error");
    }
  } finally {
    box.classList.remove("streaming");
    box.dataset.finish = finish || "stop";
    if (reply) state.messages.push({ role: "assistant", content: reply });
    else state.messages.pop();  // nothing came back: the question may be asked again
    state.controller = null;
    setBusy(false);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || state.controller) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("reset").addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    state.messages = [];
    $("log").replaceChildren();
  });
  $("use-key").addEventListener("click", () => {
    state.key = $("api-key").value.trim();
    sessionStorage.setItem("medtune-api-key", state.key);
    loadCard().catch((err) => setStatus("error: " + err.message));
  });
  loadCard().catch((err) => setStatus("error: " + err.message));
});
