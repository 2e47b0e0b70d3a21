/* The Libraries view: every library people's code used in the window (directly or through
 * other libraries; with "include programs", also what the programs imported for themselves),
 * by users, sortable, with the versions in use and a trend sparkline filled in afterwards from
 * dashboard/api/rows. */

import { api } from "./api.js";
import { sparkline } from "./charts.js";
import { offerCsv } from "./csv.js";
import { displayText, el, heading, view } from "./dom.js";
import { csvCount, durationText, filterParts, includesPrograms, share, sortValue, versionsText, windowText } from "./format.js";
import { apiParams, href, withParams } from "./route.js";
import { countCell, matches, shareCell, sortableTable, sortRows } from "./table.js";

const SHOWN_ROWS = 200;
const ROWS_BATCH = 100;
const PARAMS = ["since", "from", "until", "env", "label", "level", "origin", "include"];
const FILTERS = ["env", "label", "level", "origin"];

const librarySort = { key: "users", desc: true };

/** Draw the view; current() is false once another view has started drawing. */
export async function renderLibraries(route, current) {
  const params = apiParams(route, PARAMS);
  const answer = await api("api/v1/libraries", params);
  if (!current()) return;
  const query = route.params.get("q") || "";
  const programs = includesPrograms(route.params);
  const details = new Map();
  const columns = [
    { heading: "Library", key: "name", sort: (r) => r.name,
      cell: (r) => el("td", {}, el("a", { href: href("library/" + encodeURIComponent(r.name),
        withParams({ q: null })), "data-nav": "", text: r.name })) },
    { heading: "Users", key: "users", numeric: true, sort: (r) => sortValue(r.users),
      then: (r) => sortValue(r.processes), cell: (r) => countCell(r.users) },
    { heading: "Processes", key: "processes", numeric: true, sort: (r) => sortValue(r.processes),
      then: (r) => sortValue(r.users), cell: (r) => countCell(r.processes) },
    { heading: "Direct", key: "direct", numeric: true, sort: (r) => sortValue(r.direct),
      cell: (r) => countCell(r.direct, "optional"), optional: true },
    { heading: "Direct share", key: "share", numeric: true, sort: (r) => share(r) ?? -1,
      cell: (r) => shareCell(r) },
    { heading: "Transitive", key: "transitive", numeric: true, sort: (r) => sortValue(r.transitive),
      cell: (r) => countCell(r.transitive), optional: true },
    ...(programs ? [{ heading: "Programs only", key: "program", numeric: true, sort: (r) => sortValue(r.program),
      cell: (r) => countCell(r.program), optional: true }] : []),
    { heading: "Versions in use", key: "versions",
      cell: (r) => el("td", { class: "versions", "data-versions": r.name }, "…"), optional: true },
    { heading: "Trend", key: "trend", cell: (r) => el("td", { class: "trend", "data-trend": r.name }), optional: true },
  ];
  const filters = filterParts(route.params, FILTERS);
  let showAll = false;

  function draw() {
    const shownRows = sortRows(answer.libraries.filter((row) => matches(row, query)), columns, librarySort);
    const rows = showAll ? shownRows : shownRows.slice(0, SHOWN_ROWS);
    view.replaceChildren(
      heading("Libraries", filters),
      el("p", { class: "note window", "data-from": answer.from, "data-until": answer.until }, `${answer.libraries.length} libraries ` +
        (programs ? "imported by people's code or by programs" : "people's code used, directly or through other libraries,") +
        ` in ${windowText(answer)}` + (query ? `; ${shownRows.length} match “${query}”` : "") +
        ". Users are distinct people" + (programs ? "" : "; “Include programs” adds what programs (a Jupyter server, a kernel's machinery, pip) imported for themselves") + "."),
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
    offerCsv({
      name: "popcon-libraries", rows,
      columns: [["library", "name"], ["users", (r) => csvCount(r.users)], ["processes", "processes"], ["direct", "direct"],
        ["transitive", "transitive"], ...(programs ? [["program", "program"]] : []),
        ["direct_share", (r) => { const s = share(r); return s === null ? "" : s.toFixed(3); }],
        ["versions", (r) => (details.get(r.name) ? versionsText(details.get(r.name).versions) : "")]],
    });
    fillDetails(rows.map((r) => r.name));
  }

  /** The versions and trend of each named row, asked ROWS_BATCH names at a time. */
  async function fillDetails(names) {
    const missing = names.filter((name) => !details.has(name));
    for (let i = 0; i < missing.length; i += ROWS_BATCH) {
      const batch = missing.slice(i, i + ROWS_BATCH);
      const rowsParams = apiParams(route, PARAMS);
      rowsParams.set("names", batch.join(","));
      const extra = await api("dashboard/api/rows", rowsParams);
      if (!current()) return;
      for (const [name, detail] of Object.entries(extra.rows)) {
        details.set(name, { ...detail, step: extra.step, minCount: extra.min_count });
      }
    }
    for (const name of names) {
      const detail = details.get(name);
      const versionsCell = view.querySelector(`td[data-versions="${CSS.escape(name)}"]`);
      const trendCell = view.querySelector(`td[data-trend="${CSS.escape(name)}"]`);
      if (!detail || !versionsCell || !trendCell) continue;
      const text = detail.versions.map((v) => v.version).join(", ") || "–";
      versionsCell.textContent = displayText(text);
      versionsCell.title = displayText(versionsText(detail.versions));
      trendCell.replaceChildren(sparkline(detail.trend, { minCount: detail.minCount,
        label: `processes of ${name} per ${durationText(detail.step)} over the window` +
          (detail.minCount > 1 ? ` (grey: fewer than ${detail.minCount})` : "") }));
    }
    if (programs) view.dataset.include = "programs";
    else delete view.dataset.include;
    view.dataset.loaded = "libraries";
  }

  draw();
}
