// kindlab console: the pages' buttons and live updates. Plain JavaScript,
// nothing fetched from elsewhere: server-sent events (EventSource) bring
// every check result and progress line; buttons POST with the page's CSRF
// token. Text only goes into the page through textContent.
"use strict";
(function () {
  const body = document.body;
  const token = body.dataset.token || "";
  const csrf = body.dataset.csrf || "";
  const view = body.dataset.view;

  const TEXT = { pass: "✓ pass", fail: "✗ fail", unsupported: "– unsupported", skipped: "– skipped", running: "… running", "": "not run yet" };

  function withToken(path) {
    if (!token) return path;
    return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
  }

  function api(method, path) {
    const headers = { "Accept": "application/json", "X-Kindlab-CSRF": csrf };
    if (token) headers["Authorization"] = "Bearer " + token;
    return fetch(path, { method, headers, credentials: "omit" }).then(async (r) => {
      const text = await r.text();
      let data = null;
      try { data = JSON.parse(text); } catch (e) { /* not JSON */ }
      if (!r.ok) throw new Error((data && data.error) || text || r.statusText);
      return data;
    });
  }

  function enc(s) { return encodeURIComponent(s); }

  function log(line) {
    const el = document.getElementById("log");
    if (!el) return;
    const now = new Date().toTimeString().slice(0, 8);
    el.textContent += now + " " + line + "\n";
    el.scrollTop = el.scrollHeight;
  }

  // opLine shows a line an up, down, reset or replay printed under its
  // cluster's row (or, for a cluster without one yet, in a box of its
  // own under Activity), keeping the last OP_LINES.
  const OP_LINES = 12;
  function opLine(cluster, line) {
    if (view !== "instructor") return;
    let pre = document.querySelector('pre.oplines[data-oplines="' + CSS.escape(cluster) + '"]');
    if (!pre) {
      pre = document.createElement("pre");
      pre.className = "oplines";
      pre.dataset.oplines = cluster;
      pre.setAttribute("aria-label", "last up, down or reset lines of " + cluster);
      const row = document.querySelector('tr.cluster[data-cluster="' + CSS.escape(cluster) + '"]');
      if (row) {
        const tr = document.createElement("tr");
        tr.className = "oprow";
        const td = tr.insertCell();
        td.colSpan = row.cells.length;
        td.appendChild(pre);
        row.after(tr);
      } else {
        const boxes = document.getElementById("opboxes");
        if (!boxes) return;
        const box = document.createElement("div");
        box.className = "opbox";
        const h = document.createElement("h3");
        h.textContent = cluster;
        box.append(h, pre);
        boxes.appendChild(box);
      }
    }
    const lines = pre.textContent.split("\n").filter((l) => l !== "");
    lines.push(line);
    pre.textContent = lines.slice(-OP_LINES).join("\n") + "\n";
    pre.scrollTop = pre.scrollHeight;
  }

  function setStatus(span, status) {
    span.className = "status " + (status ? "st-" + status : "st-none");
    span.dataset.status = status || "";
    span.textContent = TEXT[status] !== undefined ? TEXT[status] : status;
  }

  // applyResult shows one result wherever the page has its cell.
  function applyResult(cluster, r) {
    const sel = '[data-cluster="' + CSS.escape(cluster) + '"][data-check="' + CSS.escape(r.name) + '"]';
    document.querySelectorAll("tr.check" + sel + ", td.cell" + sel).forEach((el) => {
      const span = el.querySelector(".status");
      if (span) setStatus(span, r.status);
      const reason = el.querySelector(".reason");
      if (reason) reason.textContent = r.reason || "";
      if (el.tagName === "TD") el.title = r.reason || "";
      el.querySelectorAll("button.run-check").forEach((b) => { b.disabled = r.status === "running"; });
    });
    updateProgress(cluster);
  }

  // updateProgress recounts an instructor row: passed, and the first check
  // in the lab's order that failed or has not run (where that attendee is).
  function updateProgress(cluster) {
    const row = document.querySelector('tr.cluster[data-cluster="' + CSS.escape(cluster) + '"]');
    if (!row) return;
    const checks = (row.dataset.checks || "").split(" ").filter(Boolean);
    let passed = 0, stuck = "", why = "";
    checks.forEach((n) => {
      const td = row.querySelector('td.cell[data-check="' + CSS.escape(n) + '"]');
      const span = td && td.querySelector(".status");
      const st = span ? span.dataset.status : "";
      if (st === "pass") passed++;
      else if (!stuck && st !== "unsupported" && st !== "skipped") { stuck = n; why = st === "fail" ? td.title : ""; }
    });
    const cell = row.querySelector("td.progress");
    if (cell) cell.textContent = passed + "/" + checks.length + " pass" + (stuck ? "; stuck at " + stuck : "") + (why ? ": " + shorten(why) : "");
  }

  function shorten(s) { return s.length > 90 ? s.slice(0, 89) + "…" : s; }

  function clusterOf(button) {
    return button.dataset.cluster || body.dataset.cluster;
  }

  function runChecks(button) {
    const cluster = clusterOf(button);
    const check = button.dataset.check;
    const path = "/api/clusters/" + enc(cluster) + "/checks" + (check ? "/" + enc(check) : "");
    button.disabled = true;
    api("POST", path)
      .then((results) => { (results || []).forEach((r) => applyResult(cluster, r)); })
      .catch((e) => log(cluster + ": check failed to run: " + e.message))
      .finally(() => { button.disabled = false; });
  }

  function reset(button) {
    const cluster = clusterOf(button);
    if (!window.confirm("Reset the lab on " + cluster + " to its start? Everything you changed in its namespaces goes.")) return;
    button.disabled = true;
    log(cluster + ": reset requested");
    api("POST", "/api/clusters/" + enc(cluster) + "/reset")
      .then((res) => { ((res && res.checks) || []).forEach((r) => applyResult(cluster, r)); })
      .catch((e) => log(cluster + ": reset failed: " + e.message))
      .finally(() => { button.disabled = false; });
  }

  function copy(button) {
    const code = document.getElementById(button.dataset.copy);
    if (!code) return;
    const text = code.textContent;
    const done = () => { const old = button.textContent; button.textContent = "Copied"; setTimeout(() => { button.textContent = old; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => fallbackCopy(code, done));
    } else {
      fallbackCopy(code, done);
    }
  }

  // A room's console is plain http on a LAN address, not a secure context:
  // select the text and use the older copy command.
  function fallbackCopy(code, done) {
    const range = document.createRange();
    range.selectNodeContents(code);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    try { if (document.execCommand("copy")) done(); } catch (e) { /* selected: Ctrl-C works */ }
  }

  function loadNodes() {
    const box = document.getElementById("nodes");
    if (!box) return;
    api("GET", "/api/clusters/" + enc(body.dataset.cluster) + "/nodes").then((nodes) => {
      const table = document.createElement("table");
      table.className = "nodes";
      const head = table.createTHead().insertRow();
      ["Node", "Role", "Zone", "Ready", "Pods"].forEach((h) => { const th = document.createElement("th"); th.scope = "col"; th.textContent = h; head.appendChild(th); });
      const tb = table.createTBody();
      nodes.forEach((n) => {
        const tr = tb.insertRow();
        tr.insertCell().textContent = n.name;
        tr.insertCell().textContent = n.role || "";
        tr.insertCell().textContent = n.zone || "(none)";
        tr.insertCell().textContent = n.ready ? "Ready" : "not ready";
        const ul = document.createElement("ul");
        (n.pods || []).forEach((p) => {
          const li = document.createElement("li");
          li.textContent = p.namespace + "/" + p.name + " — " + p.phase + (p.ready ? ", ready" : ", not ready");
          ul.appendChild(li);
        });
        const td = tr.insertCell();
        td.appendChild(document.createTextNode((n.pods || []).length + " pod(s)"));
        td.appendChild(ul);
      });
      box.replaceChildren(table);
    }).catch((e) => { box.textContent = "Could not read the nodes: " + e.message; });
  }

  // reload fetches the page's data again after the event stream
  // reconnected (events may have been missed meanwhile).
  function reload() {
    if (view === "attendee") {
      api("GET", "/api/clusters/" + enc(body.dataset.cluster)).then((c) => (c.results || []).forEach((r) => applyResult(c.name, r))).catch(() => {});
    } else {
      api("GET", "/api/clusters").then((cs) => cs.forEach((c) => (c.results || []).forEach((r) => applyResult(c.name, r)))).catch(() => {});
    }
  }

  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    if (b.classList.contains("run-check") || b.classList.contains("run-all")) runChecks(b);
    else if (b.classList.contains("reset")) reset(b);
    else if (b.classList.contains("copy")) copy(b);
    else if (b.classList.contains("reload-nodes")) loadNodes();
  });

  let opened = false;
  const es = new EventSource(withToken("/api/events"));
  es.addEventListener("hello", () => {
    if (opened) reload();
    opened = true;
    body.dataset.live = "1";
  });
  es.addEventListener("check", (ev) => {
    const e = JSON.parse(ev.data);
    if (e.result) applyResult(e.cluster, e.result);
  });
  es.addEventListener("line", (ev) => {
    const e = JSON.parse(ev.data);
    log(e.line);
  });
  es.addEventListener("progress", (ev) => {
    const e = JSON.parse(ev.data);
    opLine(e.cluster, e.line);
  });
  es.addEventListener("clusters", () => {
    if (view === "instructor") window.location.reload();
  });
  if (view === "attendee") loadNodes();
})();
