// susee live view: vanilla JS, no external assets. Every text from the
// service goes into the page with textContent (never parsed as HTML), so a device
// id or a description can never become markup.
"use strict";

const PAGE_ROWS = 100;          // rows rendered at once: 5,000 devices stay fast
const SPARK_EVERY_MS = 120000;  // today's curve changes slowly: refetch each one every 2 minutes
const SVG_NS = "http://www.w3.org/2000/svg";
const RATE_WINDOW_S = 30;

const state = {
  devices: [], now: 0, period: 5, sortKey: "id", sortDir: 1, page: 0,
  rowsSeen: [], dbReady: false, sparks: new Map(), timer: null,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!response.ok) throw new Error(path.split("?")[0] + ": HTTP " + response.status);
  return response.json();
}

function showError(message) {
  const footer = $("error");
  footer.hidden = !message;
  footer.textContent = message || "";
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return Math.max(0, Math.round(seconds)) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return Math.round(seconds / 3600) + " h";
  return Math.round(seconds / 86400) + " d";
}

function percent(fraction) {
  return fraction === null || fraction === undefined ? "–" : (100 * fraction).toFixed(1) + " %";
}

function number(value, digits) {
  return value === null || value === undefined ? "–" : value.toFixed(digits);
}

function utc(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
}

// --- site ---

async function refreshSite() {
  const site = await getJSON("api/site");
  state.period = site.period_s;
  const db = $("site-db");
  if (site.online) {
    db.textContent = "online";
    db.className = "";
  } else {
    const since = site.outage_since ? utc(site.outage_since) + " UTC" : "?";
    db.textContent = "OUTAGE since " + since + ", " + site.spool_rows + " rows in the spool";
    db.className = "offline";
  }
  // Rows arrive in batches: the rate is taken over the last RATE_WINDOW_S, not between two refreshes.
  state.rowsSeen.push([site.now, site.rows_written]);
  while (state.rowsSeen.length > 2 && site.now - state.rowsSeen[1][0] >= RATE_WINDOW_S) state.rowsSeen.shift();
  const [t0, rows0] = state.rowsSeen[0];
  if (site.now > t0) $("site-rate").textContent = ((site.rows_written - rows0) / (site.now - t0)).toFixed(0);
  // Curves come from the database: not asked for while it is away or before its first rows.
  state.dbReady = site.online && site.rows_written > 0;
  $("site-devices").textContent = site.devices;
  $("site-version").textContent = site.version;
  $("site-uptime").textContent = ago(site.uptime_s);
  $("site-updated").textContent = utc(site.now).slice(11) + " UTC";
}

// --- fleet ---

function sortValue(device, key) {
  if (key === "age") return device.last_good === null ? Infinity : state.now - device.last_good;
  const value = device[key];
  return value === null || value === undefined ? -Infinity : value;
}

function visibleDevices() {
  const text = $("filter").value.trim().toLowerCase();
  const status = $("status-filter").value;
  const shown = state.devices.filter((d) => {
    if (status && d.status !== status) return false;
    if (!text) return true;
    if (d.id.toLowerCase().includes(text)) return true;
    return Object.entries(d.tags || {}).some(([k, v]) => (k + "=" + v).toLowerCase().includes(text));
  });
  const key = state.sortKey, dir = state.sortDir;
  shown.sort((a, b) => {
    const x = sortValue(a, key), y = sortValue(b, key);
    if (x < y) return -dir;
    if (x > y) return dir;
    return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  });
  return shown;
}

function statusCell(device) {
  const cell = el("td", device.status, "status-" + device.status.replace(/ /g, "-"));
  if (device.status === "failing" && device.problem) cell.textContent = "failing: " + device.problem;
  return cell;
}

function renderFleet() {
  const shown = visibleDevices();
  const pages = Math.max(1, Math.ceil(shown.length / PAGE_ROWS));
  state.page = Math.min(state.page, pages - 1);
  const start = state.page * PAGE_ROWS;
  const rows = document.createDocumentFragment();
  for (const device of shown.slice(start, start + PAGE_ROWS)) {
    const row = document.createElement("tr");
    row.dataset.device = device.id;
    const idCell = el("td");
    const link = el("a", device.id);
    link.href = "#device=" + encodeURIComponent(device.id);
    idCell.appendChild(link);
    row.appendChild(idCell);
    row.appendChild(statusCell(device));
    row.appendChild(el("td", device.last_good === null ? "–" : ago(state.now - device.last_good) + " ago", "num"));
    row.appendChild(el("td", number(device.delay_ms, 1), "num"));
    row.appendChild(el("td", percent(device.complete_hour), "num"));
    row.appendChild(el("td", percent(device.complete_day), "num"));
    row.appendChild(el("td", number(device.power_w, 1), "num power"));
    const spark = el("td");
    spark.className = "spark";
    const cached = state.sparks.get(device.id);
    if (cached && cached.svg) spark.appendChild(cached.svg.cloneNode(true));
    row.appendChild(spark);
    rows.appendChild(row);
  }
  $("fleet-rows").replaceChildren(rows);
  const failing = state.devices.filter((d) => d.status !== "good").length;
  $("counts").textContent = shown.length + " shown of " + state.devices.length + ", " + failing + " not good";
  $("page-info").textContent = " page " + (state.page + 1) + " of " + pages + " ";
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
  document.querySelectorAll("#fleet th[data-key]").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.key === state.sortKey && state.sortDir > 0);
    th.classList.toggle("sorted-desc", th.dataset.key === state.sortKey && state.sortDir < 0);
  });
  fetchSparks(shown.slice(start, start + PAGE_ROWS));
}

function sparkline(points, width, height) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  if (points.length < 2) return svg;
  const day0 = Math.floor(points[0][0] / 86400) * 86400;
  let low = Infinity, high = -Infinity;
  for (const [, v] of points) { low = Math.min(low, v); high = Math.max(high, v); }
  const span = high - low || 1;
  const coords = points.map(([t, v]) =>
    ((t - day0) / 86400 * width).toFixed(1) + "," + (height - 1 - (v - low) / span * (height - 2)).toFixed(1));
  const line = document.createElementNS(SVG_NS, "polyline");
  line.setAttribute("points", coords.join(" "));
  svg.appendChild(line);
  return svg;
}

async function fetchSparks(devices) {
  if (!state.dbReady) return;
  const now = Date.now();
  for (const device of devices) {
    if (!device.power_param) continue;
    const cached = state.sparks.get(device.id);
    if (cached && now - cached.at < SPARK_EVERY_MS) continue;
    state.sparks.set(device.id, { at: now, svg: cached ? cached.svg : null });
    try {
      const series = await getJSON("api/series?device=" + encodeURIComponent(device.id) +
        "&param=" + encodeURIComponent(device.power_param) + "&step=300");
      const svg = sparkline(series.points, 120, 22);
      state.sparks.set(device.id, { at: now, svg });
      const row = document.querySelector('tr[data-device="' + CSS.escape(device.id) + '"] td.spark');
      if (row) row.replaceChildren(svg.cloneNode(true));
    } catch (error) {
      state.sparks.delete(device.id);  // tried again at the next refresh
    }
  }
}

async function refreshFleet() {
  const data = await getJSON("api/devices");
  const columns = data.columns;
  state.devices = data.devices.map((row) => {
    const device = {};
    columns.forEach((name, index) => { device[name] = row[index]; });
    return device;
  });
  state.now = data.now;
  renderFleet();
}

// --- one device ---

function currentDevice() {
  const match = location.hash.match(/^#device=(.+)$/);
  return match ? decodeURIComponent(match[1]) : null;
}

function qualityStrip(buckets) {
  const svg = document.createElementNS(SVG_NS, "svg");
  const width = 8;
  svg.setAttribute("width", 96 * width);
  svg.setAttribute("height", 18);
  for (const bucket of buckets) {
    const [hh, mm] = bucket.bucket.slice(11, 16).split(":").map(Number);
    const slot = hh * 4 + Math.floor(mm / 15);
    const rect = document.createElementNS(SVG_NS, "rect");
    const share = bucket.samples ? bucket.good / bucket.samples : 0;
    rect.setAttribute("class", share >= 0.999 ? "good" : share > 0 ? "part" : "bad");
    rect.setAttribute("x", slot * width);
    rect.setAttribute("width", width - 1);
    rect.setAttribute("height", 18);
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = bucket.bucket.slice(11, 16) + " UTC: " + bucket.good + " of " + bucket.samples + " good";
    rect.appendChild(title);
    svg.appendChild(rect);
  }
  return svg;
}

// Today's 15-minute consumption: one bar per interval in its band's colour, the estimated
// share of its energy (a gap's apportioned part) stacked on top in a paler shade.
const BAND_CLASSES = 6;

function bandClass(bands, band) {
  return "band-" + (Math.max(0, bands.indexOf(band)) % BAND_CLASSES);
}

function energyText(value, unit) {
  if (value === null || value === undefined) return "–";
  return Math.abs(value) >= 10000 ? (value / 1000).toFixed(2) + " k" + unit : value.toFixed(1) + " " + unit;
}

function consumptionBars(c) {
  const width = 8, height = 60;
  const slots = Math.max(1, Math.round((c.day_end_s - c.day_start_s) / 900));
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "bars");
  svg.setAttribute("width", slots * width);
  svg.setAttribute("height", height);
  let top = 0;
  for (const i of c.intervals) top = Math.max(top, i.energy || 0);
  for (const i of c.intervals) {
    const x = Math.round((i.start_s - c.day_start_s) / 900) * width;
    const energy = Math.max(0, i.energy || 0);
    const estimated = energy * Math.min(100, Math.max(0, i.estimated_pct || 0)) / 100;
    const parts = [[energy - estimated, ""], [estimated, " estimated"]];
    let y = height;
    const group = document.createElementNS(SVG_NS, "g");
    group.setAttribute("class", bandClass(c.bands, i.band) + (i.energy === null ? " empty" : ""));
    for (const [value, kind] of parts) {
      const h = top > 0 ? value / top * (height - 2) : 0;
      const drawn = Math.max(i.energy === null || kind ? 0 : 1, h);  // a measured 0 Wh still shows a hairline
      const rect = document.createElementNS(SVG_NS, "rect");
      rect.setAttribute("class", "part" + kind);
      rect.setAttribute("x", x);
      rect.setAttribute("y", (y - drawn).toFixed(1));
      rect.setAttribute("width", width - 1);
      rect.setAttribute("height", drawn.toFixed(1));
      group.appendChild(rect);
      y -= h;
    }
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = i.start.slice(11, 16) + " " + i.band + ": " + energyText(i.energy, c.unit) +
      (i.energy === null ? " (no data)" : ", " + number(i.estimated_pct, 0) + " % estimated, " +
        number(i.completeness_pct, 0) + " % complete");
    group.appendChild(title);
    svg.appendChild(group);
  }
  return svg;
}

function consumptionView(c) {
  const info = el("p", "Counter " + c.param + " (" + c.unit + "), " + c.day + " (" + c.timezone + "), tariff " +
    c.tariff + ". Paler: the estimated share (energy of a gap apportioned by time).", "note");
  const table = el("table");
  table.id = "consumption-totals";
  const head = el("tr");
  for (const text of ["Band", "Energy today", "Estimated", "Complete", "Peak 15 min", "at"]) head.appendChild(el("th", text));
  const thead = el("thead");
  thead.appendChild(head);
  const body = el("tbody");
  for (const t of c.totals) {
    const row = el("tr");
    row.dataset.band = t.band;
    const name = el("td");
    name.appendChild(el("span", "", "swatch " + (c.bands.includes(t.band) ? bandClass(c.bands, t.band) : "band-total")));
    name.appendChild(document.createTextNode(" " + t.band));
    row.appendChild(name);
    const energy = el("td", energyText(t.energy, c.unit), "num energy");
    energy.dataset.value = t.energy === null ? "" : String(t.energy);  // the exact figure, for other tools
    row.appendChild(energy);
    row.appendChild(el("td", number(t.estimated_pct, 1) + " %", "num"));
    row.appendChild(el("td", number(t.completeness_pct, 1) + " %", "num"));
    row.appendChild(el("td", t.peak_w === null ? "–" : t.peak_w.toFixed(0) + " W", "num"));
    row.appendChild(el("td", t.peak_at ? t.peak_at.slice(11, 16) : "–"));
    body.appendChild(row);
  }
  table.appendChild(thead);
  table.appendChild(body);
  return [info, consumptionBars(c), table];
}

async function refreshDevice(id) {
  const query = "?device=" + encodeURIComponent(id);
  const [device, last] = await Promise.all([getJSON("api/device" + query), getJSON("api/last" + query)]);
  $("device-id").textContent = device.device;
  $("device-status").textContent = device.problem ? device.status + ": " + device.problem : device.status;
  $("last-source").textContent = last.source === "database" ? "(from the database)"
    : "(the database is not reachable: shown again when it answers)";
  const rows = document.createDocumentFragment();
  for (const v of last.values) {
    const row = document.createElement("tr");
    row.dataset.param = v.param;
    for (const [text, cls] of [[v.param], [v.acronym], [v.descr_eng], [v.descr_ita],
      [v.value === null ? "–" : String(v.value), "num value"], [v.unit], [v.code === 0 ? "0" : v.code + " " + v.code_text],
      [v.date.slice(0, 19)]]) {
      row.appendChild(el("td", text, cls));
    }
    rows.appendChild(row);
  }
  $("last-rows").replaceChildren(rows);
  const consumption = $("consumption");
  if (device.consumption === null) {
    consumption.className = "placeholder";
    consumption.replaceChildren(el("span", "– (" + (device.consumption_note || "not available") + ")"));
  } else {
    consumption.className = "";
    consumption.replaceChildren(...consumptionView(device.consumption));
  }
  const quality = $("quality");
  if (device.quality === null) quality.replaceChildren(el("span", "– (15-minute rollups not available yet)", "placeholder"));
  else quality.replaceChildren(qualityStrip(device.quality));
}

// --- refresh loop and events ---

async function refresh() {
  const device = currentDevice();
  $("fleet-view").hidden = device !== null;
  $("device-view").hidden = device === null;
  try {
    await refreshSite();
    if (device === null) await refreshFleet();
    else await refreshDevice(device);
    showError("");
  } catch (error) {
    showError("Cannot reach the service: " + error.message + " (retrying)");
  }
  clearTimeout(state.timer);
  // At least once per sample period, at most once a second.
  state.timer = setTimeout(refresh, Math.max(1000, Math.min(state.period, 10) * 1000));
}

function start() {
  document.querySelectorAll("#fleet th[data-key]").forEach((th) => th.addEventListener("click", () => {
    const key = th.dataset.key;
    state.sortDir = state.sortKey === key ? -state.sortDir : 1;
    state.sortKey = key;
    renderFleet();
  }));
  $("filter").addEventListener("input", () => { state.page = 0; renderFleet(); });
  $("status-filter").addEventListener("change", () => { state.page = 0; renderFleet(); });
  $("prev").addEventListener("click", () => { state.page -= 1; renderFleet(); });
  $("next").addEventListener("click", () => { state.page += 1; renderFleet(); });
  window.addEventListener("hashchange", refresh);
  refresh();
}

document.addEventListener("DOMContentLoaded", start);
