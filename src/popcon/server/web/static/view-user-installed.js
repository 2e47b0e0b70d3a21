/* The User-installed view: libraries imported from users' own site-packages and absent from
 * the environment's inventory (30 days unless the address says otherwise: route.js). */

import { api } from "./api.js";
import { offerCsv } from "./csv.js";
import { el, heading, view } from "./dom.js";
import { filterParts, sortValue, versionsText, windowText } from "./format.js";
import { apiParams, href, withParams } from "./route.js";
import { countCell, matches, sortableTable, sortRows } from "./table.js";

const userSort = { key: "processes", desc: true };

/** Draw the view; current() is false once another view has started drawing. */
export async function renderUserInstalled(route, current) {
  const params = apiParams(route, ["since", "from", "until", "env"]);
  const answer = await api("api/v1/user-installed", params);
  if (!current()) return;
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
      heading("Installed by users", filterParts(route.params, ["env"])),
      el("p", { class: "note window", "data-from": answer.from, "data-until": answer.until, text: `Imported from users' own site-packages (pip install --user) in ${windowText(answer)} ` +
        "and absent from the environment's inventory: candidates to add to the image." }),
      rows.length ? sortableTable(columns, rows, userSort, (key) => {
        userSort.desc = userSort.key === key ? !userSort.desc : key !== "name" && key !== "env";
        userSort.key = key;
        draw();
      }) : el("p", { class: "note", text: "No user-installed library was imported in this window." }),
    );
    offerCsv({ name: "popcon-user-installed", rows,
      columns: [["library", "name"], ["env", "env"], ["processes", "processes"], ["versions", (r) => versionsText(r.versions)]] });
    view.dataset.loaded = "user-installed";
  }
  draw();
}
