/* A library's page: its counts, processes over time (direct and transitive stacked), versions
 * over time (from dashboard/api/version-history), versions in use, the libraries that import
 * it and the environments that use it. */

import { api } from "./api.js";
import { barChart, chartValue, COLORS } from "./charts.js";
import { offerCsv } from "./csv.js";
import { displayText, el, view } from "./dom.js";
import { filterText, formatTime, isHidden, share, spanOf, windowText } from "./format.js";
import { apiParams, href, withParams } from "./route.js";
import { simpleTable } from "./table.js";

/** Draw the view; current() is false once another view has started drawing. */
export async function renderLibrary(route, current) {
  const name = route.name;
  const params = apiParams(route.params, ["since", "from", "until", "env"]);
  const [answer, history] = await Promise.all([
    api("api/v1/libraries/" + encodeURIComponent(name), params),
    api("dashboard/api/version-history/" + encodeURIComponent(name), params),
  ]);
  if (!current()) return;
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
  offerCsv({
    name: "popcon-" + name,
    rows: answer.series,
    columns: [["time", "time"], ["processes", "processes"], ["direct", "direct"], ["transitive", "transitive"]],
  });
  barChart(processesCanvas, answer.series.map((p) => formatTime(p.time, span)), [
    { label: "direct", data: answer.series.map((p) => chartValue(p.direct)),
      backgroundColor: COLORS[0] },
    { label: "transitive", data: answer.series.map((p) => chartValue(p.transitive)),
      backgroundColor: COLORS[1] },
  ]);
  barChart(versionsCanvas, history.times.map((t) => formatTime(t, span)),
    Object.keys(history.versions).map((version, i) => ({
      label: displayText(version), data: history.versions[version].map(chartValue),
      backgroundColor: COLORS[i % COLORS.length],
    })));
  view.dataset.loaded = "library";
}

/** One figure of the stats row; a hidden count is grey unless `isText`. */
function stat(value, label, isText) {
  return el("div", { class: "stat" },
    el("b", { class: isHidden(value) && !isText ? "hidden-count" : "",
      text: typeof value === "number" ? value.toLocaleString() : value }),
    el("span", { text: label }));
}
