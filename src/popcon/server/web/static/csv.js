/* "Download CSV": exactly the rows and columns the current view shows. */

import { el } from "./dom.js";

let shown = null; // {name, columns: [[heading, key or function of a row]], rows: [...]}

/** What the button downloads from now on: a view calls it each time it draws a table; null
 * while nothing is shown. */
export function offerCsv(table) {
  shown = table;
}

/** First characters that make a spreadsheet read a cell as a formula (OWASP's list). */
const FORMULA_START = /^[=+\-@\t\r]/;

/** `value` as a CSV cell: text that begins with a formula character gets a leading "'" (a
 * spreadsheet then shows it as text); numbers stay numbers, whatever their sign; objects are
 * their JSON. Quoted when it holds a quote, a comma or a line break. */
function csvValue(value) {
  if (value === null || value === undefined) return "";
  let text = typeof value === "object" ? JSON.stringify(value) : String(value);
  if (typeof value !== "number" && FORMULA_START.test(text)) text = "'" + text;
  return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}

/** Save what is shown as NAME.csv. */
export function downloadCsv() {
  if (!shown) return;
  const lines = [shown.columns.map(([heading]) => csvValue(heading)).join(",")];
  for (const row of shown.rows) {
    lines.push(shown.columns.map(([, key]) => csvValue(typeof key === "function" ? key(row) : row[key])).join(","));
  }
  const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv;charset=utf-8" });
  const link = el("a", { href: URL.createObjectURL(blob), download: shown.name + ".csv" });
  document.body.append(link);
  link.click();
  setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
}
