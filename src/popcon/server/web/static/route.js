/* Where the page is: the address holds the view and the API's own query parameters, so every
 * view can be bookmarked: PREFIX[library/NAME|programs|unused|user-installed|environments]?since=24h&...
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
  const known = ["programs", "unused", "user-installed", "environments"];
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

/** The window a view answers for when the address names none (the API's own defaults for
 * unused and user-installed); the Environments view has no window. */
const DEFAULT_SINCE = { unused: "30d", "user-installed": "30d", environments: null };

/** The window the view of `route` shows: "6h", "30d"..., "" for an address with its own
 * from/until, null where no window applies. */
export function windowOf(route) {
  const fallback = route.view in DEFAULT_SINCE ? DEFAULT_SINCE[route.view] : "6h";
  if (fallback === null) return null;
  if (route.params.get("since")) return route.params.get("since");
  return route.params.get("from") ? "" : fallback;
}

/** The parameters an API endpoint accepts, out of the route's, with the view's window. */
export function apiParams(route, allowed) {
  const out = new URLSearchParams();
  for (const [key, value] of route.params) {
    if (allowed.includes(key) || (allowed.includes("label") && key.startsWith("label."))) {
      out.set(key, value);
    }
  }
  const since = windowOf(route);
  if (since && !out.has("since")) out.set("since", since);
  return out;
}
