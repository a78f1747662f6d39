// The node's live page: reads /status every snapshot and /api/series for the charts, and
// draws them without reloading. Plain ES2020, no build step. Every name that comes from a
// producer (operation, model, cache, finding subject) reaches the document through
// textContent or a dataset attribute only, never as markup: the page's safety rests on it.
"use strict";

(function () {
  // The window the table's rates and percentiles describe (count is since the daemon started).
  const TABLE_WINDOW = "1m";
  const CHART_HEIGHT = 170;
  const PALETTE_SIZE = 8; // --s0 … --s7 in app.css
  // The daemon runs two series queries at once and makes a third wait: the page asks no more.
  const SERIES_AT_ONCE = 2;

  // One chart per metric. `has` says whether a series of /status has data for it; a chart
  // without `has` is always drawn.
  const CHARTS = [
    { metric: "rate", title: "requests per second" },
    { metric: "error_pct", title: "error %" },
    { metric: "p50_ms", title: "latency p50 (ms)" },
    { metric: "p95_ms", title: "latency p95 (ms)" },
    { metric: "p99_ms", title: "latency p99 (ms)" },
    { metric: "ttft_p50_ms", title: "time to first token p50 (ms)", has: (w) => pick(w, "ttft_ms", "count") > 0 },
    { metric: "ttft_p99_ms", title: "time to first token p99 (ms)", has: (w) => pick(w, "ttft_ms", "count") > 0 },
    { metric: "quality", title: "quality (mean)", has: (w) => pick(w, "quality", "count") > 0 },
    { metric: "cache_hit_pct", title: "cache hit %", has: (w) => pick(w, "cache", "lookups") > 0 },
    { metric: "events", title: "event path: events per second by outcome" },
  ];

  // The table's columns after operation and model: how each reads a series of /status.
  const FIELDS = {
    count: (row) => pick(row, "windows", "since_start", "count"),
    rate: (row, w) => pick(w, "throughput_per_s"),
    error_pct: (row, w) => percent(pick(w, "error_rate")),
    p50_ms: (row, w) => pick(w, "latency_ms", "p50"),
    p95_ms: (row, w) => pick(w, "latency_ms", "p95"),
    p99_ms: (row, w) => pick(w, "latency_ms", "p99"),
    ttft_p50_ms: (row, w) => pick(w, "ttft_ms", "p50"),
    quality: (row, w) => pick(w, "quality", "mean"),
    cache_hit_pct: (row, w) => percent(pick(w, "cache", "hit_rate")),
  };
  const DIGITS = { count: 0, rate: 2, error_pct: 1, quality: 3, cache_hit_pct: 1 };
  const OUTCOMES = ["received", "dropped", "overwritten", "invalid", "no_lane", "lost_on_restart", "pending"];

  const state = {
    doc: null,
    lastUpdate: null,
    range: "1h",
    selected: null, // {operation, model} charted alone, or null for every series
    sort: { field: "count", dir: -1 },
    shown: new Set(), // metrics whose chart exists: once shown, kept (no flicker)
    charts: new Map(), // metric → {box, plot, note, answer, labels}
    generation: 0, // of chart requests: an answer to an older request is dropped
  };

  const $ = (selector) => document.querySelector(selector);

  // -- small helpers ------------------------------------------------------------------------
  function pick(value, ...keys) {
    for (const key of keys) {
      if (value === null || typeof value !== "object") return null;
      value = value[key];
    }
    return value === undefined ? null : value;
  }

  function percent(fraction) {
    return typeof fraction === "number" ? fraction * 100 : null;
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function num(value, digits) {
    if (typeof value !== "number" || !isFinite(value)) return "—";
    const places = digits === undefined ? (Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2) : digits;
    return value.toLocaleString(undefined, { minimumFractionDigits: places, maximumFractionDigits: places });
  }

  function bytes(value) {
    if (typeof value !== "number") return "—";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (value >= 1000 && i < units.length - 1) {
      value /= 1000;
      i += 1;
    }
    return `${num(value, i === 0 ? 0 : 1)} ${units[i]}`;
  }

  function clock(unix) {
    return new Date(unix * 1000).toLocaleTimeString();
  }

  function duration(seconds) {
    if (typeof seconds !== "number") return "—";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${num(seconds / 3600, 1)} h`;
    return `${num(seconds / 86400, 1)} d`;
  }

  function facts(pairs) {
    const list = el("dl", null, "facts");
    for (const [term, value] of pairs) {
      list.append(el("dt", term), el("dd", value));
    }
    return list;
  }

  function table(headings, rows, numeric) {
    const head = el("thead");
    const headRow = el("tr");
    headings.forEach((heading, i) => headRow.append(el("th", heading, numeric[i] ? "num" : "")));
    head.append(headRow);
    const body = el("tbody");
    for (const cells of rows) {
      const row = el("tr");
      cells.forEach((cell, i) => row.append(el("td", cell, numeric[i] ? "num" : "name")));
      body.append(row);
    }
    const wrap = el("div", null, "table-wrap");
    const node = el("table");
    node.append(head, body);
    wrap.append(node);
    return wrap;
  }

  // Runs `task` on each item, at most `width` at a time; the results as Promise.allSettled's.
  async function settledInTurn(items, width, task) {
    const results = new Array(items.length);
    let next = 0;
    async function worker() {
      while (next < items.length) {
        const i = next++;
        try {
          results[i] = { status: "fulfilled", value: await task(items[i]) };
        } catch (reason) {
          results[i] = { status: "rejected", reason };
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
    return results;
  }

  async function getJSON(url) {
    const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      throw new Error(`${response.status} ${pick(body, "error") || response.statusText}`);
    }
    return body;
  }

  // -- the series table ---------------------------------------------------------------------
  function seriesRows(doc) {
    return (doc.operations || []).map((row) => {
      const w = pick(row, "windows", TABLE_WINDOW);
      const values = { operation: String(row.operation), model: String(row.model) };
      for (const [field, read] of Object.entries(FIELDS)) values[field] = read(row, w);
      return values;
    });
  }

  function compare(a, b) {
    const { field, dir } = state.sort;
    const x = a[field];
    const y = b[field];
    if (x === null && y === null) return 0;
    if (x === null) return 1; // missing values last, whichever the direction
    if (y === null) return -1;
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return order * dir;
  }

  function isSelected(values) {
    const s = state.selected;
    return s !== null && s.operation === values.operation && s.model === values.model;
  }

  function renderTable() {
    const rows = seriesRows(state.doc).sort(compare);
    const body = $("#series-table tbody");
    if (rows.length === 0) {
      const row = el("tr");
      const cell = el("td", "No series yet: nothing has been emitted in this namespace.", "empty");
      cell.colSpan = 2 + Object.keys(FIELDS).length;
      row.append(cell);
      body.replaceChildren(row);
      return;
    }
    body.replaceChildren(...rows.map((values) => {
      const row = el("tr");
      row.dataset.operation = values.operation;
      row.dataset.model = values.model;
      row.tabIndex = 0;
      row.setAttribute("aria-selected", String(isSelected(values)));
      for (const name of ["operation", "model"]) {
        const cell = el("td", values[name], "name");
        cell.dataset.field = name;
        cell.title = values[name];
        row.append(cell);
      }
      for (const field of Object.keys(FIELDS)) {
        const cell = el("td", num(values[field], DIGITS[field]), "num");
        cell.dataset.field = field;
        if (values[field] !== null) cell.dataset.value = String(values[field]); // unformatted
        if (field === "error_pct" && values[field] > 0) cell.classList.add("bad");
        row.append(cell);
      }
      return row;
    }));
  }

  function renderSortMarks() {
    for (const th of document.querySelectorAll("#series-table th[data-sort]")) {
      const on = th.dataset.sort === state.sort.field;
      if (on) th.setAttribute("aria-sort", state.sort.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  function onSort(event) {
    const th = event.target.closest("th[data-sort]");
    if (!th) return;
    const field = th.dataset.sort;
    if (state.sort.field === field) state.sort.dir = -state.sort.dir;
    else state.sort = { field, dir: field === "operation" || field === "model" ? 1 : -1 };
    renderSortMarks();
    if (state.doc) renderTable();
  }

  function onRowChosen(event) {
    if (event.type === "keydown" && event.key !== "Enter" && event.key !== " ") return;
    const row = event.target.closest("tr[data-operation]");
    if (!row) return;
    event.preventDefault();
    const chosen = { operation: row.dataset.operation, model: row.dataset.model };
    select(isSelected(chosen) ? null : chosen);
  }

  function select(series) {
    state.selected = series;
    $("#show-all").hidden = series === null;
    $("#selection").textContent = series === null ? "All series." : `Charting ${series.operation} · ${series.model} alone.`;
    if (state.doc) renderTable();
    refreshCharts();
  }

  // -- charts -------------------------------------------------------------------------------
  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function wantedCharts(doc) {
    const windows = (doc.operations || []).flatMap((row) => Object.values(row.windows || {}));
    for (const spec of CHARTS) {
      if (!spec.has || windows.some(spec.has)) state.shown.add(spec.metric);
    }
    return CHARTS.filter((spec) => state.shown.has(spec.metric));
  }

  function chartFor(spec) {
    let chart = state.charts.get(spec.metric);
    if (chart) return chart;
    const box = el("div", null, "chart");
    box.dataset.metric = spec.metric;
    const plotArea = el("div", null, "plot");
    const note = el("p", "", "note");
    box.append(el("h3", spec.title), plotArea, note);
    // Keep the charts in CHARTS order whichever appears first.
    const after = CHARTS.slice(CHARTS.indexOf(spec) + 1)
      .map((other) => state.charts.get(other.metric))
      .find((other) => other);
    $("#charts").insertBefore(box, after ? after.box : null);
    chart = { box, plotArea, note, plot: null, answer: null, labels: "" };
    state.charts.set(spec.metric, chart);
    return chart;
  }

  // uPlot's columns: the union of the series' timestamps, and one value row per series (null
  // where a series has no point: drawn as a gap).
  function columns(answer) {
    const times = new Set();
    for (const series of answer.series) for (const [t] of series.points) times.add(t);
    const xs = Array.from(times).sort((a, b) => a - b);
    const index = new Map(xs.map((t, i) => [t, i]));
    const rows = answer.series.map((series) => {
      const ys = new Array(xs.length).fill(null);
      for (const [t, v] of series.points) ys[index.get(t)] = v;
      return ys;
    });
    return [xs, ...rows];
  }

  function label(series) {
    return "outcome" in series ? String(series.outcome) : `${series.operation} · ${series.model}`;
  }

  // A run of one or two values between gaps (a series seen in a bucket or two only) draws no
  // line or one too short to see: its values are marked with dots.
  const SHORT_RUN = 2;

  function shortRuns(plot, seriesIndex) {
    const ys = plot.data[seriesIndex];
    const marked = [];
    let start = 0;
    for (let i = 0; i <= ys.length; i++) {
      if (i < ys.length && ys[i] !== null) continue;
      if (i - start > 0 && i - start <= SHORT_RUN) for (let k = start; k < i; k++) marked.push(k);
      start = i + 1;
    }
    return marked.length ? marked : null;
  }

  function plotOptions(chart, labels) {
    const fg = cssVar("--muted");
    const grid = cssVar("--grid");
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    return {
      width: Math.max(200, chart.plotArea.clientWidth),
      height: CHART_HEIGHT,
      // The x axis spans the whole chosen range, so that a series that began recently shows
      // where it began.
      scales: { x: { time: true, range: () => [chart.answer.from_unix, chart.answer.to_unix] } },
      axes: [axis, { ...axis, size: 56 }],
      cursor: { drag: { x: false, y: false } },
      series: [{}, ...labels.map((text, i) => {
        const colour = cssVar(`--s${i % PALETTE_SIZE}`);
        return {
          label: text,
          stroke: colour,
          width: 1.5,
          points: { show: false, filter: shortRuns, size: 5, fill: colour, stroke: colour },
        };
      })],
    };
  }

  function draw(chart, answer) {
    chart.answer = answer;
    const labels = answer.series.map(label);
    const data = answer.series.length ? columns(answer) : [[], []];
    const key = JSON.stringify(labels);
    if (chart.plot && chart.labels === key) {
      chart.plot.setData(data);
    } else {
      if (chart.plot) chart.plot.destroy();
      chart.plot = new uPlot(plotOptions(chart, labels), data, chart.plotArea);
      chart.labels = key;
    }
    chart.note.textContent = answer.series.length ? "" : "No data in this range yet.";
  }

  function seriesURL(metric) {
    const params = new URLSearchParams({ metric, range: state.range });
    if (state.selected && metric !== "events") {
      params.set("operation", state.selected.operation);
      params.set("model", state.selected.model);
    }
    return `api/series?${params}`;
  }

  async function refreshCharts() {
    if (!state.doc) return;
    const generation = ++state.generation;
    const specs = wantedCharts(state.doc);
    const answers = await settledInTurn(specs, SERIES_AT_ONCE, (spec) => getJSON(seriesURL(spec.metric)));
    if (generation !== state.generation) return; // a newer range or selection was asked for
    const notes = new Set();
    specs.forEach((spec, i) => {
      const chart = chartFor(spec);
      const result = answers[i];
      if (result.status === "rejected") {
        chart.note.textContent = `cannot read the series: ${result.reason.message}`;
        return;
      }
      draw(chart, result.value);
      if (result.value.history && result.value.history !== "ok") notes.add(`history: ${result.value.history}`);
      if (result.value.truncated) notes.add("the busiest 50 series are charted");
    });
    $("#history-note").textContent = Array.from(notes).join("; ");
  }

  function resizeCharts() {
    for (const chart of state.charts.values()) {
      if (chart.plot) chart.plot.setSize({ width: Math.max(200, chart.plotArea.clientWidth), height: CHART_HEIGHT });
    }
  }

  // Colours come from CSS: a switch between light and dark redraws every chart with the other set.
  function recolourCharts() {
    for (const chart of state.charts.values()) {
      if (chart.plot) {
        chart.plot.destroy();
        chart.plot = null;
        draw(chart, chart.answer);
      }
    }
  }

  // -- event path, resources, findings, caches ----------------------------------------------
  function renderEventPath(doc) {
    const events = doc.events || {};
    const rates = pick(doc, "event_path", "rates_per_s") || {};
    const rows = OUTCOMES.filter((name) => name in events).map((name) => [
      name.replace(/_/g, " "), num(events[name], 0),
      num(pick(rates, name, "10s")), num(pick(rates, name, "1m")),
    ]);
    const lanes = doc.lanes_summary || {};
    const path = doc.event_path || {};
    $("#event-path").replaceChildren(
      table(["outcome", "total", "per s (10 s)", "per s (1 min)"], rows, [false, true, true, true]),
      facts([
        ["fullest lane", `${num(percent(path.max_fill), 1)} %`],
        ["drain lag", `${num(path.drain_lag_seconds, 3)} s`],
        ["records per batch", num(path.records_per_batch, 1)],
        ["lanes", Object.entries(lanes).map(([state_, n]) => `${state_.replace(/_/g, " ")} ${n}`).join(" · ")],
      ]),
    );
  }

  function stale(section, ageKey = "age_seconds", staleKey = "stale") {
    return pick(section, staleKey) === true ? ` (stale: ${duration(pick(section, ageKey))} old)` : "";
  }

  function gpuFacts(gpu) {
    const devices = pick(gpu, "devices") || [];
    if (pick(gpu, "available") !== true) return [["GPU", `unavailable: ${pick(gpu, "reason") || "no reason given"}`]];
    if (devices.length === 0) return [["GPU", "available, no devices reported"]];
    return devices.map((d) => {
      const name = `GPU ${d.index}${d.name ? ` (${d.name})` : ""}`;
      if (d.error) return [name, `error: ${d.error}`];
      const parts = [
        `utilization ${num(d.utilization_percent, 0)} %`,
        `memory ${num(d.memory_used_mb, 0)} / ${num(d.memory_total_mb, 0)} MB`,
      ];
      if (typeof d.temperature_c === "number") parts.push(`${num(d.temperature_c, 0)} °C`);
      if (typeof d.power_w === "number") parts.push(`${num(d.power_w, 0)} W`);
      return [name, parts.join(" · ") + stale(gpu)];
    });
  }

  function renderResources(doc) {
    const r = doc.resources || {};
    const sys = r.system || {};
    const processes = r.processes || [];
    const rss = processes.map((p) => p.rss_bytes).filter((v) => typeof v === "number");
    $("#resources").replaceChildren(facts([
      ["system CPU", `${num(sys.cpu_percent, 1)} %${stale(sys)}`],
      ["system memory", `${num(sys.memory_percent, 1)} % · ${bytes(sys.memory_used_bytes)} of ${bytes(sys.memory_total_bytes)}`],
      ["daemon", `CPU ${num(pick(r, "daemon", "cpu_percent"), 1)} % · RSS ${bytes(pick(r, "daemon", "rss_bytes"))}`],
      ["workers", `${processes.length} process${processes.length === 1 ? "" : "es"}` +
        (rss.length ? ` · RSS ${bytes(rss.reduce((a, b) => a + b, 0))} in all` : "") +
        stale(r, "processes_age_seconds", "processes_stale")],
      ...gpuFacts(r.gpu),
    ]));
  }

  function subjectText(subject) {
    const type = pick(subject, "type");
    const name = pick(subject, "name");
    return type || name ? `${type || ""} ${name === null ? "" : name}`.trim() : "";
  }

  function evidenceText(finding) {
    const parts = Object.entries(finding.evidence || {}).map(([key, value]) =>
      `${key.replace(/_/g, " ")} ${typeof value === "number" ? num(value, Number.isInteger(value) ? 0 : 3) : value}`);
    if (finding.threshold !== undefined && finding.threshold !== null) parts.push(`threshold ${finding.threshold}`);
    return parts.join(" · ");
  }

  function recommendation(rec) {
    const item = el("p");
    item.append(el("strong", "→ "), document.createTextNode(String(rec.message || "")));
    if (rec.config_key) {
      item.append(document.createTextNode(" Set "), el("code", rec.config_key),
        document.createTextNode(" to "), el("code", JSON.stringify(rec.suggested_value)), document.createTextNode("."));
    }
    return item;
  }

  function renderFindings(doc) {
    const findings = doc.findings || [];
    const recs = doc.recommendations || [];
    const now = doc.written_unix || Date.now() / 1000;
    const nodes = findings.map((f) => {
      const box = el("div", null, `finding ${["info", "warning", "critical"].includes(f.severity) ? f.severity : ""}`);
      const head = el("p");
      head.append(el("span", f.severity, "severity"), document.createTextNode(` ${f.message || f.kind}`));
      const since = typeof f.started_unix === "number"
        ? `since ${clock(f.started_unix)} (${duration(now - f.started_unix)})` : "";
      const meta = [subjectText(f.subject), f.window ? `window ${f.window}` : "", since].filter(Boolean).join(" · ");
      box.append(head, el("p", meta, "meta"), el("p", `evidence: ${evidenceText(f)}`, "meta"));
      for (const rec of recs.filter((r) => r.finding === f.id)) box.append(recommendation(rec));
      return box;
    });
    const ids = new Set(findings.map((f) => f.id));
    for (const rec of recs.filter((r) => !ids.has(r.finding))) {
      const box = el("div", null, "finding");
      box.append(el("p", `${rec.category || "recommendation"} · ${subjectText(rec.subject)}`, "meta"), recommendation(rec));
      nodes.push(box);
    }
    if (nodes.length === 0) nodes.push(el("p", "Nothing found at this snapshot: no rule's threshold is crossed.", "empty"));
    $("#findings").replaceChildren(...nodes);
  }

  function renderCaches(doc) {
    const caches = doc.caches || [];
    if (caches.length === 0) {
      $("#caches").replaceChildren(el("p", "No cache reported (client.cache_state).", "empty"));
      return;
    }
    const rows = caches.map((c) => [c.name, num(c.size, 0), num(c.reporting_lanes, 0),
      num(c.evictions_total, 0), num(pick(c, "evictions_per_s", TABLE_WINDOW))]);
    $("#caches").replaceChildren(table(["cache", "size", "reporting lanes", "evictions", "evictions/s (1 min)"],
      rows, [false, true, true, true, true]));
  }

  // -- the poll loop ------------------------------------------------------------------------
  function renderAll(doc) {
    $("#namespace").textContent = doc.namespace ? `· ${doc.namespace}` : "";
    renderTable();
    renderEventPath(doc);
    renderResources(doc);
    renderFindings(doc);
    renderCaches(doc);
  }

  function pollSeconds() {
    const interval = pick(state.doc, "daemon", "snapshot_interval_seconds");
    return Math.min(10, Math.max(1, typeof interval === "number" ? interval : 5));
  }

  async function poll() {
    const line = $("#status-line");
    try {
      state.doc = await getJSON("status");
      state.lastUpdate = Date.now() / 1000;
      renderAll(state.doc);
      const d = state.doc.daemon || {};
      line.classList.remove("error");
      line.textContent = `updated ${clock(state.lastUpdate)} · snapshot every ${num(d.snapshot_interval_seconds)} s · ` +
        `ai-analyticsd ${d.version || "?"}, pid ${d.pid || "?"}, up ${duration(d.uptime_seconds)}`;
    } catch (error) {
      line.classList.add("error");
      line.textContent = `cannot read /status: ${error.message}` +
        (state.lastUpdate ? ` (showing the update of ${clock(state.lastUpdate)})` : "");
    }
    try {
      await refreshCharts();
    } finally {
      setTimeout(poll, pollSeconds() * 1000);
    }
  }

  function onRange(event) {
    const button = event.target.closest("button[data-range]");
    if (!button) return;
    state.range = button.dataset.range;
    for (const other of document.querySelectorAll("#range button")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    refreshCharts();
  }

  function start() {
    $("#range").addEventListener("click", onRange);
    $("#series-table thead").addEventListener("click", onSort);
    $("#series-table tbody").addEventListener("click", onRowChosen);
    $("#series-table tbody").addEventListener("keydown", onRowChosen);
    $("#show-all").addEventListener("click", () => select(null));
    let pending = false;
    window.addEventListener("resize", () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        resizeCharts();
      });
    });
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", recolourCharts);
    renderSortMarks();
    poll();
  }

  start();
})();
