/* The Programs view: the programs people run (the distribution of a console script or of
 * `python -m`: a Jupyter server, a kernel, pip, pytest), by users, then processes. */

import { api } from "./api.js";
import { offerCsv } from "./csv.js";
import { el, heading, view } from "./dom.js";
import { csvCount, filterParts, sortValue, versionsText, windowText } from "./format.js";
import { apiParams } from "./route.js";
import { countCell, matches, sortableTable, sortRows } from "./table.js";

const programSort = { key: "users", desc: true };

/** Draw the view; current() is false once another view has started drawing. */
export async function renderPrograms(route, current) {
  const params = apiParams(route, ["since", "from", "until", "env", "label"]);
  const answer = await api("api/v1/programs", params);
  if (!current()) return;
  const query = route.params.get("q") || "";
  const columns = [
    { heading: "Program", key: "name", sort: (r) => r.name, cell: (r) => el("td", { text: r.name }) },
    { heading: "Users", key: "users", numeric: true, sort: (r) => sortValue(r.users),
      then: (r) => sortValue(r.processes), cell: (r) => countCell(r.users) },
    { heading: "Processes", key: "processes", numeric: true, sort: (r) => sortValue(r.processes),
      then: (r) => sortValue(r.users), cell: (r) => countCell(r.processes) },
    { heading: "Versions", key: "versions",
      cell: (r) => el("td", { class: "versions", text: versionsText(r.versions || []) }) },
  ];
  function draw() {
    const rows = sortRows(answer.programs.filter((row) => matches(row, query)), columns, programSort);
    view.replaceChildren(
      heading("Programs", filterParts(route.params)),
      el("p", { class: "note window", "data-from": answer.from, "data-until": answer.until, text: `The programs people ran in ${windowText(answer)}: ` +
        "the distribution of a console script or of python -m (a Jupyter server, a kernel, pip, pytest). " +
        "What a program imports for itself is left out of the Libraries view unless it includes programs." }),
      rows.length ? sortableTable(columns, rows, programSort, (key) => {
        programSort.desc = programSort.key === key ? !programSort.desc : key !== "name";
        programSort.key = key;
        draw();
      }) : el("p", { class: "note", text: "No program ran in this window with these filters." }),
    );
    offerCsv({ name: "popcon-programs", rows,
      columns: [["program", "name"], ["users", (r) => csvCount(r.users)], ["processes", "processes"],
        ["versions", (r) => versionsText(r.versions || [])]] });
    view.dataset.loaded = "programs";
  }
  draw();
}
