/* "Download CSV": exactly the rows and columns the current view shows. */

import { el } from "./dom.js";

let shown = null; // {name, columns: [[heading, key or function of a row]], rows: [...]}

/** What the button downloads from now on: a view calls it each time it draws a table; null
 * while nothing is shown. */
export function offerCsv(table) {
  shown = table;
}

function csvValue(value) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "object" ? JSON.stringify(value) : String(value);
  return /[",\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
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
