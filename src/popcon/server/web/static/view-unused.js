/* The Unused view: per environment, the packages of its latest inventory that no process
 * imported in the window (30 days unless the address says otherwise). */

import { api } from "./api.js";
import { loadEnvironments } from "./controls.js";
import { offerCsv } from "./csv.js";
import { el, view } from "./dom.js";
import { windowText } from "./format.js";
import { apiParams } from "./route.js";
import { matches } from "./table.js";

/** Draw the view; current() is false once another view has started drawing. */
export async function renderUnused(route, current) {
  const params = apiParams(route.params, ["since", "from", "until", "env"]);
  if (!route.params.get("since") && !route.params.get("from")) params.set("since", "30d");
  const [answer, envs] = await Promise.all([api("api/v1/unused", params), loadEnvironments()]);
  if (!current()) return;
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
  offerCsv({ name: "popcon-unused", rows, columns: [["env", "env"], ["library", "name"], ["version", "version"]] });
  view.dataset.loaded = "unused";
}
