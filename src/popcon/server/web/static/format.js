/* Counts, shares, times and windows as the page writes them. A count the API hides ("fewer
 * than N") arrives as a string and stays one. */

export const isHidden = (value) => typeof value === "string";

/** A count for sorting and charts: a hidden count ("fewer than N") sorts between 0 and 1. */
export const sortValue = (value) => (isHidden(value) ? 0.5 : Number(value || 0));

/** The direct share of a row (direct / processes), or null where a count is hidden or zero. */
export function share(row) {
  if (isHidden(row.processes) || isHidden(row.direct) || !row.processes) return null;
  return row.direct / row.processes;
}

/** A chart's time label, as fine as a window of `span` seconds needs. */
export function formatTime(iso, span) {
  const date = new Date(iso);
  if (span <= 2 * 86400) return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (span <= 14 * 86400) {
    return date.toLocaleString([], { weekday: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  return date.toLocaleDateString([], { day: "numeric", month: "short" });
}

/** The seconds between an answer's `from` and `until`. */
export function spanOf(answer) {
  return (Date.parse(answer.until) - Date.parse(answer.from)) / 1000;
}

/** An answer's window, "1 Dec 2026, 05:00 – 2 Dec 2026, 05:00". */
export function windowText(answer) {
  const options = { dateStyle: "medium", timeStyle: "short" };
  return new Date(answer.from).toLocaleString([], options) + " – " +
    new Date(answer.until).toLocaleString([], options);
}

/** Versions and their processes, "2.1.0 (4), 1.26.4 (fewer than 3)". */
export function versionsText(versions) {
  return versions.map((v) => v.version + " (" + v.processes + ")").join(", ");
}

/** The environment and label filters of `params`, "; only environment img:a, hub=x". */
export function filterText(params) {
  const parts = [];
  if (params.get("env")) parts.push("environment " + params.get("env"));
  for (const [key, value] of params) if (key.startsWith("label.")) parts.push(key.slice(6) + "=" + value);
  return parts.length ? "; only " + parts.join(", ") : "";
}
