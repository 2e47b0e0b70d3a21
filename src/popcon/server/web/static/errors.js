/* What a view shows when the collector refuses or fails: for 401 and 403, the reason and a
 * form for the API token; otherwise the error. */

import { ApiError, saveToken, savedToken } from "./api.js";
import { el, view } from "./dom.js";

/** Show `error` in place of the view; a token entered in the form calls retry(). */
export function showError(error, retry) {
  view.replaceChildren();
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    view.append(el("h1", { text: error.status === 401 ? "A token is needed" : "Not allowed" }),
      el("p", { class: "error", text: error.message }));
    if (error.status === 401 || savedToken()) view.append(tokenForm(retry));
    return;
  }
  view.append(el("p", { class: "error", text: "Could not load: " + error.message }));
}

function tokenForm(retry) {
  const input = el("input", { type: "password", name: "token", placeholder: "POPCON_API_TOKEN",
    autocomplete: "off", "aria-label": "API token" });
  const form = el("form", { class: "token-form" }, input,
    el("button", { type: "submit", class: "button", text: "Use token" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    saveToken(input.value);
    retry();
  });
  return el("div", { class: "card" },
    el("p", { class: "note", text: "Paste the collector's API token (the POPCON_API_TOKEN it " +
      "was started with). It is kept in this tab only. Behind JupyterHub, reload the page to " +
      "log in again." }), form);
}
