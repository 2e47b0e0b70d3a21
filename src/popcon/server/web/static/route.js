/* Where the page is: the address holds the view and the API's own query parameters, so every
 * view can be bookmarked: PREFIX[library/NAME|unused|user-installed|environments]?since=24h&...
 * PREFIX is the page's URL prefix ("/" standalone, the service prefix behind JupyterHub). */

export const PREFIX = document.querySelector('meta[name="popcon-prefix"]').content || "/";

/** The view the address names, its library (on a library's page) and its parameters. */
export function currentRoute() {
  let path = location.pathname;
  path = path.startsWith(PREFIX) ? path.slice(PREFIX.length) : "";
  const params = new URLSearchParams(location.search);
  if (path.startsWith("library/")) {
    return { view: "library", name: decodeURIComponent(path.slice(8)), params };
  }
  const known = ["unused", "user-installed", "environments"];
  return { view: known.includes(path) ? path : "libraries", params };
}

/** The path of the current view, under the prefix ("", "unused", "library/numpy", ...). */
export function routePath() {
  const route = currentRoute();
  if (route.view === "library") return "library/" + encodeURIComponent(route.name);
  return route.view === "libraries" ? "" : route.view;
}

/** The address of a view with these parameters. */
export function href(viewPath, params) {
  const query = params.toString();
  return PREFIX + viewPath + (query ? "?" + query : "");
}

/** The query parameters of the current address, changed by `changes` (null removes). */
export function withParams(changes) {
  const params = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === "") params.delete(key);
    else params.set(key, value);
  }
  return params;
}

/** The parameters an API endpoint accepts, out of the page's. */
export function apiParams(params, allowed) {
  const out = new URLSearchParams();
  for (const [key, value] of params) {
    if (allowed.includes(key) || (allowed.includes("label") && key.startsWith("label."))) {
      out.set(key, value);
    }
  }
  if (!out.has("since") && !out.has("from")) out.set("since", "6h");
  return out;
}
