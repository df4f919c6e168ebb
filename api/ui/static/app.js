// corral web UI. Everything model-supplied is inserted with textContent, never as HTML.
"use strict";

const csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";

function post(url, body) {
  return fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
}

async function errorText(resp) {
  try { return (await resp.json()).error || resp.statusText; } catch (e) { return resp.statusText; }
}

// Read an NDJSON body, calling onItem for every object.
async function eachLine(resp, onItem) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line) onItem(JSON.parse(line));
    }
  }
  if (buffered.trim()) onItem(JSON.parse(buffered));
}

function setStatus(form, text, isError) {
  const el = (form.parentElement || document).querySelector("[data-status]");
  if (!el) return;
  el.textContent = text;
  el.classList.toggle("error", !!isError);
}

function modelPage(name) { return "/ui/model/" + encodeURIComponent(name).replace(/%2F/g, "/"); }

const actions = {
  async delete(form) {
    const resp = await post("/ui/api/delete", { model: form.dataset.model });
    if (resp.ok) { window.location.assign("/ui/"); return; }
    setStatus(form, await errorText(resp), true);
  },
  async copy(form) {
    const destination = form.elements.destination.value;
    const resp = await post("/ui/api/copy", { source: form.dataset.model, destination });
    if (resp.ok) { window.location.assign(modelPage(destination)); return; }
    setStatus(form, await errorText(resp), true);
  },
  async pull(form) {
    const bar = document.getElementById("pull-progress");
    const percent = document.getElementById("pull-percent");
    const layers = new Map();
    const show = (value) => { bar.value = value; percent.textContent = Math.floor(value) + "%"; };
    show(0);
    setStatus(form, "starting", false);
    const resp = await post("/ui/api/pull", {
      model: form.elements.model.value, insecure: form.elements.insecure.checked, stream: true,
    });
    if (!resp.ok) { setStatus(form, await errorText(resp), true); return; }
    let failed = false;
    await eachLine(resp, (item) => {
      if (item.error) { failed = true; setStatus(form, item.error, true); return; }
      if (item.digest && item.total) layers.set(item.digest, [item.completed || 0, item.total]);
      let done = 0, total = 0;
      for (const [c, t] of layers.values()) { done += c; total += t; }
      if (total) show(Math.min(100, (100 * done) / total));
      if (item.status === "success") show(100);
      setStatus(form, item.status || "", false);
    });
    if (!failed) setStatus(form, "success", false);
  },
  async chat(form) {
    const log = document.getElementById("chat-log");
    const model = form.elements.model.value;
    const prompt = form.elements.prompt.value;
    const history = JSON.parse(log.dataset.history || "[]");
    history.push({ role: "user", content: prompt });
    const you = document.createElement("div");
    you.className = "user";
    you.textContent = "> " + prompt;
    const answer = document.createElement("div");
    answer.className = "assistant";
    log.append(you, answer);
    form.elements.prompt.value = "";
    const resp = await post("/ui/api/chat", { model, messages: history, stream: true });
    if (!resp.ok) { answer.textContent = await errorText(resp); return; }
    let text = "";
    await eachLine(resp, (item) => {
      if (item.error) { answer.textContent = item.error; return; }
      if (item.message && item.message.content) { text += item.message.content; answer.textContent = text; }
    });
    history.push({ role: "assistant", content: text });
    log.dataset.history = JSON.stringify(history);
  },
};

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-action]");
  if (!form) return;
  event.preventDefault();
  actions[form.dataset.action](form).catch((e) => setStatus(form, String(e), true));
});

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const text = button.dataset.copy;
  const done = () => { button.textContent = "Copied"; };
  if (navigator.clipboard) navigator.clipboard.writeText(text).then(done, () => {});
});

// The transfers page refreshes itself and offers cancel buttons.
const transfers = document.getElementById("transfers");
if (transfers) {
  const canCancel = !!transfers.dataset.canCancel;
  const body = transfers.querySelector("tbody");
  const size = (n) => (n / 1e6).toFixed(1) + " MB";
  const refresh = async () => {
    const resp = await fetch("/ui/api/transfers", { credentials: "same-origin" });
    if (!resp.ok) return;
    const rows = await resp.json();
    body.replaceChildren(...rows.map((t) => {
      const tr = document.createElement("tr");
      for (const v of [t.id, t.direction, t.model, t.status, size(t.completed) + " / " + size(t.total)]) {
        const td = document.createElement("td");
        td.textContent = String(v);
        tr.append(td);
      }
      const td = document.createElement("td");
      if (canCancel) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = "Cancel";
        b.addEventListener("click", () => post("/ui/api/transfers/" + t.id + "/cancel", {}).then(refresh));
        td.append(b);
      }
      tr.append(td);
      return tr;
    }));
  };
  refresh();
  setInterval(refresh, 1000);
}
