/* The Unused view: per environment, the packages of its latest inventory that no process
 * imported in the window (30 days unless the address says otherwise: route.js). */

import { api } from "./api.js";
import { loadEnvironments } from "./controls.js";
import { offerCsv } from "./csv.js";
import { el, heading, view } from "./dom.js";
import { filterParts, formatDate, windowText } from "./format.js";
import { apiParams } from "./route.js";
import { matches } from "./table.js";

/** Draw the view; current() is false once another view has started drawing. */
export async function renderUnused(route, current) {
  const params = apiParams(route, ["since", "from", "until", "env"]);
  const [answer, envs] = await Promise.all([api("api/v1/unused", params), loadEnvironments()]);
  if (!current()) return;
  const query = route.params.get("q") || "";
  const sizes = new Map(envs.map((e) => [e.env, e.inventory_size]));
  const rows = [];
  const blocks = answer.environments.map((env) => {
    const shown = env.libraries.filter((row) => matches(row, query));
    for (const row of shown) {
      rows.push({ env: env.env, name: row.name, version: row.version, why: groupOf(row),
        required_by: row.required_by, needed_by: row.needed_by, removable: row.removable });
    }
    return el("details", { class: "env-block", open: true, "data-env": env.env },
      el("summary", {}, `${env.env} — ${env.libraries.length} of ${sizes.get(env.env) ?? "?"} installed ` +
        `packages unused (inventory of ${formatDate(env.inventory_at)})`),
      env.reasons_known ? null : el("p", { class: "note", text: "This inventory does not say why " +
        "its packages are installed (its recorder predates that, or no metadata says)." }),
      shown.length ? GROUPS.map(([group, title]) => whyGroup(group, title, shown))
        : el("p", { class: "note", text: query ? "None match the search." : "Every installed package was imported." }));
  });
  view.replaceChildren(
    heading("Installed but unused", filterParts(route.params, ["env"])),
    el("p", { class: "note window", "data-from": answer.from, "data-until": answer.until, text: `Packages in each environment's latest inventory that no process imported in ${windowText(answer)}. ` +
      "An environment appears once a recorder has sent its inventory." }),
    el("p", { class: "note", text: "Grouped by why each is installed (as its inventory says): on " +
      "request, as a dependency of the packages after “of”, or neither; “removable” where no " +
      "package that was used requires it, directly or through others (else “needed by” names " +
      "those used); packaging tools apart." }),
    ...(blocks.length ? blocks : [el("p", { class: "note", text: "No environment has sent an inventory yet." })]),
  );
  offerCsv({ name: "popcon-unused", rows, columns: [["env", "env"], ["library", "name"], ["version", "version"],
    ["why", "why"], ["required_by", "required_by"], ["needed_by", "needed_by"], ["removable", "removable"]] });
  view.dataset.loaded = "unused";
}

/** The groups an environment's unused packages are shown in, in this order: the API's `why`,
 * and packaging tools (`tool`) apart whatever their `why`. */
const GROUPS = [
  ["requested", "Installed on request"],
  ["orphan", "Neither requested nor required by an installed package"],
  ["dependency", "Installed as a dependency"],
  ["unknown", "Why installed is not known"],
  ["tool", "Packaging tools"],
];

function groupOf(row) {
  return row.tool ? "tool" : row.why;
}

/** One group's chips, of the `shown` rows in it; a chip says what requires it and whether it
 * is a removal candidate (no used package requires it, directly or through others). */
function whyGroup(group, title, shown) {
  const rows = shown.filter((row) => groupOf(row) === group);
  if (!rows.length) return null;
  return el("section", { class: "why-group", "data-why": group },
    el("h3", { text: `${title} (${rows.length})` }),
    el("div", { class: "chips" }, rows.map(chip)));
}

function chip(row) {
  const notes = [];
  if (row.required_by.length) {
    notes.push(el("small", { class: "of", text: ` · of ${row.required_by.join(", ")}` }));
  }
  if (row.removable === true) {
    notes.push(el("small", { class: "removable", text: " · removable" }));
  }
  if (row.needed_by.length) {
    notes.push(el("small", { class: "needed", text: ` · needed by ${row.needed_by.join(", ")}` }));
  }
  const attributes = { class: "chip", "data-name": row.name };
  attributes["data-removable"] = String(row.removable);
  return el("span", attributes, row.name + " ", el("small", { text: row.version }), ...notes);
}
