/* The controls above every view (window, environment, label, level, "include programs",
 * search, "Download CSV") and the tabs: filled from the collector's environments, set from
 * the address, turned into new addresses when changed, and disabled, with the reason said,
 * where they do not apply. On a narrow screen all but the window fold behind "Filters". */

import { api } from "./api.js";
import { downloadCsv } from "./csv.js";
import { el } from "./dom.js";
import { href, routePath, windowOf, withParams } from "./route.js";

const controls = document.getElementById("controls");
const envSelect = document.getElementById("env");
const labelSelect = document.getElementById("label");
const levelSelect = document.getElementById("level");
const search = document.getElementById("search");
const includePrograms = document.getElementById("include-programs");
const csvButton = document.getElementById("csv");
const filtersToggle = document.getElementById("filters-toggle");
const note = document.getElementById("controls-note");

/** What each view's controls apply to; a view not named in a list ignores that control. */
const APPLIES = {
  env: ["libraries", "library", "programs", "unused", "user-installed"],
  label: ["libraries", "programs"],
  level: ["libraries"],
  include: ["libraries", "library"],
  search: ["libraries", "programs", "unused", "user-installed"],
};
/** Why a control does nothing in a view, said beside the controls. */
const WHY_NOT = {
  environments: "The window and the filters do not apply here: every environment is listed, " +
    "with its last report.",
  library: "Label and level filters apply to the libraries table, not to one library.",
  unused: "Inventories are stored per environment: only the environment filter applies.",
  "user-installed": "Inventories are stored per environment: only the environment filter applies.",
  programs: "The level filter applies to libraries, not to programs.",
};

let answer = null;

/** The collector's environments (asked once, until `forgetEnvironments`), with the
 * environment and label choices filled from them. */
export async function loadEnvironments() {
  if (answer) return answer.environments;
  answer = await api("api/v1/environments");
  const labels = new Set();
  for (const env of answer.environments) {
    for (const set of env.labels) {
      for (const [key, value] of Object.entries(set)) labels.add(key + "=" + value);
    }
  }
  envSelect.replaceChildren(el("option", { value: "", text: "All environments" }),
    ...answer.environments.map((env) => el("option", { value: env.env, text: env.env })));
  labelSelect.replaceChildren(el("option", { value: "", text: "All labels" }),
    ...[...labels].sort().map((label) => el("option", { value: label, text: label })));
  return answer.environments;
}

/** The whole answer `loadEnvironments` read (with `quiet_after`), or null before it. */
export function environmentsAnswer() {
  return answer;
}

/** Ask for the environments again next time. */
export function forgetEnvironments() {
  answer = null;
}

/** Set the controls and the tabs to what the address says. */
export function syncControls(route) {
  const since = windowOf(route);
  for (const input of controls.querySelectorAll('input[name="since"]')) {
    input.checked = input.value === since;
    input.disabled = since === null;
  }
  setSelect(envSelect, route.params.get("env") || "");
  let label = "";
  for (const [key, value] of route.params) {
    if (key.startsWith("label.")) label = key.slice(6) + "=" + value;
  }
  setSelect(labelSelect, label);
  setSelect(levelSelect, route.params.get("level") || "");
  search.value = route.params.get("q") || "";
  includePrograms.checked = route.params.get("include") === "programs";
  const applies = (control) => APPLIES[control].includes(route.view);
  for (const [control, input] of [["env", envSelect], ["label", labelSelect], ["level", levelSelect],
    ["include", includePrograms], ["search", search]]) {
    input.disabled = !applies(control);
    input.closest(".field").title = applies(control) ? input.closest(".field").dataset.title || ""
      : "Does not apply to this view";
  }
  note.textContent = WHY_NOT[route.view] || "";
  const on = ["env", "label", "level"].filter((control) => applies(control) &&
    (control === "label" ? label : route.params.get(control))).length;
  filtersToggle.textContent = on ? `Filters (${on} on)` : "Filters";
  for (const link of document.querySelectorAll(".tabs a")) {
    const active = link.dataset.view === (route.view === "libraries" || route.view === "library"
      ? "" : route.view);
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
    link.href = href(link.dataset.view, withParams({ q: null }));
  }
}

function setSelect(select, value) {
  if (value && ![...select.options].some((option) => option.value === value)) {
    select.append(el("option", { value, text: value }));
  }
  select.value = value;
}

/** Go to a new address when a control changes: navigate(url, replace) draws it. */
export function listenToControls(navigate) {
  for (const field of controls.querySelectorAll(".field[title]")) field.dataset.title = field.title;
  controls.addEventListener("submit", (event) => event.preventDefault());
  controls.addEventListener("change", (event) => {
    const target = event.target;
    if (target.name === "since") navigate(href(routePath(), withParams({ since: target.value })));
    else if (target === envSelect) navigate(href(routePath(), withParams({ env: envSelect.value })));
    else if (target === levelSelect) navigate(href(routePath(), withParams({ level: levelSelect.value })));
    else if (target === includePrograms) {
      navigate(href(routePath(), withParams({ include: includePrograms.checked ? "programs" : null })));
    }
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
  filtersToggle.addEventListener("click", () => {
    const open = controls.classList.toggle("open");
    filtersToggle.setAttribute("aria-expanded", String(open));
  });
}
