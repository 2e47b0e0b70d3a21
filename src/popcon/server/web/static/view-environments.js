/* The Environments view: every environment, its labels, Python version, last report, whether
 * it has gone quiet, and inventory size (asked afresh each time the view is drawn). */

import { environmentsAnswer, forgetEnvironments, loadEnvironments } from "./controls.js";
import { offerCsv } from "./csv.js";
import { el, view } from "./dom.js";
import { durationText, formatDate } from "./format.js";
import { href, withParams } from "./route.js";
import { simpleTable } from "./table.js";

/** Draw the view; current() is false once another view has started drawing. */
export async function renderEnvironments(route, current) {
  forgetEnvironments();
  const envs = await loadEnvironments();
  if (!current()) return;
  const answer = environmentsAnswer();
  const labelsText = (env) => env.labels.map((set) => Object.entries(set).map(([k, v]) => k + "=" + v).join(" ")).filter(Boolean).join("; ");
  const now = Date.now();
  const silence = (env) => durationText((now - Date.parse(env.last_seen)) / 1000);
  const quiet = answer.environments.filter((env) => env.quiet);
  const after = durationText(answer.quiet_after);
  view.replaceChildren(
    el("h1", { text: "Environments" }),
    quiet.length
      ? el("p", { class: "warning", "data-quiet": quiet.length },
        `${quiet.length} of ${envs.length} ${envs.length === 1 ? "environment has" : "environments have"} ` +
        `sent nothing for more than ${after}: ` + quiet.map((env) => env.env).join(", ") +
        ". Their recorders may have stopped (an image without popcon enable, a firewall, a changed key).")
      : el("p", { class: "note", text: `Every environment has reported in the last ${after}.` }),
    simpleTable([
      ["Environment", "env", false, (r) => el("td", { class: "wrap" }, el("a", { href: href("", withParams({ env: r.env })), "data-nav": "", text: r.env }))],
      ["Labels", "labels", false, (r) => el("td", { class: "wrap", text: labelsText(r) })],
      ["Python", "py"],
      ["Last seen", "last_seen", false, (r) => el("td", { text: formatDate(r.last_seen) })],
      ["Status", "quiet", false, (r) => el("td", r.quiet
        ? { class: "quiet", text: "quiet for " + silence(r) } : { class: "reporting", text: "reporting" })],
      ["Installed", "inventory_size", true], ["Processes", "processes", true],
    ], answer.environments),
  );
  offerCsv({ name: "popcon-environments", rows: answer.environments,
    columns: [["env", "env"], ["labels", labelsText], ["py", "py"], ["first_seen", "first_seen"], ["last_seen", "last_seen"],
      ["quiet", "quiet"], ["inventory_size", "inventory_size"], ["processes", "processes"]] });
  view.dataset.loaded = "environments";
}
