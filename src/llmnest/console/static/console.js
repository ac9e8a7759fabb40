// llmnest console: small progressive enhancements (confirmations, live tables, logs, jobs, playground).
"use strict";
const csrf = () => document.querySelector('meta[name="csrf"]').content;
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

function duration(s) {
  if (s === null || s === undefined) return "-";
  s = Math.round(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
}

// Every action form that says so is confirmed first.
document.addEventListener("submit", (ev) => {
  const msg = ev.target.dataset.confirm;
  if (msg && !window.confirm(msg)) ev.preventDefault();
});

// A picker that says so shows its choice at once (its Show button stays for keyboards and no-script).
document.addEventListener("change", (ev) => {
  if (ev.target.matches("select[data-autosubmit]")) ev.target.form.submit();
});

// The deployments table refreshes its live cells every 3 s.
function liveTable() {
  const table = $("#deployments");
  if (!table) return;
  setInterval(async () => {
    try {
      const rows = await (await fetch(table.dataset.live)).json();
      const names = new Set(rows.map((r) => r.name));
      const shown = $$("tr[data-name]", table).map((tr) => tr.dataset.name);
      if (rows.length !== shown.length || shown.some((n) => !names.has(n))) return location.reload();
      for (const r of rows) {
        const tr = $(`tr[data-name="${CSS.escape(r.name)}"]`, table);
        const st = $('[data-field="status"]', tr);
        st.textContent = r.status; st.className = "status s-" + r.status;
        $('[data-field="uptime_s"]', tr).textContent = duration(r.uptime_s);
        $('[data-field="restarts"]', tr).textContent = r.restarts;
      }
    } catch (e) { /* the console keeps the last view while a request fails */ }
  }, 3000);
}

// One deployment's page keeps its status badge current.
function liveStatus() {
  const badge = $("#dep-status");
  if (!badge) return;
  setInterval(async () => {
    try {
      const row = (await (await fetch("/api/deployments")).json()).find((r) => r.name === badge.dataset.name);
      const status = row ? row.status : "removed";
      badge.textContent = status; badge.className = "status s-" + status;
    } catch (e) { /* keep the last status while the console is unreachable */ }
  }, 3000);
}

// A log over server-sent events, with search and a match count; health checks hidden unless asked for,
// levels coloured, the lines shown downloadable. EventSource reconnects by itself and the server starts
// again with "reset" and the tail, so a reconnect resumes the view.
const HEALTH = /\b(GET|HEAD) \/(health|ping|metrics)\b/;
const LEVEL = /\b(ERROR|CRITICAL|FATAL|Traceback|WARNING|WARN|INFO|DEBUG)\b/;
const LEVEL_CLASS = { ERROR: "error", CRITICAL: "error", FATAL: "error", Traceback: "error", WARNING: "warn", WARN: "warn", INFO: "info", DEBUG: "debug" };
function liveLog() {
  const pre = $("#log");
  if (!pre) return;
  let lines = [];
  const search = $("#log-search"), follow = $("#log-follow"), state = $("#log-state"), health = $("#log-health"), count = $("#log-count");
  const shownLines = () => {
    const q = search.value.trim().toLowerCase();
    return lines.filter((l) => (health.checked || !HEALTH.test(l)) && (!q || l.toLowerCase().includes(q)));
  };
  const draw = () => {
    const q = search.value.trim();
    const shown = shownLines();
    const re = q ? new RegExp(q.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gi") : null;
    pre.innerHTML = shown.map((l) => {
      let e = esc(l);
      if (re) e = e.replace(re, (m) => `<mark>${m}</mark>`);
      const level = LEVEL.exec(l);
      return level ? `<span class="lv-${LEVEL_CLASS[level[1]]}">${e}</span>` : e;
    }).join("\n");
    const hidden = health.checked ? 0 : lines.filter((l) => HEALTH.test(l)).length;
    count.textContent = (q ? `${shown.length} matching of ${lines.length} lines` : `${lines.length} lines`) +
      (hidden ? ` (${hidden} health checks hidden)` : "");
    if (follow.checked) pre.scrollTop = pre.scrollHeight;
  };
  search.addEventListener("input", draw);
  health.addEventListener("change", draw);
  $("#log-download").addEventListener("click", () => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([shownLines().join("\n") + "\n"], { type: "text/plain" }));
    a.download = pre.dataset.file; a.click();
  });
  const source = new EventSource(pre.dataset.stream);
  source.addEventListener("reset", () => { lines = []; draw(); state.textContent = "live"; });
  source.addEventListener("lines", (ev) => { lines = lines.concat(JSON.parse(ev.data)).slice(-5000); draw(); });
  source.addEventListener("end", (ev) => { state.textContent = JSON.parse(ev.data); source.close(); });
  source.addEventListener("failure", (ev) => { state.textContent = "error: " + JSON.parse(ev.data); source.close(); });
  source.onerror = () => { state.textContent = "reconnecting…"; };
}

// A deployment's live figures (requests/s, tokens/s, queue, KV cache), read every 3 s.
function liveMetrics() {
  const box = $("#live");
  if (!box) return;
  const put = (k, text) => { $(`[data-m="${k}"]`, box).textContent = text; };
  const fmt = (v, unit) => (v === null || v === undefined ? "–" : `${v} ${unit}`);
  const read = async () => {
    try {
      const m = await (await fetch(box.dataset.src)).json();
      if (m.error) return;
      put("req_per_s", fmt(m.req_per_s, "/s"));
      put("tok_per_s", fmt(m.tok_per_s, "tokens/s"));
      put("queue", m.running === null && m.waiting === null ? "–" : `${m.running ?? "–"} / ${m.waiting ?? "–"}`);
      put("kv_cache", fmt(m.kv_cache_pct, "%"));
    } catch (e) { /* keep the last figures */ }
  };
  read(); setInterval(read, 3000);
}

// A running job's page polls its state and reloads once it ends (then shows the result or the error).
function liveJob() {
  const box = $("#job");
  if (!box || box.dataset.state !== "running") return;
  const timer = setInterval(async () => {
    let job;
    try { job = await (await fetch("/api/jobs/" + box.dataset.job)).json(); } catch (e) { return; }
    $("#job-phases").innerHTML = job.phases.map(([t, p]) => `<li><span class="num">${t.toFixed(1)} s</span> ${esc(p)}</li>`).join("");
    $("#job-line").textContent = job.line;
    $("#job-elapsed").textContent = job.elapsed;
    const p = job.progress;
    if (p && p.stage) {
      $(".progress").hidden = false;
      $("#job-bar").max = p.total; $("#job-bar").value = p.done + p.failed;
      $("#job-progress").textContent = `stage ${p.stage} (QPS ${p.qps}): ${p.done}/${p.total} done, ${p.failed} failed, ${p.in_flight} in flight`;
    }
    if (job.state !== "running") { clearInterval(timer); location.reload(); }
  }, 1000);
}

// Deploy: the chosen model's facts, the cloud fields only for the cloud, and the plan before deploying.
function deployForm() {
  const form = $("#deploy-form");
  if (!form) return;
  const model = form.elements.model, target = form.elements.target;
  const sync = () => {
    $("#model-facts").textContent = model.selectedOptions[0]?.dataset.facts || "";
    // another target's fields are hidden and disabled (not sent: two targets may share a field's name)
    $$("fieldset[data-target]", form).forEach((f) => { f.hidden = f.disabled = f.dataset.target !== target.value; });
    // this machine's fields (runtime, host, the memory plan's override) hidden and not sent for a target elsewhere
    const elsewhere = "elsewhere" in (target.selectedOptions[0]?.dataset || {});
    $$("[data-here]", form).forEach((el) => {
      el.hidden = elsewhere;
      $$("input, select", el).forEach((i) => { i.disabled = elsewhere; });
    });
  };
  model.addEventListener("change", sync); target.addEventListener("change", sync); sync();
  $("#plan-button").addEventListener("click", async () => {
    const box = $("#plan");
    box.innerHTML = "<h2>Plan</h2><p class='hint'>planning…</p>";
    const resp = await fetch("/deploy/plan", { method: "POST", headers: { "x-csrf-token": csrf() }, body: new URLSearchParams(new FormData(form)) });
    box.innerHTML = await resp.text();
    $$("pre.download", box).forEach((pre) => {
      const a = document.createElement("a");
      a.textContent = "download " + pre.dataset.filename; a.className = "button quiet";
      a.href = URL.createObjectURL(new Blob([pre.textContent], { type: "text/plain" }));
      a.download = pre.dataset.filename; pre.before(a);
    });
  });
}

// Markdown as sanitized HTML (marked + DOMPurify), code highlighted (highlight.js), a copy button on
// every code block. Without the libraries (a blocked file), the text stays plain.
function renderMarkdown(box, text) {
  if (!window.marked || !window.DOMPurify) { box.textContent = text; return; }
  box.innerHTML = DOMPurify.sanitize(marked.parse(text, { gfm: true, breaks: false }));
  $$("pre > code", box).forEach((code) => {
    if (window.hljs) hljs.highlightElement(code);
    const pre = code.parentElement;
    pre.classList.add("code");
    const copy = document.createElement("button");
    copy.type = "button"; copy.className = "copy-code quiet small"; copy.textContent = "Copy";
    copy.addEventListener("click", () => copyText(code.textContent, copy));
    pre.prepend(copy);
  });
  $$("a", box).forEach((a) => { a.target = "_blank"; a.rel = "noopener noreferrer"; });
}

async function copyText(text, button) {
  try { await navigator.clipboard.writeText(text); }
  catch (e) {  // no clipboard API (plain http on another host): a hidden textarea and execCommand
    const area = document.createElement("textarea");
    area.value = text; document.body.append(area); area.select(); document.execCommand("copy"); area.remove();
  }
  const was = button.textContent; button.textContent = "Copied"; setTimeout(() => { button.textContent = was; }, 1200);
}

// Playground: one prompt to one or two deployments, each pane with its own parameters; answers stream
// from the console (which holds the key), render as markdown, can be stopped and regenerated, and the
// conversation is kept on the server (listed on the left).
function playground() {
  const form = $("#chat-form");
  if (!form) return;
  const presets = JSON.parse(form.dataset.presets);
  const panes = $$(".pane", form).map((el) => ({ el, history: [], controller: null }));
  const side = $("#side-by-side"), send = $("#send"), stop = $("#stop"), prompt = form.elements.prompt;
  let convId = null;

  const params = (p) => ({ system: $(".system", p.el).value, temperature: $(".temperature", p.el).value,
                           top_p: $(".top_p", p.el).value, max_tokens: $(".max_tokens", p.el).value,
                           preset: $(".preset", p.el).value });
  const setParams = (p, v) => {
    for (const k of ["system", "temperature", "top_p", "max_tokens"]) if (v[k] !== undefined) $("." + k, p.el).value = v[k];
    if (v.preset !== undefined) $(".preset", p.el).value = v.preset;
  };
  const contextOf = (p) => Number($(".deployment", p.el).selectedOptions[0]?.dataset.context || 32768);
  const syncContext = (p) => {
    const ctx = contextOf(p), input = $(".max_tokens", p.el);
    input.max = ctx;
    if (Number(input.value) > ctx) input.value = ctx;
    $(".context-hint", p.el).textContent = `context ${ctx.toLocaleString()} tokens (prompt + answer)`;
  };
  panes.forEach((p) => {
    $(".preset", p.el).addEventListener("change", (ev) => { if (presets[ev.target.value]) { setParams(p, presets[ev.target.value]); syncContext(p); } });
    $$(".temperature, .top_p, .max_tokens", p.el).forEach((i) => i.addEventListener("input", () => { $(".preset", p.el).value = ""; }));
    $(".deployment", p.el).addEventListener("change", () => syncContext(p));
    setParams(p, presets.balanced); syncContext(p);
  });
  const showSide = (on) => { side.checked = on; panes[1].el.hidden = !on; $("#panes").classList.toggle("two", on); };
  side.addEventListener("change", () => showSide(side.checked));

  const bubble = (p, role, text, finish) => {
    const msg = document.createElement("div");
    msg.className = "msg " + role;
    msg.innerHTML = role === "user"
      ? `<div class="who">you</div><div class="text"></div><div class="msg-tools"><button type="button" class="quiet small edit">Edit</button></div>`
      : `<div class="who"></div><details class="reasoning-box" hidden><summary>reasoning</summary><div class="reasoning"></div></details>` +
        `<div class="answer md"></div><div class="figures"></div><div class="msg-tools"><button type="button" class="quiet small copy-answer">Copy</button> <button type="button" class="quiet small regenerate">Regenerate</button></div>`;
    if (role === "user") { $(".text", msg).textContent = text; $(".edit", msg).addEventListener("click", () => edit(text)); }
    else {
      $(".who", msg).textContent = $(".deployment", p.el).value;
      if (text) renderMarkdown($(".answer", msg), text);
      if (finish === "length") $(".figures", msg).append(cutOff());
      $(".copy-answer", msg).addEventListener("click", (ev) => copyText(msg.dataset.raw || "", ev.target));
      $(".regenerate", msg).addEventListener("click", () => regenerate(p));
      msg.dataset.raw = text || "";
    }
    $(".transcript", p.el).append(msg);
    return msg;
  };
  const cutOff = () => { const s = document.createElement("span"); s.className = "cut-off"; s.textContent = "cut off: max tokens reached"; return s; };
  const busy = (on) => { send.disabled = on; stop.hidden = !on; };
  const lastTools = () => panes.forEach((p) => {
    const answers = $$(".msg.assistant", p.el), asked = $$(".msg.user", p.el);
    answers.forEach((m, i) => { $(".regenerate", m).hidden = i !== answers.length - 1; });
    asked.forEach((m, i) => { $(".edit", m).hidden = i !== asked.length - 1; });
  });

  // Edit the last prompt: that turn leaves every pane, its text goes back to the box to change and send.
  function edit(text) {
    if (panes.some((p) => p.controller)) return;
    panes.forEach((p) => {
      const asked = p.history.map((m) => m.role).lastIndexOf("user");
      if (asked < 0 || p.history[asked].content !== text) return;
      p.history.splice(asked);
      const bubbles = $$(".msg", p.el), at = bubbles.map((m) => m.classList.contains("user")).lastIndexOf(true);
      bubbles.slice(at).forEach((m) => m.remove());
    });
    prompt.value = text; prompt.focus();
    lastTools();
  }

  async function run(p) {
    const msg = bubble(p, "assistant", "");
    const answerBox = $(".answer", msg), figures = $(".figures", msg);
    figures.textContent = "waiting for the first token…";
    const transcript = $(".transcript", p.el);
    transcript.scrollTop = transcript.scrollHeight;
    const v = params(p);
    const body = { deployment: $(".deployment", p.el).value, messages: p.history, system: v.system,
                   temperature: v.temperature, top_p: v.top_p, max_tokens: v.max_tokens };
    p.controller = new AbortController();
    let answer = "", finish = null, drawn = false;
    const draw = () => { drawn = false; renderMarkdown(answerBox, answer); msg.dataset.raw = answer; };
    try {
      const resp = await fetch("/api/chat", { method: "POST", signal: p.controller.signal,
        headers: { "content-type": "application/json", "x-csrf-token": csrf() }, body: JSON.stringify(body) });
      if (!resp.ok) {
        const text = await resp.text();
        let message = text;
        try { message = JSON.parse(text).error; } catch (e) { /* plain text */ }
        throw new Error(message);
      }
      const reader = resp.body.getReader(), decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          if (!block.startsWith("data: ")) continue;
          const ev = JSON.parse(block.slice(6));
          if (ev.type === "content") {
            answer += ev.text; figures.textContent = "streaming…";
            if (!drawn) { drawn = true; requestAnimationFrame(draw); }
          } else if (ev.type === "reasoning") { $(".reasoning-box", msg).hidden = false; $(".reasoning", msg).textContent += ev.text; }
          else if (ev.type === "error") throw new Error(ev.message);
          else if (ev.type === "done") {
            finish = ev.finish_reason;
            figures.textContent = `TTFT ${ev.ttft_ms ?? "-"} ms · ${ev.tokens_per_s ?? "-"} tok/s · ` +
              `${ev.prompt_tokens ?? "?"} prompt + ${ev.completion_tokens} completion tokens · ${ev.e2e_ms} ms total`;
            if (finish === "length") figures.append(" ", cutOff());
            figures.dataset.done = "1";
          }
          transcript.scrollTop = transcript.scrollHeight;
        }
      }
      draw();
      if (!answer && finish === null) throw new Error("the stream ended without an answer");
      p.history.push({ role: "assistant", content: answer, ...(finish ? { finish_reason: finish } : {}) });
      $(".pane-error", p.el).hidden = true;
      return true;
    } catch (e) {
      if (e.name === "AbortError") {  // Stop: what came so far stays, marked as stopped
        draw();
        figures.textContent = "stopped";
        figures.dataset.done = "stopped";
        if (answer) { p.history.push({ role: "assistant", content: answer, finish_reason: "stopped" }); return true; }
        msg.remove();
        return false;
      }
      msg.remove();  // no empty bubble: the failed turn leaves the transcript as it was
      const err = $(".pane-error", p.el);
      err.textContent = `error: ${body.deployment}: ${e.message}`; err.hidden = false;
      return false;
    } finally { p.controller = null; }
  }

  async function turn(active, text) {
    busy(true);
    const userMsgs = active.map((p) => { p.history.push({ role: "user", content: text }); return bubble(p, "user", text); });
    const results = await Promise.all(active.map(run));
    const failed = active.filter((p, i) => !results[i]);
    failed.forEach((p) => { p.history.pop(); userMsgs[active.indexOf(p)].remove(); });
    if (failed.length === active.length && !prompt.value) prompt.value = text;  // nothing answered: the text comes back
    busy(false); lastTools();
    if (failed.length < active.length) save();
  }

  async function regenerate(p) {
    if (p.controller) return;
    const msgs = $$(".msg.assistant", p.el);
    if (!msgs.length || p.history[p.history.length - 1]?.role !== "assistant") return;
    p.history.pop(); msgs[msgs.length - 1].remove();
    busy(true);
    await run(p);
    busy(false); lastTools(); save();
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = prompt.value.trim();
    if (!text || send.disabled) return;
    prompt.value = "";
    await turn(panes.filter((p) => !p.el.hidden), text);
  });
  prompt.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); }
  });
  stop.addEventListener("click", () => panes.forEach((p) => p.controller && p.controller.abort()));

  const reset = () => {
    convId = null;
    panes.forEach((p) => { p.history = []; $(".transcript", p.el).innerHTML = ""; $(".pane-error", p.el).hidden = true; });
    $$("#conversations li").forEach((li) => li.classList.remove("on"));
  };
  $("#clear").addEventListener("click", reset);

  async function save() {
    const first = panes[0].history.find((m) => m.role === "user") || panes[1].history.find((m) => m.role === "user");
    if (!first) return;
    const doc = { title: first.content.slice(0, 80), side_by_side: side.checked,
                  panes: panes.filter((p) => !p.el.hidden).map((p) => ({ deployment: $(".deployment", p.el).value, params: params(p), messages: p.history })) };
    try {
      const resp = await fetch(convId ? "/api/conversations/" + convId : "/api/conversations", {
        method: convId ? "PUT" : "POST", headers: { "content-type": "application/json", "x-csrf-token": csrf() }, body: JSON.stringify(doc) });
      if (resp.ok) { convId = (await resp.json()).id; listConversations(); }
    } catch (e) { /* kept in the page; the next turn saves again */ }
  }

  async function open(id) {
    if (panes.some((p) => p.controller)) return;
    let doc;
    try { doc = await (await fetch("/api/conversations/" + id)).json(); } catch (e) { return; }
    if (doc.error) return;
    reset(); convId = id;
    showSide(doc.panes.length > 1);
    doc.panes.forEach((saved, i) => {
      const p = panes[i];
      const select = $(".deployment", p.el);
      if ([...select.options].some((o) => o.value === saved.deployment)) select.value = saved.deployment;
      setParams(p, saved.params || {}); syncContext(p);
      p.history = saved.messages;
      for (const m of saved.messages) bubble(p, m.role, m.content, m.finish_reason);
    });
    lastTools(); listConversations();
  }

  async function listConversations() {
    const list = $("#conversations");
    let rows;
    try { rows = await (await fetch("/api/conversations")).json(); } catch (e) { return; }
    list.innerHTML = rows.length ? "" : '<li class="hint">none yet</li>';
    for (const r of rows) {
      const li = document.createElement("li");
      li.classList.toggle("on", r.id === convId);
      const a = document.createElement("a");
      a.href = "#"; a.textContent = r.title; a.title = new Date(r.updated_at * 1000).toLocaleString();
      a.addEventListener("click", (ev) => { ev.preventDefault(); open(r.id); });
      const del = document.createElement("button");
      del.type = "button"; del.className = "quiet small"; del.textContent = "×"; del.title = "delete this conversation";
      del.addEventListener("click", async () => {
        if (!window.confirm(`Delete the conversation "${r.title}"?`)) return;
        await fetch("/api/conversations/" + r.id, { method: "DELETE", headers: { "x-csrf-token": csrf() } });
        if (r.id === convId) reset();
        listConversations();
      });
      li.append(a, del); list.append(li);
    }
  }
  listConversations();
}

// The theme: light, dark, or the system's (kept in this browser).
function themeToggle() {
  const button = $("#theme");
  if (!button) return;
  const dark = () => document.documentElement.dataset.theme === "dark" ||
    (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
  const apply = () => {
    button.textContent = dark() ? "Light" : "Dark";
    const light = $("#hljs-light"), darkCss = $("#hljs-dark");
    if (light && darkCss) { light.media = dark() ? "not all" : "all"; darkCss.media = dark() ? "all" : "not all"; }
  };
  button.addEventListener("click", () => {
    const next = dark() ? "light" : "dark";
    document.documentElement.dataset.theme = next; localStorage.setItem("llmnest-theme", next); apply();
  });
  apply();
}

// On a phone, the nav folds behind a Menu button.
function menu() {
  const button = $("#menu");
  if (!button) return;
  button.addEventListener("click", () => {
    const open = document.body.classList.toggle("nav-open");
    button.setAttribute("aria-expanded", String(open));
  });
}

document.addEventListener("DOMContentLoaded", () => { liveTable(); liveStatus(); liveLog(); liveMetrics(); liveJob(); deployForm(); playground(); themeToggle(); menu(); });
