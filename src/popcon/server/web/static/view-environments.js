/* The Environments view: every environment, its labels, Python version, last report and
 * inventory size (asked afresh each time the view is drawn). */

import { forgetEnvironments, loadEnvironments } from "./controls.js";
import { offerCsv } from "./csv.js";
import { el, view } from "./dom.js";
import { href, withParams } from "./route.js";
import { simpleTable } from "./table.js";

/** Draw the view; current() is false once another view has started drawing. */
export async function renderEnvironments(route, current) {
  forgetEnvironments();
  const envs = await loadEnvironments();
  if (!current()) return;
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
  offerCsv({ name: "popcon-environments", rows: envs,
    columns: [["env", "env"], ["labels", labelsText], ["py", "py"], ["first_seen", "first_seen"], ["last_seen", "last_seen"],
      ["inventory_size", "inventory_size"], ["processes", "processes"]] });
  view.dataset.loaded = "environments";
}
