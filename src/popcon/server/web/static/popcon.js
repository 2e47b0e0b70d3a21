/* popcon dashboard: plain JavaScript, no build step. Reads the collector's JSON API
 * (api/v1/...) and the two dashboard answers (dashboard/api/...), all under the page's prefix.
 * The address holds the view and the API's own query parameters, so every view can be
 * bookmarked: PREFIX[library/NAME|unused|user-installed|environments]?since=24h&env=...
 */
"use strict";
(function () {
  const PREFIX = document.querySelector('meta[name="popcon-prefix"]').content || "/";
  const TOKEN_KEY = "popcon-token";
  const SHOWN_ROWS = 200;
  const ROWS_BATCH = 100;
  const COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4",
    "#ec4899", "#84cc16", "#f97316", "#64748b"];

  const view = document.getElementById("view");
  const controls = document.getElementById("controls");
  const envSelect = document.getElementById("env");
  const labelSelect = document.getElementById("label");
  const search = document.getElementById("search");
  const csvButton = document.getElementById("csv");
  const privacy = document.getElementById("privacy");

  let charts = [];
  let csvTable = null; // {name, columns: [[heading, key]], rows: [...]} of what is shown
  let renderId = 0;
  let environments = null;

  // -- small helpers -----------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const isHidden = (value) => typeof value === "string";
  /** A count for sorting and charts: a hidden count ("fewer than N") sorts between 0 and 1. */
  const sortValue = (value) => (isHidden(value) ? 0.5 : Number(value || 0));

  function countCell(value, extraClass) {
    const td = el("td", { class: "num" + (extraClass ? " " + extraClass : "") });
    if (isHidden(value)) td.append(el("span", { class: "hidden-count", text: value }));
    else td.textContent = Number(value).toLocaleString();
    return td;
  }

  function share(row) {
    if (isHidden(row.processes) || isHidden(row.direct) || !row.processes) return null;
    return row.direct / row.processes;
  }

  function shareCell(row) {
    const value = share(row);
    const td = el("td", { class: "num" });
    if (value === null) {
      td.append(el("span", { class: "hidden-count", text: isHidden(row.direct) ? row.direct : "–" }));
      return td;
    }
    const fill = el("i");
    fill.style.width = Math.round(value * 100) + "%";
    td.append(el("span", { class: "share" }, el("span", { class: "bar" }, fill),
      Math.round(value * 100) + "%"));
    return td;
  }

  function formatTime(iso, span) {
    const date = new Date(iso);
    if (span <= 2 * 86400) return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    if (span <= 14 * 86400) {
      return date.toLocaleString([], { weekday: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
    }
    return date.toLocaleDateString([], { day: "numeric", month: "short" });
  }

  function spanOf(answer) {
    return (Date.parse(answer.until) - Date.parse(answer.from)) / 1000;
  }

  function windowText(answer) {
    const options = { dateStyle: "medium", timeStyle: "short" };
    return new Date(answer.from).toLocaleString([], options) + " – " +
      new Date(answer.until).toLocaleString([], options);
  }

  function versionsText(versions) {
    return versions.map((v) => v.version + (isHidden(v.processes) ? " (" + v.processes + ")" :
      " (" + v.processes + ")")).join(", ");
  }

  // -- where we are --------------------------------------------------------------------------

  function currentRoute() {
    let path = location.pathname;
    path = path.startsWith(PREFIX) ? path.slice(PREFIX.length) : "";
    const params = new URLSearchParams(location.search);
    if (path.startsWith("library/")) {
      return { view: "library", name: decodeURIComponent(path.slice(8)), params };
    }
    const known = ["unused", "user-installed", "environments"];
    return { view: known.includes(path) ? path : "libraries", params };
  }

  function href(viewPath, params) {
    const query = params.toString();
    return PREFIX + viewPath + (query ? "?" + query : "");
  }

  function navigate(url, replace) {
    if (replace) history.replaceState(null, "", url);
    else history.pushState(null, "", url);
    render();
  }

  /** The query parameters of the current address, changed by `changes` (null removes). */
  function withParams(changes) {
    const params = new URLSearchParams(location.search);
    for (const [key, value] of Object.entries(changes)) {
      if (value === null || value === "") params.delete(key);
      else params.set(key, value);
    }
    return params;
  }

  /** The parameters an API endpoint accepts, out of the page's. */
  function apiParams(params, allowed) {
    const out = new URLSearchParams();
    for (const [key, value] of params) {
      if (allowed.includes(key) || (allowed.includes("label") && key.startsWith("label."))) {
        out.set(key, value);
      }
    }
    if (!out.has("since") && !out.has("from")) out.set("since", "6h");
    return out;
  }

  // -- the API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function takeTokenFromAddress() {
    const params = new URLSearchParams(location.search);
    const token = params.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      params.delete("token");
      history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
    }
  }

  async function api(path, params) {
    const query = params ? params.toString() : "";
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "token " + token;
    // Behind JupyterHub the login is a cookie, and a script's requests must also show the
    // Hub's XSRF token (the _xsrf cookie its OAuth callback set for this prefix).
    const xsrf = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]+)/);
    if (xsrf) headers["X-XSRFToken"] = decodeURIComponent(xsrf[1]);
    const response = await fetch(PREFIX + path + (query ? "?" + query : ""), {
      headers, credentials: "same-origin",
    });
    let body = null;
    try { body = await response.json(); } catch (error) { body = null; }
    if (!response.ok) {
      throw new ApiError(response.status, (body && body.error) || response.statusText);
    }
    return body;
  }

  function showError(error) {
    view.replaceChildren();
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      view.append(el("h1", { text: error.status === 401 ? "A token is needed" : "Not allowed" }),
        el("p", { class: "error", text: error.message }));
      if (error.status === 401 || sessionStorage.getItem(TOKEN_KEY)) view.append(tokenForm());
      return;
    }
    view.append(el("p", { class: "error", text: "Could not load: " + error.message }));
  }

  function tokenForm() {
    const input = el("input", { type: "password", name: "token", placeholder: "POPCON_API_TOKEN",
      autocomplete: "off", "aria-label": "API token" });
    const form = el("form", { class: "token-form" }, input,
      el("button", { type: "submit", class: "button", text: "Use token" }));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      else sessionStorage.removeItem(TOKEN_KEY);
      environments = null;
      render();
    });
    return el("div", { class: "card" },
      el("p", { class: "note", text: "Paste the collector's API token (the POPCON_API_TOKEN it " +
        "was started with). It is kept in this tab only. Behind JupyterHub, reload the page to " +
        "log in again." }), form);
  }

  // -- controls ------------------------------------------------------------------------------

  async function loadEnvironments() {
    if (environments) return environments;
    const answer = await api("api/v1/environments");
    environments = answer.environments;
    const labels = new Set();
    for (const env of environments) {
      for (const set of env.labels) {
        for (const [key, value] of Object.entries(set)) labels.add(key + "=" + value);
      }
    }
    envSelect.replaceChildren(el("option", { value: "", text: "All environments" }),
      ...environments.map((env) => el("option", { value: env.env, text: env.env })));
    labelSelect.replaceChildren(el("option", { value: "", text: "All labels" }),
      ...[...labels].sort().map((label) => el("option", { value: label, text: label })));
    return environments;
  }

  function syncControls(route) {
    const since = route.params.get("since") || "6h";
    for (const input of controls.querySelectorAll('input[name="since"]')) {
      input.checked = input.value === since;
    }
    setSelect(envSelect, route.params.get("env") || "");
    let label = "";
    for (const [key, value] of route.params) {
      if (key.startsWith("label.")) label = key.slice(6) + "=" + value;
    }
    setSelect(labelSelect, label);
    search.value = route.params.get("q") || "";
    for (const link of document.querySelectorAll(".tabs a")) {
      const active = link.dataset.view === (route.view === "libraries" || route.view === "library"
        ? "" : route.view);
      link.classList.toggle("active", active);
      if (active) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
      const base = link.dataset.view;
      const keep = withParams({ q: null });
      link.href = href(base, keep);
    }
    labelSelect.disabled = !["libraries"].includes(route.view);
    search.disabled = route.view === "library" || route.view === "environments";
  }

  function setSelect(select, value) {
    if (value && ![...select.options].some((option) => option.value === value)) {
      select.append(el("option", { value, text: value }));
    }
    select.value = value;
  }

  controls.addEventListener("submit", (event) => event.preventDefault());
  controls.addEventListener("change", (event) => {
    const target = event.target;
    if (target.name === "since") navigate(href(routePath(), withParams({ since: target.value })));
    else if (target === envSelect) navigate(href(routePath(), withParams({ env: envSelect.value })));
    else if (target === labelSelect) {
      const params = new URLSearchParams(location.search);
      for (const key of [...params.keys()]) if (key.startsWith("label.")) params.delete(key);
      if (labelSelect.value) {
        const [key, ...rest] = labelSelect.value.split("=");
        params.set("label." + key, rest.join("="));
      }
      navigate(href(routePath(), params));
    }
  });
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => navigate(href(routePath(), withParams({ q: search.value })), true), 150);
  });
  csvButton.addEventListener("click", () => downloadCsv());

  function routePath() {
    const route = currentRoute();
    if (route.view === "library") return "library/" + encodeURIComponent(route.name);
    return route.view === "libraries" ? "" : route.view;
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-nav]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  });
  for (const link of document.querySelectorAll(".tabs a, a.brand")) link.dataset.nav = "";
  window.addEventListener("popstate", () => render());

  // -- tables --------------------------------------------------------------------------------

  /** A sortable table. columns: [{heading, key, numeric, cell(row) -> td, sort(row), optional}]. */
  function sortableTable(columns, rows, sort, onSort) {
    const head = el("tr", {}, columns.map((column) => {
      const th = el("th", { class: (column.numeric ? "num" : "") + (column.optional ? " optional" : ""),
        scope: "col" });
      if (column.sort) {
        const button = el("button", { type: "button", text: column.heading });
        button.addEventListener("click", () => onSort(column.key));
        th.append(button);
        if (sort.key === column.key) th.setAttribute("aria-sort", sort.desc ? "descending" : "ascending");
      } else {
        th.textContent = column.heading;
      }
      return th;
    }));
    const body = el("tbody", {}, rows.map((row) => {
      const tr = el("tr", { "data-name": row.name || row.env || "" });
      for (const column of columns) {
        const td = column.cell ? column.cell(row) : el("td", { text: row[column.key] ?? "" });
        if (column.optional) td.classList.add("optional");
        tr.append(td);
      }
      return tr;
    }));
    return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), body));
  }

  function sortRows(rows, columns, sort) {
    const column = columns.find((c) => c.key === sort.key) || columns[0];
    const sign = sort.desc ? -1 : 1;
    return [...rows].sort((a, b) => {
      const x = column.sort(a);
      const y = column.sort(b);
      if (x < y) return -sign;
      if (x > y) return sign;
      return String(a.name || a.env).localeCompare(String(b.name || b.env));
    });
  }

  function matches(row, query) {
    return !query || String(row.name || "").includes(query.trim().toLowerCase());
  }

  function csvValue(value) {
    if (value === null || value === undefined) return "";
    const text = typeof value === "object" ? JSON.stringify(value) : String(value);
    return /[",\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function downloadCsv() {
    if (!csvTable) return;
    const lines = [csvTable.columns.map(([heading]) => csvValue(heading)).join(",")];
    for (const row of csvTable.rows) {
      lines.push(csvTable.columns.map(([, key]) => csvValue(typeof key === "function" ? key(row) : row[key])).join(","));
    }
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv;charset=utf-8" });
    const link = el("a", { href: URL.createObjectURL(blob), download: csvTable.name + ".csv" });
    document.body.append(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
  }

  // -- sparklines ----------------------------------------------------------------------------

  function sparkline(values, label) {
    const width = 120;
    const height = 28;
    const numbers = values.map((v) => (isHidden(v) ? null : Number(v)));
    const max = Math.max(1, ...numbers.filter((v) => v !== null));
    const svgNs = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNs, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    svg.dataset.values = JSON.stringify(values);
    const x = (i) => (values.length > 1 ? (i * (width - 4)) / (values.length - 1) + 2 : width / 2);
    const y = (v) => height - 2 - (v / max) * (height - 4);
    let points = [];
    const flush = () => {
      if (points.length) {
        const line = document.createElementNS(svgNs, "polyline");
        line.setAttribute("points", points.join(" "));
        svg.append(line);
      }
      points = [];
    };
    numbers.forEach((value, i) => {
      if (value === null) {
        flush();
        const dot = document.createElementNS(svgNs, "circle");
        dot.setAttribute("cx", x(i));
        dot.setAttribute("cy", height - 3);
        dot.setAttribute("r", 1.5);
        svg.append(dot);
      } else {
        points.push(x(i).toFixed(1) + "," + y(value).toFixed(1));
      }
    });
    if (points.length === 1) points.push((Number(points[0].split(",")[0]) + 1) + "," + points[0].split(",")[1]);
    flush();
    return svg;
  }

  // -- views ---------------------------------------------------------------------------------

  const librarySort = { key: "processes", desc: true };

  async function renderLibraries(route, id) {
    const params = apiParams(route.params, ["since", "from", "until", "env", "label", "level", "origin"]);
    const answer = await api("api/v1/libraries", params);
    if (id !== renderId) return;
    const query = route.params.get("q") || "";
    const details = new Map();
    const columns = [
      { heading: "Library", key: "name", sort: (r) => r.name,
        cell: (r) => el("td", {}, el("a", { href: href("library/" + encodeURIComponent(r.name),
          withParams({ q: null })), "data-nav": "", text: r.name })) },
      { heading: "Processes", key: "processes", numeric: true, sort: (r) => sortValue(r.processes),
        cell: (r) => countCell(r.processes) },
      { heading: "Direct", key: "direct", numeric: true, sort: (r) => sortValue(r.direct),
        cell: (r) => countCell(r.direct, "optional") , optional: true },
      { heading: "Direct share", key: "share", numeric: true, sort: (r) => share(r) ?? -1,
        cell: (r) => shareCell(r) },
      { heading: "Transitive", key: "transitive", numeric: true, sort: (r) => sortValue(r.transitive),
        cell: (r) => countCell(r.transitive), optional: true },
      { heading: "Versions in use", key: "versions",
        cell: (r) => el("td", { class: "versions", "data-versions": r.name }, "…") },
      { heading: "Trend", key: "trend", cell: (r) => el("td", { "data-trend": r.name }) },
    ];
    let showAll = false;

    function draw() {
      const shownRows = sortRows(answer.libraries.filter((row) => matches(row, query)), columns, librarySort);
      const rows = showAll ? shownRows : shownRows.slice(0, SHOWN_ROWS);
      view.replaceChildren(
        el("h1", { text: "Libraries" }),
        el("p", { class: "note" }, `${answer.libraries.length} libraries imported in ${windowText(answer)}` +
          (query ? `; ${shownRows.length} match “${query}”` : "") + filterText(route.params)),
        rows.length ? sortableTable(columns, rows, librarySort, (key) => {
          librarySort.desc = librarySort.key === key ? !librarySort.desc : key !== "name";
          librarySort.key = key;
          draw();
        }) : el("p", { class: "note", text: "No library was imported in this window with these filters." }),
      );
      if (rows.length < shownRows.length) {
        const more = el("button", { type: "button", class: "button more",
          text: `Show all ${shownRows.length} libraries` });
        more.addEventListener("click", () => { showAll = true; draw(); });
        view.append(more);
      }
      csvTable = {
        name: "popcon-libraries", rows,
        columns: [["library", "name"], ["processes", "processes"], ["direct", "direct"],
          ["transitive", "transitive"], ["direct_share", (r) => { const s = share(r); return s === null ? "" : s.toFixed(3); }],
          ["versions", (r) => (details.get(r.name) ? versionsText(details.get(r.name).versions) : "")]],
      };
      fillDetails(rows.map((r) => r.name));
    }

    async function fillDetails(names) {
      const missing = names.filter((name) => !details.has(name));
      for (let i = 0; i < missing.length; i += ROWS_BATCH) {
        const batch = missing.slice(i, i + ROWS_BATCH);
        const rowsParams = apiParams(route.params, ["since", "from", "until", "env", "label", "level", "origin"]);
        rowsParams.set("names", batch.join(","));
        const extra = await api("dashboard/api/rows", rowsParams);
        if (id !== renderId) return;
        for (const [name, detail] of Object.entries(extra.rows)) details.set(name, { ...detail, times: extra.times });
      }
      for (const name of names) {
        const detail = details.get(name);
        const versionsCell = view.querySelector(`td[data-versions="${CSS.escape(name)}"]`);
        const trendCell = view.querySelector(`td[data-trend="${CSS.escape(name)}"]`);
        if (!detail || !versionsCell || !trendCell) continue;
        const text = detail.versions.map((v) => v.version).join(", ") || "–";
        versionsCell.textContent = text;
        versionsCell.title = versionsText(detail.versions);
        trendCell.replaceChildren(sparkline(detail.trend, "processes of " + name + " over the window"));
      }
      view.dataset.loaded = "libraries";
    }

    draw();
  }

  function filterText(params) {
    const parts = [];
    if (params.get("env")) parts.push("environment " + params.get("env"));
    for (const [key, value] of params) if (key.startsWith("label.")) parts.push(key.slice(6) + "=" + value);
    return parts.length ? "; only " + parts.join(", ") : "";
  }

  async function renderLibrary(route, id) {
    const name = route.name;
    const params = apiParams(route.params, ["since", "from", "until", "env"]);
    const [answer, history] = await Promise.all([
      api("api/v1/libraries/" + encodeURIComponent(name), params),
      api("dashboard/api/version-history/" + encodeURIComponent(name), params),
    ]);
    if (id !== renderId) return;
    const ignored = [...route.params.keys()].filter((key) => key.startsWith("label.") || key === "level" || key === "origin");
    const span = spanOf(answer);
    const directShare = share(answer);
    const processesCanvas = el("canvas", { id: "chart-processes", "aria-label": "processes over time" });
    const versionsCanvas = el("canvas", { id: "chart-versions", "aria-label": "versions over time" });
    const hiddenPoints = answer.series.filter((p) => isHidden(p.processes) || isHidden(p.direct) || isHidden(p.transitive)).length;
    view.replaceChildren(
      el("p", { class: "note" }, el("a", { href: href("", withParams({})), "data-nav": "", text: "← all libraries" })),
      el("h1", { text: name }),
      el("p", { class: "note" }, windowText(answer) + filterText(apiParams(route.params, ["env"])) +
        (ignored.length ? " (label, level and origin filters do not apply to one library)" : "")),
      el("div", { class: "stats" },
        stat(answer.processes, "processes"), stat(answer.direct, "direct"),
        stat(answer.transitive, "transitive"),
        stat(directShare === null ? "–" : Math.round(directShare * 100) + "%", "direct share", true)),
      el("div", { class: "grid" },
        el("section", { class: "card" }, el("h2", { text: "Processes over time" }),
          el("div", { class: "chart" }, processesCanvas),
          hiddenPoints ? el("p", { class: "note", text: `${hiddenPoints} of ${answer.series.length} points ` +
            `had ${answer.min_count > 1 ? "fewer than " + answer.min_count : "no"} processes and are left blank.` }) : null),
        el("section", { class: "card" }, el("h2", { text: "Versions over time" }),
          el("div", { class: "chart" }, versionsCanvas))),
      el("div", { class: "grid" },
        el("section", {}, el("h2", { text: "Versions in use" }),
          simpleTable([["Version", "version"], ["Processes", "processes", true]], answer.versions)),
        el("section", {}, el("h2", { text: "Imported by" }),
          answer.importers.length ? simpleTable([["Library", "importer", false, (r) =>
            el("td", {}, el("a", { href: href("library/" + encodeURIComponent(r.importer), withParams({})),
              "data-nav": "", text: r.importer }))], ["Processes", "processes", true]], answer.importers)
            : el("p", { class: "note", text: "Only user code imported it (no other library did)." })),
        el("section", {}, el("h2", { text: "Environments" }),
          simpleTable([["Environment", "env", false, (r) => el("td", { class: "wrap" },
            el("a", { href: href("library/" + encodeURIComponent(name), withParams({ env: r.env })), "data-nav": "", text: r.env }))],
          ["Processes", "processes", true], ["Direct", "direct", true]], answer.environments))),
    );
    csvTable = {
      name: "popcon-" + name,
      rows: answer.series,
      columns: [["time", "time"], ["processes", "processes"], ["direct", "direct"], ["transitive", "transitive"]],
    };
    const labels = answer.series.map((p) => formatTime(p.time, span));
    const chartValue = (v) => (isHidden(v) ? null : v);
    charts.push(new Chart(processesCanvas, {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: "direct", data: answer.series.map((p) => chartValue(p.direct)),
            backgroundColor: COLORS[0] },
          { label: "transitive", data: answer.series.map((p) => chartValue(p.transitive)),
            backgroundColor: COLORS[1] },
        ],
      },
      options: chartOptions(true),
    }));
    const versionNames = Object.keys(history.versions);
    charts.push(new Chart(versionsCanvas, {
      type: "bar",
      data: {
        labels: history.times.map((t) => formatTime(t, span)),
        datasets: versionNames.map((version, i) => ({
          label: version, data: history.versions[version].map(chartValue),
          backgroundColor: COLORS[i % COLORS.length],
        })),
      },
      options: chartOptions(true),
    }));
    view.dataset.loaded = "library";
  }

  function chartOptions(stacked) {
    return {
      responsive: true, maintainAspectRatio: false, animation: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { stacked, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 8 },
          grid: { display: false } },
        y: { stacked, beginAtZero: true, ticks: { precision: 0 } },
      },
      plugins: { legend: { position: "bottom" } },
    };
  }

  function stat(value, label, isText) {
    return el("div", { class: "stat" },
      el("b", { class: isHidden(value) && !isText ? "hidden-count" : "",
        text: typeof value === "number" ? value.toLocaleString() : value }),
      el("span", { text: label }));
  }

  /** columns: [heading, key, numeric, cell]. */
  function simpleTable(columns, rows) {
    if (!rows.length) return el("p", { class: "note", text: "None in this window." });
    return el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, columns.map(([heading, , numeric]) =>
        el("th", { class: numeric ? "num" : "", scope: "col", text: heading })))),
      el("tbody", {}, rows.map((row) => el("tr", {}, columns.map(([, key, numeric, cell]) =>
        (cell ? cell(row) : numeric ? countCell(row[key]) : el("td", { class: "wrap", text: row[key] ?? "" }))))))));
  }

  async function renderUnused(route, id) {
    const params = apiParams(route.params, ["since", "from", "until", "env"]);
    if (!route.params.get("since") && !route.params.get("from")) params.set("since", "30d");
    const [answer, envs] = await Promise.all([api("api/v1/unused", params), loadEnvironments()]);
    if (id !== renderId) return;
    const query = route.params.get("q") || "";
    const sizes = new Map(envs.map((e) => [e.env, e.inventory_size]));
    const rows = [];
    const blocks = answer.environments.map((env) => {
      const shown = env.libraries.filter((row) => matches(row, query));
      for (const row of shown) rows.push({ env: env.env, name: row.name, version: row.version });
      return el("details", { class: "env-block", open: true, "data-env": env.env },
        el("summary", {}, `${env.env} — ${env.libraries.length} of ${sizes.get(env.env) ?? "?"} installed ` +
          `packages unused (inventory of ${new Date(env.inventory_at).toLocaleString()})`),
        shown.length ? el("div", { class: "chips" }, shown.map((row) =>
          el("span", { class: "chip", "data-name": row.name }, row.name + " ", el("small", { text: row.version }))))
          : el("p", { class: "note", text: query ? "None match the search." : "Every installed package was imported." }));
    });
    view.replaceChildren(
      el("h1", { text: "Installed but unused" }),
      el("p", { class: "note", text: `Packages in each environment's latest inventory that no process imported in ${windowText(answer)}. ` +
        "An environment appears once a recorder has sent its inventory." }),
      ...(blocks.length ? blocks : [el("p", { class: "note", text: "No environment has sent an inventory yet." })]),
    );
    csvTable = { name: "popcon-unused", rows, columns: [["env", "env"], ["library", "name"], ["version", "version"]] };
    view.dataset.loaded = "unused";
  }

  const userSort = { key: "processes", desc: true };

  async function renderUserInstalled(route, id) {
    const params = apiParams(route.params, ["since", "from", "until", "env"]);
    if (!route.params.get("since") && !route.params.get("from")) params.set("since", "30d");
    const answer = await api("api/v1/user-installed", params);
    if (id !== renderId) return;
    const query = route.params.get("q") || "";
    const columns = [
      { heading: "Library", key: "name", sort: (r) => r.name, cell: (r) => el("td", {},
        el("a", { href: href("library/" + encodeURIComponent(r.name), withParams({ q: null, env: r.env })), "data-nav": "", text: r.name })) },
      { heading: "Environment", key: "env", sort: (r) => r.env, cell: (r) => el("td", { class: "wrap", text: r.env }) },
      { heading: "Processes", key: "processes", numeric: true, sort: (r) => sortValue(r.processes), cell: (r) => countCell(r.processes) },
      { heading: "Versions", key: "versions", cell: (r) => el("td", { class: "versions", text: versionsText(r.versions) }) },
    ];
    function draw() {
      const rows = sortRows(answer.libraries.filter((row) => matches(row, query)), columns, userSort);
      view.replaceChildren(
        el("h1", { text: "Installed by users" }),
        el("p", { class: "note", text: `Imported from users' own site-packages (pip install --user) in ${windowText(answer)} ` +
          "and absent from the environment's inventory: candidates to add to the image." }),
        rows.length ? sortableTable(columns, rows, userSort, (key) => {
          userSort.desc = userSort.key === key ? !userSort.desc : key !== "name" && key !== "env";
          userSort.key = key;
          draw();
        }) : el("p", { class: "note", text: "No user-installed library was imported in this window." }),
      );
      csvTable = { name: "popcon-user-installed", rows,
        columns: [["library", "name"], ["env", "env"], ["processes", "processes"], ["versions", (r) => versionsText(r.versions)]] };
      view.dataset.loaded = "user-installed";
    }
    draw();
  }

  async function renderEnvironments(route, id) {
    environments = null;
    const envs = await loadEnvironments();
    if (id !== renderId) return;
    const labelsText = (env) => env.labels.map((set) => Object.entries(set).map(([k, v]) => k + "=" + v).join(" ")).filter(Boolean).join("; ");
    view.replaceChildren(
      el("h1", { text: "Environments" }),
      simpleTable([
        ["Environment", "env", false, (r) => el("td", { class: "wrap" }, el("a", { href: href("", withParams({ env: r.env })), "data-nav": "", text: r.env }))],
        ["Labels", "labels", false, (r) => el("td", { class: "wrap", text: labelsText(r) })],
        ["Python", "py"], ["Last seen", "last_seen", false, (r) => el("td", { text: new Date(r.last_seen).toLocaleString() })],
        ["Installed", "inventory_size", true], ["Processes", "processes", true],
      ], envs),
    );
    csvTable = { name: "popcon-environments", rows: envs,
      columns: [["env", "env"], ["labels", labelsText], ["py", "py"], ["first_seen", "first_seen"], ["last_seen", "last_seen"],
        ["inventory_size", "inventory_size"], ["processes", "processes"]] };
    view.dataset.loaded = "environments";
  }

  const RENDERERS = {
    libraries: renderLibraries, library: renderLibrary, unused: renderUnused,
    "user-installed": renderUserInstalled, environments: renderEnvironments,
  };

  async function render() {
    const id = ++renderId;
    const route = currentRoute();
    for (const chart of charts) chart.destroy();
    charts = [];
    csvTable = null;
    delete view.dataset.loaded;
    document.title = "popcon" + (route.view === "library" ? " · " + route.name : "");
    try {
      await loadEnvironments();
      if (id !== renderId) return;
      syncControls(route);
      await RENDERERS[route.view](route, id);
    } catch (error) {
      if (id === renderId) showError(error);
    }
  }

  async function showPrivacy() {
    try {
      const answer = await api("api/v1/libraries", new URLSearchParams({ since: "6h" }));
      privacy.textContent = answer.min_count > 1
        ? `Counts below ${answer.min_count} are shown as “fewer than ${answer.min_count}”.`
        : "Every count is shown.";
    } catch (error) {
      privacy.textContent = "";
    }
  }

  takeTokenFromAddress();
  render().then(showPrivacy);
})();
