/* Building the page: every element is made here, and text goes in as text (textContent or
 * text nodes), never as markup, written by `displayText`. */

/** The element the current view is drawn into. */
export const view = document.getElementById("view");

/** Characters that can change what a line of text appears to say: C0 controls, DEL, C1
 * controls (U+0080-U+009F), and the bidirectional marks, embeddings, overrides and isolates. */
const SPOOFING = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** `text` as the page shows it: each control or bidirectional formatting character written as
 * its escape, "\u202e", so stored data cannot reorder or hide what is shown. */
export function displayText(text) {
  return String(text).replace(SPOOFING, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

/** Attributes a person reads (the others, such as value and href, are data). */
const SHOWN_ATTRIBUTES = new Set(["title", "aria-label", "placeholder", "alt"]);

/** A new element: attrs are attributes ("text" sets its text, "class" its class; null,
 * undefined and false leave one out), children are nodes or strings, arrays flattened. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = displayText(value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : SHOWN_ATTRIBUTES.has(key) ? displayText(value) : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(displayText(child)));
  }
  return node;
}

/** A view's title and, when filters are on, which: "Libraries · only environment img:a,
 * hub=x" (the filters in words, as `filterParts` writes them). */
export function heading(title, filters) {
  return el("h1", {}, title, filters.length
    ? el("span", { class: "filter-on", "data-filters": filters.join(", ") }, " · only " + filters.join(", "))
    : null);
}
