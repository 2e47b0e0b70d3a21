/* The controls above every view (window, environment, label, search, "Download CSV") and the
 * tabs: filled from the collector's environments, set from the address, and turned into new
 * addresses when changed. */

import { api } from "./api.js";
import { downloadCsv } from "./csv.js";
import { el } from "./dom.js";
import { href, routePath, withParams } from "./route.js";

const controls = document.getElementById("controls");
const envSelect = document.getElementById("env");
const labelSelect = document.getElementById("label");
const search = document.getElementById("search");
const csvButton = document.getElementById("csv");

let environments = null;

/** The collector's environments (asked once, until `forgetEnvironments`), with the
 * environment and label choices filled from them. */
export async function loadEnvironments() {
  if (environments) return environments;
  const answer = await api("api/v1/environments");
  environments = answer.environments;
  const labels = new Set();
  for (const env of environments) {
    for (const set of env.labels) {
      for (const [key, value] of Object.entries(set)) labels.add(key + "=" + value);
    }
  }
  envSelect.replaceChildren(el("option", { value: "", text: "All environments" }),
    ...environments.map((env) => el("option", { value: env.env, text: env.env })));
  labelSelect.replaceChildren(el("option", { value: "", text: "All labels" }),
    ...[...labels].sort().map((label) => el("option", { value: label, text: label })));
  return environments;
}

/** Ask for the environments again next time. */
export function forgetEnvironments() {
  environments = null;
}

/** Set the controls and the tabs to what the address says. */
export function syncControls(route) {
  const since = route.params.get("since") || "6h";
  for (const input of controls.querySelectorAll('input[name="since"]')) {
    input.checked = input.value === since;
  }
  setSelect(envSelect, route.params.get("env") || "");
  let label = "";
  for (const [key, value] of route.params) {
    if (key.startsWith("label.")) label = key.slice(6) + "=" + value;
  }
  setSelect(labelSelect, label);
  search.value = route.params.get("q") || "";
  for (const link of document.querySelectorAll(".tabs a")) {
    const active = link.dataset.view === (route.view === "libraries" || route.view === "library"
      ? "" : route.view);
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
    const base = link.dataset.view;
    const keep = withParams({ q: null });
    link.href = href(base, keep);
  }
  labelSelect.disabled = !["libraries"].includes(route.view);
  search.disabled = route.view === "library" || route.view === "environments";
}

function setSelect(select, value) {
  if (value && ![...select.options].some((option) => option.value === value)) {
    select.append(el("option", { value, text: value }));
  }
  select.value = value;
}

/** Go to a new address when a control changes: navigate(url, replace) draws it. */
export function listenToControls(navigate) {
  controls.addEventListener("submit", (event) => event.preventDefault());
  controls.addEventListener("change", (event) => {
    const target = event.target;
    if (target.name === "since") navigate(href(routePath(), withParams({ since: target.value })));
    else if (target === envSelect) navigate(href(routePath(), withParams({ env: envSelect.value })));
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
}
