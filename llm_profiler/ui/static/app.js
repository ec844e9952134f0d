/* llm-profiler explorer: controls <-> URL query string <-> /api/view; the charts are SVG drawn here.
 * Static report mode: the page carries its data in the JSON script element #llmp-data and fetches
 * nothing. No library, no network beyond this page's own server. */
"use strict";

(function () {
  const SVGNS = "http://www.w3.org/2000/svg";
  const FIELDS = ["model", "device", "phase", "engine", "batch", "seq", "past", "new_tokens", "lm_head",
                  "weight_dtype", "act_dtype", "kv_dtype", "metric", "scope"];
  const SHAPE = ["batch", "seq", "past", "new_tokens"];
  const SLIDER_MAX = {batch: 10, seq: 17, past: 18, new_tokens: 15};
  const PART_COLORS = {"attn": "#4e79a7", "mlp": "#f28e2b", "norms": "#59a14f", "residual & other": "#bab0ac",
                       "other": "#9c755f"};
  const KIND_COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                       "#9c755f", "#bab0ac", "#1f77b4", "#d62728", "#2ca02c", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f",
                       "#e377c2"];
  const DEBOUNCE_MS = 120;

  const dataEl = document.getElementById("llmp-data");
  const STATIC = dataEl ? JSON.parse(dataEl.textContent) : null;
  let meta = STATIC ? STATIC.meta : null;
  let state = {};
  let view = "layers";
  let exact = false;
  let data = null;
  let seq = 0;
  let timer = null;
  let inflight = null;

  const $ = (id) => document.getElementById(id);

  // --- numbers ---------------------------------------------------------------------------------------
  function grouped(n) {  // exact integer with thousands separators (values arrive as JSON numbers)
    return BigInt(Math.round(n)).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }
  function human(n) {  // powers of 1000, like the CLI's human units (1.23M)
    const units = ["", "K", "M", "G", "T", "P", "E", "Z", "Y"];
    let v = Math.abs(n), i = 0;
    while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    if (i === 0) return String(n);
    return (n < 0 ? "-" : "") + v.toFixed(2) + units[i];
  }
  function count(n) { return exact ? grouped(n) : human(n); }
  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let v = n, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(2)) + " " + units[i];
  }
  function seconds(s) {
    if (s >= 1) return s.toPrecision(4) + " s";
    if (s >= 1e-3) return (s * 1e3).toPrecision(4) + " ms";
    return (s * 1e6).toPrecision(4) + " µs";
  }
  function si(v, unit) {
    const units = ["", "K", "M", "G", "T", "P", "E"];
    let i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return v.toPrecision(4) + " " + units[i] + unit;
  }

  // --- DOM helpers -----------------------------------------------------------------------------------
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function numCell(tag, value, cls) {
    const c = el(tag, {"class": "num" + (cls ? " " + cls : ""), "data-value": String(value)}, count(value));
    c.title = grouped(value);
    return c;
  }

  // --- state <-> URL ------------------------------------------------------------------------------------
  function readURL() {
    const q = new URLSearchParams(location.search);
    const s = Object.assign({}, meta.defaults);
    for (const f of FIELDS) if (q.has(f)) s[f] = q.get(f);
    if (!("kv_dtype" in s)) s.kv_dtype = "";
    view = ["layers", "roofline", "memory", "formula"].includes(q.get("view")) ? q.get("view") : "layers";
    exact = q.get("exact") === "1";
    return s;
  }
  function query() {
    const q = new URLSearchParams();
    for (const f of FIELDS) {
      const v = state[f];
      if (v !== undefined && v !== "" && String(v) !== String(meta.defaults[f] ?? "")) q.set(f, v);
    }
    if (view !== "layers") q.set("view", view);
    if (exact) q.set("exact", "1");
    return q;
  }
  function apiQuery() {
    const q = new URLSearchParams();
    for (const f of FIELDS) if (state[f] !== undefined && state[f] !== "") q.set(f, state[f]);
    return q.toString();
  }
  function writeURL() {
    if (STATIC) return;
    const q = query().toString();
    history.replaceState(null, "", q ? "?" + q : location.pathname);
    $("share").href = location.href;
  }

  // --- controls ---------------------------------------------------------------------------------------
  function fillSelect(id, values, labels) {
    const s = $(id);
    s.replaceChildren();
    for (const v of values) s.append(el("option", {value: v}, labels ? labels[v] || v : v));
  }
  function setupControls() {
    const list = $("model-list");
    for (const p of meta.presets.concat(meta.variants)) {
      list.append(el("option", {value: p.alias}, p.hub_id));
    }
    fillSelect("device", meta.devices);
    fillSelect("phase", meta.phases);
    fillSelect("engine", meta.engines);
    fillSelect("weight_dtype", meta.dtypes);
    fillSelect("act_dtype", meta.dtypes);
    fillSelect("kv_dtype", [""].concat(meta.dtypes), {"": "same as activations"});
    fillSelect("metric", meta.metrics, meta.labels);
    fillSelect("scope", meta.scopes);
  }
  function sliderValue(field, pos) {
    if (field === "past") return pos === 0 ? 0 : 2 ** (pos - 1);
    return 2 ** pos;
  }
  function sliderPos(field, value) {
    const v = Number(value);
    if (field === "past") return v <= 0 ? 0 : Math.min(SLIDER_MAX.past, Math.round(Math.log2(v)) + 1);
    return Math.max(0, Math.min(SLIDER_MAX[field], Math.round(Math.log2(Math.max(1, v)))));
  }
  function showState() {
    for (const f of FIELDS) {
      const input = $(f);
      if (!input || document.activeElement === input) continue;
      const value = state[f] ?? "";
      if (input.tagName === "SELECT" && ![...input.options].some((o) => o.value === value)) {
        const key = (t) => String(t).toLowerCase().replace(/[^a-z0-9]/g, "");
        const same = [...input.options].find((o) => key(o.value) === key(value));
        if (same) { state[f] = same.value; input.value = same.value; continue; }
        input.append(el("option", {value: value}, value));  // a name the list does not hold (a device file)
      }
      input.value = value;
    }
    for (const f of SHAPE) $(f + "-range").value = sliderPos(f, state[f]);
    document.querySelector('.slider[data-field="new_tokens"]').classList.toggle("off", state.phase !== "generate");
    $("exact").checked = exact;
    for (const b of document.querySelectorAll("#tabs button")) {
      b.setAttribute("aria-selected", String(b.dataset.view === view));
    }
    for (const v of ["layers", "roofline", "memory", "formula"]) $("view-" + v).hidden = v !== view;
  }
  function changed(field, value, now) {
    if (field === "phase" && value === "decode" && state.phase !== "decode" && Number(state.seq) > 1) {
      state.past = String(Number(state.past) + Number(state.seq));  // a decode step after the prompt
      state.seq = "1";
    }
    state[field] = value;
    showState();
    writeURL();
    schedule(now ? 0 : DEBOUNCE_MS);
  }
  function bindControls() {
    for (const f of FIELDS) {
      const input = $(f);
      if (!input) continue;
      if (f === "model") {  // a name is asked for when complete (Enter, leaving the box, a pick from the list)
        input.addEventListener("change", () => changed(f, input.value.trim(), true));
        continue;
      }
      const ev = input.tagName === "SELECT" ? "change" : "input";
      input.addEventListener(ev, () => changed(f, input.value.trim(), input.tagName === "SELECT"));
    }
    for (const f of SHAPE) {
      $(f + "-range").addEventListener("input", (e) => changed(f, String(sliderValue(f, Number(e.target.value)))));
    }
    $("exact").addEventListener("change", (e) => { exact = e.target.checked; writeURL(); render(); });
    for (const b of document.querySelectorAll("#tabs button")) {
      b.addEventListener("click", () => { view = b.dataset.view; showState(); writeURL(); render(); });
    }
    $("upload").addEventListener("change", async (e) => {
      const file = e.target.files[0];
      if (!file) return;
      status("uploading " + file.name + " ...", "busy");
      const r = await fetch("/api/upload", {method: "POST", body: await file.text(),
                                            headers: {"Content-Type": "application/json"}});
      const body = await r.json();
      if (!r.ok) { status(body.error, "error"); return; }
      changed("model", body.model, true);
    });
  }

  // --- fetching ---------------------------------------------------------------------------------------
  function status(text, cls) {
    const s = $("status");
    s.textContent = text || "";
    s.className = "status " + (cls || "");
  }
  function schedule(delay) {
    clearTimeout(timer);
    timer = setTimeout(load, delay);
  }
  async function load() {
    const mine = ++seq;
    if (inflight) inflight.abort();
    inflight = new AbortController();
    document.body.dataset.loading = "1";
    status("computing ...", "busy");
    try {
      const r = await fetch("/api/view?" + apiQuery(), {signal: inflight.signal});
      const body = await r.json();
      if (mine !== seq) return;
      if (!r.ok) { status(body.error, "error"); document.body.dataset.loading = "error"; return; }
      data = body;
      status("");
      render();
      document.body.dataset.loading = "0";
      document.body.dataset.request = apiQuery();
    } catch (err) {
      if (err.name !== "AbortError" && mine === seq) {
        status(String(err), "error");
        document.body.dataset.loading = "error";
      }
    }
  }

  // --- views ------------------------------------------------------------------------------------------
  function render() {
    if (!data) return;
    const p = data.profile;
    $("headline").textContent = `${p.model} (${p.model_type}) · B=${p.batch} S=${p.seq} P=${p.past} · ` +
      `${data.roofline.phase} on ${data.roofline.device}`;
    for (const m of document.querySelectorAll(".metric-name")) m.textContent = meta.labels[state.metric] || state.metric;
    renderSummary();
    if (view === "layers") renderLayers();
    if (view === "roofline") renderRoofline();
    if (view === "memory") renderMemory();
    if (view === "formula") $("formula").textContent = data.formula || "";
  }

  function renderSummary() {
    const p = data.profile, r = data.roofline, mem = data.memory;
    const box = $("summary");
    box.replaceChildren();
    const t = el("table", {id: "summary-table"});
    const head = el("tr"), row = el("tr");
    for (const [m, v] of Object.entries(p.totals)) {
      head.append(el("th", {}, meta.labels[m] || m));
      const c = el("td", {"class": "num", "data-metric": m, "data-value": String(v)}, grouped(v));
      c.title = human(v);
      row.append(c);
    }
    t.append(el("caption", {}, `Counts of one forward, scope ${p.scope} (everything but lm_head), ` +
                                `B=${p.batch} S=${p.seq} P=${p.past}`), head, row);
    box.append(t);
    const line = el("p", {"class": "kpis"});
    const add = (label, text, id, value) => {
      const s = el("span", {"class": "kpi", id: id, "data-value": String(value)});
      s.append(el("b", {}, label + " "), document.createTextNode(text));
      line.append(s);
    };
    add("latency", seconds(r.latency_s), "kpi-latency", r.latency_s);
    add("tokens/s", r.tokens_per_s.toPrecision(4), "kpi-tps", r.tokens_per_s);
    add("bound", r.bound, "kpi-bound", r.bound);
    add("MFU", (100 * r.mfu).toFixed(1) + "%", "kpi-mfu", r.mfu);
    add("memory", `${bytes(mem.total)} of ${bytes(mem.capacity)}` + (mem.fits ? "" : " — does not fit"), "kpi-mem",
        mem.total);
    box.append(line);
    for (const n of p.notes || []) box.append(el("p", {"class": "note"}, n));
  }

  function layerBars() {
    // [{label, parts: {part: value}}] for the chosen metric: each layer by part; embed, norm, lm_head whole.
    const m = state.metric;
    const rows = data.layers.rows;
    const bars = [];
    let current = null;
    for (const row of rows) {
      if (row.label === "total") continue;
      if (row.level === 0) {
        current = {label: row.label, parts: {}, total: row.values[m] ?? 0, layer: row.label.startsWith("layers.")};
        if (!current.layer) current.parts.other = current.total;
        bars.push(current);
      } else if (current) {
        current.parts[row.label] = row.values[m] ?? 0;
      }
    }
    return bars;
  }

  function renderLayers() {
    const bars = layerBars();
    const box = $("layer-bars");
    box.replaceChildren();
    const W = Math.max(640, box.clientWidth || 900), H = 290, L = 70, B = 70, T = 10;
    const s = svg("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", height: H, role: "img", id: "layer-svg"});
    const max = Math.max(1, ...bars.map((b) => b.total));
    const bw = (W - L - 10) / Math.max(1, bars.length);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    for (let k = 0; k <= 4; k++) {
      const v = max * k / 4;
      s.append(svg("line", {x1: L, x2: W - 10, y1: y(v), y2: y(v), "class": "grid"}));
      s.append(svg("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end", "class": "tick"}, human(Math.round(v))));
    }
    bars.forEach((b, i) => {
      let base = 0;
      const g = svg("g", {"class": "bar", "data-label": b.label, "data-total": String(b.total)});
      for (const [part, v] of Object.entries(b.parts)) {
        if (v <= 0) continue;
        const r = svg("rect", {x: L + i * bw + bw * 0.1, width: Math.max(1, bw * 0.8), y: y(base + v),
                               height: y(base) - y(base + v), fill: PART_COLORS[part] || "#888"});
        r.append(svg("title", {}, `${b.label} ${part}: ${grouped(v)}`));
        g.append(r);
        base += v;
      }
      s.append(g);
      if (bars.length <= 40 || i % Math.ceil(bars.length / 40) === 0) {
        const lx = L + (i + 0.5) * bw;
        s.append(svg("text", {x: lx, y: H - B + 12, "text-anchor": "end", "class": "tick",
                              transform: `rotate(-45 ${lx} ${H - B + 12})`}, b.label.replace("layers.", "")));
      }
    });
    const legend = el("div", {"class": "legend"});
    for (const [part, color] of Object.entries(PART_COLORS)) {
      const item = el("span");
      item.append(el("i", {style: `background:${color}`}), document.createTextNode(part));
      legend.append(item);
    }
    box.append(s, legend);

    const t = $("layer-table");
    t.replaceChildren();
    const metrics = data.layers.metrics;
    const head = el("tr");
    head.append(el("th", {}, "row"));
    for (const m of metrics) head.append(el("th", {"class": "num"}, meta.labels[m] || m));
    t.append(head);
    for (const row of data.layers.rows) {
      const tr = el("tr", {"class": "level" + row.level + (row.label === "total" ? " total" : ""),
                           "data-label": row.label});
      tr.append(el("td", {}, (row.level ? "  " : "") + row.label));
      for (const m of metrics) tr.append(numCell("td", row.values[m], null));
      t.append(tr);
    }
  }

  function logScale(lo, hi, a, b) {
    const l0 = Math.log10(lo), l1 = Math.log10(hi);
    return (v) => a + (b - a) * (Math.log10(v) - l0) / (l1 - l0);
  }

  function rooflinePoints() {
    const r = data.roofline;
    if (r.nodes && r.nodes.length) {
      return r.nodes.filter((n) => n.flops > 0 && n.bytes > 0 && n.time_s > 0)
        .map((n) => ({label: n.path, kind: n.kind, x: n.flops / n.bytes, y: n.flops / n.time_s, node: n}));
    }
    const out = [];
    for (const [label, part] of [["prefill", r.prefill], ["decode", r.decode]]) {
      if (part && part.io.total > 0 && part.flops.total > 0 && part.latency_s > 0) {
        out.push({label: label, kind: label, x: part.flops.total / part.io.total, y: part.flops.total / part.latency_s});
      }
    }
    return out;
  }

  function renderRoofline() {
    const r = data.roofline, dev = data.device;
    const stats = $("roofline-stats");
    stats.replaceChildren();
    const items = [["latency", seconds(r.latency_s), "latency_s", r.latency_s],
                   ["FLOPs", grouped(r.flops.total), "flops", r.flops.total],
                   ["bytes", grouped(r.io.total), "bytes", r.io.total],
                   ["tokens/s", r.tokens_per_s.toPrecision(6), "tokens_per_s", r.tokens_per_s],
                   ["MFU", (100 * r.mfu).toFixed(2) + "%", "mfu", r.mfu],
                   ["MBU", (100 * r.mbu).toFixed(2) + "%", "mbu", r.mbu],
                   ["bound", r.bound, "bound", r.bound]];
    if (r.ttft_s != null) items.push(["TTFT", seconds(r.ttft_s), "ttft_s", r.ttft_s]);
    if (r.tpot_s != null) items.push(["TPOT", seconds(r.tpot_s), "tpot_s", r.tpot_s]);
    for (const [label, text, key, value] of items) {
      const d = el("div", {"class": "stat", "data-key": key, "data-value": String(value)});
      d.append(el("b", {}, label), el("span", {}, text));
      stats.append(d);
    }
    const pts = rooflinePoints();
    const box = $("roofline-chart");
    box.replaceChildren();
    const W = Math.max(640, box.clientWidth || 900), H = 380, L = 80, B = 44, T = 12, R = 16;
    const ridge = dev.peak_flops / dev.bandwidth;
    const xs = pts.map((p) => p.x).concat([ridge]);
    const xlo = 10 ** Math.floor(Math.log10(Math.min(...xs)) - 0.5), xhi = 10 ** Math.ceil(Math.log10(Math.max(...xs)) + 0.5);
    const ylo = 10 ** Math.floor(Math.log10(Math.min(dev.bandwidth * xlo, ...pts.map((p) => p.y)))),
          yhi = 10 ** Math.ceil(Math.log10(dev.peak_flops * 1.5));
    const x = logScale(xlo, xhi, L, W - R), y = logScale(ylo, yhi, H - B, T);
    const s = svg("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", height: H, role: "img", id: "roofline-svg"});
    for (let e = Math.log10(xlo); e <= Math.log10(xhi) + 1e-9; e++) {
      s.append(svg("line", {x1: x(10 ** e), x2: x(10 ** e), y1: T, y2: H - B, "class": "grid"}));
      s.append(svg("text", {x: x(10 ** e), y: H - B + 16, "text-anchor": "middle", "class": "tick"}, "1e" + Math.round(e)));
    }
    for (let e = Math.log10(ylo); e <= Math.log10(yhi) + 1e-9; e++) {
      s.append(svg("line", {x1: L, x2: W - R, y1: y(10 ** e), y2: y(10 ** e), "class": "grid"}));
      s.append(svg("text", {x: L - 6, y: y(10 ** e) + 4, "text-anchor": "end", "class": "tick"}, si(10 ** e, "FLOP/s")));
    }
    s.append(svg("text", {x: (L + W) / 2, y: H - 6, "text-anchor": "middle", "class": "axis"}, "arithmetic intensity (FLOP / byte)"));
    const roof = `M ${x(xlo)} ${y(dev.bandwidth * xlo)} L ${x(ridge)} ${y(dev.peak_flops)} L ${x(xhi)} ${y(dev.peak_flops)}`;
    s.append(svg("path", {d: roof, "class": "roof"}));
    s.append(svg("text", {x: x(xhi) - 4, y: y(dev.peak_flops) - 6, "text-anchor": "end", "class": "tick"},
                 `${dev.name}: ${si(dev.peak_flops, "FLOP/s")} (${dev.compute_dtype}), ${si(dev.bandwidth, "B/s")}`));
    const kinds = [...new Set(pts.map((p) => p.kind))];
    const color = (k) => KIND_COLORS[kinds.indexOf(k) % KIND_COLORS.length];
    const g = svg("g", {id: "roofline-points"});
    for (const p of pts) {
      const c = svg("circle", {cx: x(p.x), cy: y(p.y), r: 4, fill: color(p.kind), "class": "pt", "data-path": p.label});
      c.append(svg("title", {}, `${p.label} (${p.kind})\nintensity ${p.x.toPrecision(4)} FLOP/B\n` +
                                `${si(p.y, "FLOP/s")}` + (p.node ? `\n${p.node.bound}-bound, ${seconds(p.node.time_s)}` : "")));
      g.append(c);
    }
    s.append(g);
    const legend = el("div", {"class": "legend"});
    for (const k of kinds) {
      const item = el("span");
      item.append(el("i", {style: `background:${color(k)}`}), document.createTextNode(k));
      legend.append(item);
    }
    box.append(s, legend);

    const t = $("node-table");
    t.replaceChildren();
    const nodes = (r.nodes || []).slice().sort((a, b) => b.time_s - a.time_s).slice(0, 15);
    if (!nodes.length) return;
    t.append(el("caption", {}, `the ${nodes.length} slowest of ${r.nodes.length} nodes`));
    const head = el("tr");
    for (const h of ["node", "kind", "FLOPs", "bytes", "FLOP/B", "time", "bound"]) head.append(el("th", {}, h));
    t.append(head);
    for (const n of nodes) {
      const tr = el("tr", {"data-path": n.path});
      tr.append(el("td", {}, n.path), el("td", {}, n.kind), numCell("td", n.flops), numCell("td", n.bytes),
                el("td", {"class": "num"}, n.intensity === null ? "on chip" : n.intensity.toPrecision(4)), el("td", {"class": "num"}, seconds(n.time_s)),
                el("td", {}, n.bound));
      t.append(tr);
    }
  }

  function renderMemory() {
    const m = data.memory;
    const box = $("memory-chart");
    box.replaceChildren();
    const W = Math.max(640, box.clientWidth || 900), H = 90, L = 10, R = 10;
    const full = Math.max(m.total, m.capacity);
    const x = (v) => L + (W - L - R) * v / full;
    const s = svg("svg", {viewBox: `0 0 ${W} ${H}`, width: "100%", height: H, role: "img", id: "memory-svg"});
    const parts = [["weights", m.weights, "#4e79a7"], ["kv_cache", m.kv_cache, "#f28e2b"],
                   ["activations", m.activations, "#59a14f"]];
    s.append(svg("rect", {x: x(0), y: 20, width: x(m.capacity) - x(0), height: 40, "class": "track"}));
    let base = 0;
    for (const [label, v, c] of parts) {
      const r = svg("rect", {x: x(base), y: 20, width: Math.max(0, x(base + v) - x(base)), height: 40, fill: c});
      r.append(svg("title", {}, `${label}: ${bytes(v)}`));
      s.append(r);
      base += v;
    }
    s.append(svg("line", {x1: x(m.capacity), x2: x(m.capacity), y1: 8, y2: 72, "class": m.fits ? "cap" : "cap over"}));
    s.append(svg("text", {x: Math.min(x(m.capacity), W - R) - 4, y: 84, "text-anchor": "end", "class": "tick"},
                 `capacity ${bytes(m.capacity)}`));
    const legend = el("div", {"class": "legend"});
    for (const [label, , c] of parts) {
      const item = el("span");
      item.append(el("i", {style: `background:${c}`}), document.createTextNode(label));
      legend.append(item);
    }
    box.append(s, legend);
    const t = $("memory-table");
    t.replaceChildren();
    t.append(el("caption", {}, `batch ${m.batch}, prompt ${m.seq}, context ${m.context} tokens: ` +
                               (m.fits ? "fits" : "does NOT fit")));
    for (const [label, key] of [["weights", "weights"], ["KV cache", "kv_cache"], ["activations (peak)", "activations"],
                                ["total", "total"], ["capacity", "capacity"]]) {
      const tr = el("tr", {"data-key": key});
      tr.append(el("th", {}, label), el("td", {"class": "num", "data-value": String(m[key])}, grouped(m[key]) + " B"),
                el("td", {"class": "num"}, bytes(m[key])),
                el("td", {"class": "num"}, (100 * m[key] / m.capacity).toFixed(1) + "%"));
      t.append(tr);
    }
  }

  // --- start ------------------------------------------------------------------------------------------
  async function start() {
    if (STATIC) {
      state = Object.assign({}, STATIC.view.request);
      data = STATIC.view;
      document.body.classList.add("static");
      status("static report of one model and shape (llm-profiler ui --html); `llm-profiler ui` explores", "busy");
      setupControls();
      for (const input of document.querySelectorAll("#controls input, #controls select")) {
        if (input.id !== "exact") input.disabled = true;
      }
      $("exact").addEventListener("change", (e) => { exact = e.target.checked; render(); });
      for (const b of document.querySelectorAll("#tabs button")) {
        b.addEventListener("click", () => { view = b.dataset.view; showState(); render(); });
      }
      showState();
      render();
      document.body.dataset.loading = "0";
      return;
    }
    try {
      meta = await (await fetch("/api/meta")).json();
    } catch (err) {
      status("cannot reach the explorer's server: " + err, "error");
      return;
    }
    setupControls();
    state = readURL();
    bindControls();
    showState();
    writeURL();
    load();
  }
  start();
})();
