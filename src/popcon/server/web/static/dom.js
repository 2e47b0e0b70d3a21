/* Building the page: every element is made here, and text goes in as text (textContent or
 * text nodes), never as markup. */

/** The element the current view is drawn into. */
export const view = document.getElementById("view");

/** A new element: attrs are attributes ("text" sets its text, "class" its class; null,
 * undefined and false leave one out), children are nodes or strings, arrays flattened. */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
