/* Tables: cells for counts and shares, a sortable table, a plain one, and the search filter. */

import { el } from "./dom.js";
import { isHidden, isUnknown, share, UNKNOWN_TEXT, UNKNOWN_TITLE } from "./format.js";

/** A numeric cell; a hidden count ("fewer than N") is written as such, in grey, and an
 * unknown one (null) as "?", never as 0. */
export function countCell(value, extraClass) {
  const td = el("td", { class: "num" + (extraClass ? " " + extraClass : "") });
  if (isUnknown(value)) td.append(el("span", { class: "hidden-count", title: UNKNOWN_TITLE, text: UNKNOWN_TEXT }));
  else if (isHidden(value)) td.append(el("span", { class: "hidden-count", text: value }));
  else td.textContent = Number(value).toLocaleString();
  return td;
}

/** A row's direct share as a bar and a percentage. */
export function shareCell(row) {
  const value = share(row);
  const td = el("td", { class: "num" });
  if (value === null) {
    td.append(el("span", { class: "hidden-count", text: isHidden(row.direct) ? row.direct : "–" }));
    return td;
  }
  const fill = el("i");
  fill.style.width = Math.round(value * 100) + "%";
  td.append(el("span", { class: "share" }, el("span", { class: "bar" }, fill),
    Math.round(value * 100) + "%"));
  return td;
}

/** A sortable table. columns: [{heading, key, numeric, cell(row) -> td, sort(row), then(row),
 * optional}] (then: what orders rows whose sort values are equal, before their names);
 * sort: {key, desc}; onSort(key) is called by a click on a heading. */
export function sortableTable(columns, rows, sort, onSort) {
  const head = el("tr", {}, columns.map((column) => {
    const th = el("th", { class: (column.numeric ? "num" : "") + (column.optional ? " optional" : ""),
      scope: "col" });
    if (column.sort) {
      const button = el("button", { type: "button", text: column.heading });
      button.addEventListener("click", () => onSort(column.key));
      th.append(button);
      if (sort.key === column.key) th.setAttribute("aria-sort", sort.desc ? "descending" : "ascending");
    } else {
      th.textContent = column.heading;
    }
    return th;
  }));
  const body = el("tbody", {}, rows.map((row) => {
    const tr = el("tr", { "data-name": row.name || row.env || "" });
    for (const column of columns) {
      const td = column.cell ? column.cell(row) : el("td", { text: row[column.key] ?? "" });
      td.dataset.column = column.key;
      if (column.optional) td.classList.add("optional");
      tr.append(td);
    }
    return tr;
  }));
  return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), body));
}

/** The rows in the order `sort` asks for; ties by name. */
export function sortRows(rows, columns, sort) {
  const column = columns.find((c) => c.key === sort.key) || columns[0];
  const sign = sort.desc ? -1 : 1;
  return [...rows].sort((a, b) => {
    for (const key of [column.sort, column.then]) {
      if (!key) continue;
      const x = key(a);
      const y = key(b);
      if (x < y) return -sign;
      if (x > y) return sign;
    }
    return String(a.name || a.env).localeCompare(String(b.name || b.env));
  });
}

/** A table that does not sort, or a note when there are no rows.
 * columns: [[heading, key, numeric, cell(row) -> td]]. */
export function simpleTable(columns, rows) {
  if (!rows.length) return el("p", { class: "note", text: "None in this window." });
  return el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, columns.map(([heading, , numeric]) =>
      el("th", { class: numeric ? "num" : "", scope: "col", text: heading })))),
    el("tbody", {}, rows.map((row) => el("tr", {}, columns.map(([, key, numeric, cell]) => {
      const td = cell ? cell(row) : numeric ? countCell(row[key]) : el("td", { class: "wrap", text: row[key] ?? "" });
      td.dataset.column = key;
      return td;
    }))))));
}

/** Does the row's name contain the search text? */
export function matches(row, query) {
  return !query || String(row.name || "").includes(query.trim().toLowerCase());
}
