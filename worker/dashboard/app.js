// The edgepool dashboard: reads GET /v1/tenants (the tenant directory) and, for the selected tenant,
// GET /v1/activity/:tenant, every REFRESH_MS. The admin token stays in this tab's sessionStorage and
// goes out only in the Authorization header.
"use strict";
(() => {
  const REFRESH_MS = 1500;
  const KEY = "edgepool-admin-token";
  const WINDOW_MS = 10 * 60_000;
  const $ = (id) => document.getElementById(id);
  let sortKey = "starving";
  let ascending = false;
  let selected = null;
  let rows = [];
  let chart = null;
  let timer = null;
  /** Samples of the selected tenant: from its coordinator's history, then one per refresh. */
  let samples = [];

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` }, cache: "no-store" });
    if (response.status === 401) {
      sessionStorage.removeItem(KEY);
      show();
      throw new Error("the admin token was refused");
    }
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function allTenants() {
    const tenants = [];
    let cursor = "";
    do {
      const page = await api(`/v1/tenants?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      tenants.push(...page.tenants);
      cursor = page.cursor;
    } while (cursor);
    return tenants;
  }

  /** Starving: borrowers wait now, or some timed out or found the queue full, or the sizing rule says undersized or coordinator-bound. */
  function starvation(s) {
    if (!s) return 0;
    return (s.waiting > 0 ? 1e9 + s.waiting * 1e3 + s.maxWaitMs : 0) + (s.timeouts + s.waitQueueFull) * 10 + (s.sizing.verdict === "undersized" || s.sizing.verdict === "coordinator-bound" ? 1 : 0);
  }

  function row(entry) {
    const s = entry.stats;
    const now = Date.now();
    return {
      tenant: entry.tenant,
      starving: starvation(s),
      idle: s ? s.idle : null,
      active: s ? s.leased : null,
      opening: s ? s.opening : null,
      max: entry.options.maxConnections,
      clients: s ? s.clients : null,
      waiting: s ? s.waiting : null,
      oldestWaitMs: s && s.waiting > 0 ? s.maxWaitMs : 0,
      p99: s ? s.acquireWaitMs.p99 : null,
      timeouts: s ? s.timeouts + s.waitQueueFull : null,
      verdict: s ? s.sizing.verdict : "no report",
      reason: s ? s.sizing.reason : "",
      suggested: s ? s.sizing.suggestedMaxConnections : null,
      // Reports from before the thread was measured have neither.
      thread: s && s.coordinator ? s.coordinator.busyRatio : null,
      suggestedShards: s ? (s.sizing.suggestedShards ?? entry.options.shards ?? 1) : null,
      age: entry.reportedAt ? Math.max(0, now - Date.parse(entry.reportedAt)) : null,
    };
  }

  function compare(a, b) {
    const x = a[sortKey];
    const y = b[sortKey];
    const order = x === y ? 0 : x === null ? 1 : y === null ? -1 : x < y ? -1 : 1;
    const primary = ascending ? order : -order;
    // Ties: starving first, then by name.
    return primary || b.starving - a.starving || (a.tenant < b.tenant ? -1 : 1);
  }

  const ms = (v) => (v === null ? "–" : v < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(1)} s`);
  const n = (v) => (v === null ? "–" : String(v));
  const pct = (v) => (v === null ? "–" : `${Math.round(v * 100)} %`);

  function render() {
    rows.sort(compare);
    const body = document.querySelector("#tenants tbody");
    const fresh = document.createElement("tbody");
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.dataset.tenant = r.tenant;
      if (r.starving > 0) tr.classList.add("starving");
      if (r.tenant === selected) tr.classList.add("selected");
      const cells = [r.starving > 0 ? "!" : "", r.tenant, n(r.idle), n(r.active), n(r.opening), n(r.max), n(r.clients), n(r.waiting),
        ms(r.oldestWaitMs), ms(r.p99), n(r.timeouts), r.verdict, n(r.suggested), pct(r.thread), n(r.suggestedShards), ms(r.age)];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 11) {
          td.className = r.verdict;
          td.title = r.reason;
        }
        tr.appendChild(td);
      });
      tr.addEventListener("click", () => select(r.tenant));
      fresh.appendChild(tr);
    }
    body.replaceWith(fresh);
    $("count").textContent = `(${rows.length})`;
    for (const th of document.querySelectorAll("#tenants th")) {
      th.classList.toggle("sorted", th.dataset.key === sortKey);
      th.classList.toggle("asc", th.dataset.key === sortKey && ascending);
    }
  }

  function select(tenant) {
    if (selected !== tenant) {
      selected = tenant;
      samples = [];
      if (chart) chart.destroy();
      chart = null;
    }
    $("detail").hidden = false;
    $("detail-name").textContent = tenant;
    render();
    void detail();
  }

  async function detail() {
    if (!selected) return;
    const tenant = selected;
    const activity = await api(`/v1/activity/${encodeURIComponent(tenant)}`);
    if (tenant !== selected) return;
    const known = new Set(samples.map((s) => s.at));
    for (const s of activity.history) if (!known.has(s.at)) samples.push(s);
    samples.sort((a, b) => a.at - b.at);
    const cutoff = Date.now() - WINDOW_MS;
    samples = samples.filter((s) => s.at >= cutoff);
    const data = [samples.map((s) => s.at / 1000), samples.map((s) => s.active), samples.map((s) => s.idle), samples.map((s) => s.opening), samples.map((s) => s.waiting)];
    if (!chart) {
      chart = new uPlot({
        width: Math.min(900, document.body.clientWidth - 40),
        height: 240,
        series: [{}, { label: "active", stroke: "#3d7be0" }, { label: "idle", stroke: "#2e9e5b" }, { label: "opening", stroke: "#8a6d00" }, { label: "waiters", stroke: "#b3261e", width: 2 }],
        axes: [{}, { label: "connections / waiters" }],
        scales: { y: { range: (u, min, max) => [0, Math.max(max, activity.stats.maxConnections) + 1] } },
      }, data, $("chart"));
    } else chart.setData(data);
    const list = $("events");
    list.replaceChildren(...activity.events.slice().reverse().slice(0, 30).map((e) => {
      const li = document.createElement("li");
      const { time, level, event, tenant: _t, ...fields } = e;
      li.textContent = `${time.slice(11, 23)} ${event} ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(" ")}`;
      li.className = level;
      return li;
    }));
  }

  async function refresh() {
    try {
      rows = (await allTenants()).map(row);
      render();
      if (selected) await detail();
      $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      $("status").textContent = String(error.message || error);
    }
  }

  function show() {
    const signedIn = Boolean(sessionStorage.getItem(KEY));
    $("login").hidden = signedIn;
    $("main").hidden = !signedIn;
    $("signout").hidden = !signedIn;
    if (timer) clearInterval(timer);
    timer = null;
    if (signedIn) {
      void refresh();
      timer = setInterval(refresh, REFRESH_MS);
    } else $("status").textContent = "not signed in";
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("token").value);
    $("token").value = "";
    show();
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    show();
  });
  for (const th of document.querySelectorAll("#tenants th")) {
    th.addEventListener("click", () => {
      if (sortKey === th.dataset.key) ascending = !ascending;
      else {
        sortKey = th.dataset.key;
        ascending = sortKey === "tenant";
      }
      render();
    });
  }
  show();
})();
