/* popcon dashboard: plain JavaScript modules, no build step. This one wires them together:
 * it draws the view the address names (route.js), on every change of address, and states the
 * privacy rule in the footer. The views read the collector's JSON API (api/v1/...) and the
 * two dashboard answers (dashboard/api/...), all under the page's prefix (api.js). */

import { api, takeTokenFromAddress } from "./api.js";
import { destroyCharts } from "./charts.js";
import { forgetEnvironments, listenToControls, loadEnvironments, syncControls } from "./controls.js";
import { offerCsv } from "./csv.js";
import { displayText, view } from "./dom.js";
import { showError } from "./errors.js";
import { currentRoute } from "./route.js";
import { renderEnvironments } from "./view-environments.js";
import { renderLibraries } from "./view-libraries.js";
import { renderLibrary } from "./view-library.js";
import { renderPrograms } from "./view-programs.js";
import { renderUnused } from "./view-unused.js";
import { renderUserInstalled } from "./view-user-installed.js";

const RENDERERS = {
  libraries: renderLibraries, library: renderLibrary, programs: renderPrograms, unused: renderUnused,
  "user-installed": renderUserInstalled, environments: renderEnvironments,
};

let renderId = 0;

/** Draw the view the address names; a later call makes the ones still waiting give up. */
async function render() {
  const id = ++renderId;
  const current = () => id === renderId;
  const route = currentRoute();
  destroyCharts();
  offerCsv(null);
  delete view.dataset.loaded;
  delete view.dataset.include;
  document.title = "popcon" + (route.view === "library" ? " · " + displayText(route.name) : "");
  try {
    await loadEnvironments();
    if (!current()) return;
    syncControls(route);
    await RENDERERS[route.view](route, current);
  } catch (error) {
    if (current()) showError(error, retry);
  }
}

/** Ask again from the start, with the token just entered. */
function retry() {
  forgetEnvironments();
  render();
}

function navigate(url, replace) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

async function showPrivacy() {
  const privacy = document.getElementById("privacy");
  try {
    const answer = await api("api/v1/libraries", new URLSearchParams({ since: "6h" }));
    const counts = answer.min_count > 1
      ? `Counts below ${answer.min_count} are shown as “fewer than ${answer.min_count}”.`
      : "Every count is shown.";
    const people = answer.min_users > 1
      ? ` Rows fewer than ${answer.min_users} people used are hidden.` : "";
    privacy.textContent = counts + people + " Users are distinct people, counted without " +
      "learning who anyone is; “?” where no recorder sent people.";
  } catch (error) {
    privacy.textContent = "";
  }
}

listenToControls(navigate);
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
for (const link of document.querySelectorAll(".tabs a, a.brand")) link.dataset.nav = "";
window.addEventListener("popstate", () => render());

takeTokenFromAddress();
render().then(showPrivacy);
