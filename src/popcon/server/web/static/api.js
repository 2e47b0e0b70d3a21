/* Asking the collector: the JSON API (api/v1/...) and the dashboard's own answers
 * (dashboard/api/...), under the page's prefix, with the API token this tab keeps. */

import { PREFIX } from "./route.js";

const TOKEN_KEY = "popcon-token";

/** An answer other than 2xx: its HTTP status and the API's error message. */
export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** The API token this tab keeps (sessionStorage), or null. */
export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keep `token` for this tab; an empty one forgets it. */
export function saveToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token.trim());
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Move a `?token=` out of the address bar into this tab's storage. */
export function takeTokenFromAddress() {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }
}

/** The parsed JSON answer of GET PREFIX + path?params; an ApiError unless it is 2xx. */
export async function api(path, params) {
  const query = params ? params.toString() : "";
  const headers = { Accept: "application/json" };
  const token = savedToken();
  if (token) headers.Authorization = "token " + token;
  // Behind JupyterHub the login is a cookie, and a script's requests must also show the
  // Hub's XSRF token (the _xsrf cookie its OAuth callback set for this prefix).
  const xsrf = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]+)/);
  if (xsrf) headers["X-XSRFToken"] = decodeURIComponent(xsrf[1]);
  const response = await fetch(PREFIX + path + (query ? "?" + query : ""), {
    headers, credentials: "same-origin",
  });
  let body = null;
  try { body = await response.json(); } catch (error) { body = null; }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || response.statusText);
  }
  return body;
}
