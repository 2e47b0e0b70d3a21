/* A library's page: its users and processes, processes over time (direct and transitive
 * stacked) and versions over time (both from dashboard/api/version-history, so the two charts
 * share their slices and time labels), versions in use, the libraries that import it and the
 * environments that use it, each with its users. */

import { api } from "./api.js";
import { barChart, chartValue, COLORS } from "./charts.js";
import { offerCsv } from "./csv.js";
import { displayText, el, heading, view } from "./dom.js";
import {
  filterParts, formatTick, formatTime, includesPrograms, isHidden, isUnknown, labelEvery, share, spanOf, UNKNOWN_TEXT,
  windowText,
} from "./format.js";
import { apiParams, href, withParams } from "./route.js";
import { simpleTable } from "./table.js";

/** Draw the view; current() is false once another view has started drawing. */
export async function renderLibrary(route, current) {
  const name = route.name;
  const params = apiParams(route, ["since", "from", "until", "env", "include"]);
  const [answer, history] = await Promise.all([
    api("api/v1/libraries/" + encodeURIComponent(name), params),
    api("dashboard/api/version-history/" + encodeURIComponent(name), params),
  ]);
  if (!current()) return;
  const ignored = [...route.params.keys()].filter((key) => key.startsWith("label.") || key === "level" || key === "origin");
  const programs = includesPrograms(route.params);
  const span = spanOf(answer);
  const directShare = share(answer);
  const processesCanvas = el("canvas", { id: "chart-processes", "aria-label": "processes over time" });
  const versionsCanvas = el("canvas", { id: "chart-versions", "aria-label": "versions over time" });
  const series = history.series;
  const hiddenPoints = series.filter((p) => isHidden(p.processes) || isHidden(p.direct) || isHidden(p.transitive)).length;
  view.replaceChildren(
    el("p", { class: "note" }, el("a", { href: href("", withParams({})), "data-nav": "", text: "← all libraries" })),
    heading(name, filterParts(route.params, ["env"])),
    el("p", { class: "note window", "data-from": answer.from, "data-until": answer.until },
      windowText(answer) + (programs ? "; people's code and programs" : "; people's code") +
      (ignored.length ? " (label, level and origin filters do not apply to one library)" : "")),
    el("div", { class: "stats" },
      stat(answer.users, "users"), stat(answer.processes, "processes"), stat(answer.direct, "direct"),
      stat(answer.transitive, "transitive"),
      stat(directShare === null ? "–" : Math.round(directShare * 100) + "%", "direct share", true)),
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", { text: "Processes over time" }),
        el("div", { class: "chart" }, processesCanvas),
        hiddenPoints ? el("p", { class: "note", text: `${hiddenPoints} of ${series.length} points ` +
          `had ${answer.min_count > 1 ? "fewer than " + answer.min_count : "no"} processes and are left blank.` }) : null),
      el("section", { class: "card" }, el("h2", { text: "Versions over time" }),
        el("div", { class: "chart" }, versionsCanvas))),
    el("div", { class: "grid" },
      el("section", {}, el("h2", { text: "Versions in use" }),
        simpleTable([["Version", "version"], ["Users", "users", true], ["Processes", "processes", true]], answer.versions)),
      el("section", {}, el("h2", { text: "Imported by" }),
        answer.importers.length ? simpleTable([["Library", "importer", false, (r) =>
          el("td", {}, el("a", { href: href("library/" + encodeURIComponent(r.importer), withParams({})),
            "data-nav": "", text: r.importer }))], ["Users", "users", true], ["Processes", "processes", true]], answer.importers)
          : el("p", { class: "note", text: "Only user code imported it (no other library did)." })),
      el("section", {}, el("h2", { text: "Environments" }),
        simpleTable([["Environment", "env", false, (r) => el("td", { class: "wrap" },
          el("a", { href: href("library/" + encodeURIComponent(name), withParams({ env: r.env })), "data-nav": "", text: r.env }))],
        ["Users", "users", true], ["Processes", "processes", true], ["Direct", "direct", true]], answer.environments))),
  );
  offerCsv({
    name: "popcon-" + name,
    rows: series,
    columns: [["time", "time"], ["processes", "processes"], ["direct", "direct"], ["transitive", "transitive"]],
  });
  const every = labelEvery(span, history.step);
  const axis = { times: history.times, every, label: (t) => formatTime(t, span), tick: (t) => formatTick(t, every) };
  barChart(processesCanvas, axis, [
    { label: "direct", data: series.map((p) => chartValue(p.direct)), backgroundColor: COLORS[0] },
    { label: "transitive", data: series.map((p) => chartValue(p.transitive)), backgroundColor: COLORS[1] },
  ]);
  barChart(versionsCanvas, axis,
    Object.keys(history.versions).map((version, i) => ({
      label: displayText(version), data: history.versions[version].map(chartValue),
      backgroundColor: COLORS[i % COLORS.length],
    })));
  view.dataset.loaded = "library";
}

/** One figure of the stats row; a hidden count is grey unless `isText`, an unknown one "?". */
function stat(value, label, isText) {
  const grey = (isHidden(value) && !isText) || isUnknown(value);
  return el("div", { class: "stat", "data-stat": label },
    el("b", { class: grey ? "hidden-count" : "",
      text: isUnknown(value) ? UNKNOWN_TEXT : typeof value === "number" ? value.toLocaleString() : value }),
    el("span", { text: label }));
}
