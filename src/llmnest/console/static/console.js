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
    $$("fieldset[data-target]", form).forEach((f) => { f.hidden = f.dataset.target !== target.value; });
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

// Playground: one prompt to one or two deployments; answers stream from the console (which holds the key).
function playground() {
  const form = $("#chat-form");
  if (!form) return;
  const panes = $$(".pane", form);
  const history = panes.map(() => []);
  const side = $("#side-by-side");
  side.addEventListener("change", () => { panes[1].hidden = !side.checked; $("#panes").classList.toggle("two", side.checked); });
  $("#clear").addEventListener("click", () => { history.forEach((h) => h.splice(0)); panes.forEach((p) => { $(".transcript", p).innerHTML = ""; }); });
  form.elements.prompt.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const prompt = form.elements.prompt.value.trim();
    const error = $("#chat-error");
    error.hidden = true;
    if (!prompt) return;
    form.elements.prompt.value = "";
    $("#send").disabled = true;
    const active = panes.filter((p) => !p.hidden);
    await Promise.all(active.map((pane) => ask(pane, history[panes.indexOf(pane)], prompt, error)));
    $("#send").disabled = false;
  });
  async function ask(pane, hist, prompt, error) {
    const idx = pane.dataset.pane;
    const transcript = $(".transcript", pane);
    hist.push({ role: "user", content: prompt });
    transcript.insertAdjacentHTML("beforeend", `<div class="msg user"><div class="who">you</div><div class="text">${esc(prompt)}</div></div>`);
    const msg = document.createElement("div");
    msg.className = "msg assistant";
    msg.innerHTML = `<div class="who"></div><details class="reasoning-box" hidden open><summary>reasoning</summary><div class="reasoning"></div></details><div class="text answer"></div><div class="figures">waiting for the first token…</div>`;
    const deployment = form.elements["deployment" + idx].value;
    $(".who", msg).textContent = deployment;
    transcript.append(msg);
    const body = { deployment, messages: hist, system: form.elements.system.value,
                   temperature: form.elements.temperature.value, max_tokens: form.elements.max_tokens.value };
    let answer = "";
    try {
      const resp = await fetch("/api/chat", { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": csrf() }, body: JSON.stringify(body) });
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
          if (ev.type === "content") { answer += ev.text; $(".answer", msg).textContent = answer; $(".figures", msg).textContent = "streaming…"; }
          else if (ev.type === "reasoning") { const r = $(".reasoning-box", msg); r.hidden = false; $(".reasoning", msg).textContent += ev.text; }
          else if (ev.type === "error") throw new Error(ev.message);
          else if (ev.type === "done") {
            $(".figures", msg).textContent = `TTFT ${ev.ttft_ms ?? "-"} ms · ${ev.tokens_per_s ?? "-"} tok/s · ` +
              `${ev.prompt_tokens ?? "?"} prompt + ${ev.completion_tokens} completion tokens · ${ev.e2e_ms} ms total`;
            $(".figures", msg).dataset.done = "1";
          }
          transcript.scrollTop = transcript.scrollHeight;
        }
      }
      hist.push({ role: "assistant", content: answer });
    } catch (e) {
      hist.pop();
      $(".figures", msg).textContent = "";
      error.textContent = "error: " + deployment + ": " + e.message; error.hidden = false;
    }
  }
}

document.addEventListener("DOMContentLoaded", () => { liveTable(); liveStatus(); liveLog(); liveMetrics(); liveJob(); deployForm(); playground(); });
