/* Counts, shares, times and windows as the page writes them. A count the API hides ("fewer
 * than N") arrives as a string and stays one. */

export const isHidden = (value) => typeof value === "string";

/** A count nobody knows: users where no recorder sent people (statsd clients, older
 * recorders, processes without a secret) arrive as null, and are never shown as 0. */
export const isUnknown = (value) => value === null || value === undefined;
export const UNKNOWN_TEXT = "?";
export const UNKNOWN_TITLE = "unknown: no recorder sent people for these processes";

/** A count for sorting and charts: a hidden count ("fewer than N") sorts between 0 and 1, an
 * unknown one below 0. */
export const sortValue = (value) => (isUnknown(value) ? -1 : isHidden(value) ? 0.5 : Number(value));

/** A count as a CSV cell: the count, its "fewer than N", or "unknown". */
export const csvCount = (value) => (isUnknown(value) ? "unknown" : value);

/** The direct share of a row (direct / processes), or null where a count is hidden or zero. */
export function share(row) {
  if (isHidden(row.processes) || isHidden(row.direct) || !row.processes) return null;
  return row.direct / row.processes;
}

/** The time of a chart's bar (its tooltip), as fine as a window of `span` seconds needs. */
export function formatTime(iso, span) {
  const date = new Date(iso);
  if (span <= 2 * 86400) return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (span <= 14 * 86400) {
    return date.toLocaleString([], { weekday: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  return date.toLocaleDateString([], { day: "numeric", month: "short" });
}

/** A chart's axis label at a label every `every` seconds: the time of day, or the date
 * where labels are whole days apart. */
export function formatTick(iso, every) {
  const date = new Date(iso);
  if (every % 86400 === 0) return date.toLocaleDateString([], { month: "short", day: "numeric" });
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** The seconds between an answer's `from` and `until`. */
export function spanOf(answer) {
  return (Date.parse(answer.until) - Date.parse(answer.from)) / 1000;
}

/** A moment as every page writes it, "Dec 2, 2026, 1:00 AM" (in the browser's language). */
export function formatDate(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

/** An answer's window, "Dec 1, 2026, 5:00 AM – Dec 2, 2026, 5:00 AM". */
export function windowText(answer) {
  return formatDate(answer.from) + " – " + formatDate(answer.until);
}

/** A length of time in words, as coarse as a person reads it: "50 minutes", "5 hours",
 * "3 days". */
export function durationText(seconds) {
  const [size, unit] = seconds >= 2 * 86400 ? [86400, "day"] : seconds >= 2 * 3600 ? [3600, "hour"]
    : [60, "minute"];
  const count = Math.max(1, Math.floor(seconds / size));
  return count + " " + unit + (count === 1 ? "" : "s");
}

/** Seconds between chart labels: the shortest round span that is a whole number of `step`
 * and leaves at most `most` labels over `span`; labels then fall on round times (every hour,
 * every day...) in both charts of a page alike. */
export function labelEvery(span, step, most = 8) {
  const round = [600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 2 * 86400,
    4 * 86400, 7 * 86400, 14 * 86400, 28 * 86400];
  const fit = round.find((every) => every % step === 0 && span / every <= most);
  return fit || step * Math.ceil(span / step / most);
}

/** Versions and their processes, "2.1.0 (4), 1.26.4 (fewer than 3)". */
export function versionsText(versions) {
  return versions.map((v) => v.version + " (" + v.processes + ")").join(", ");
}

/** Does the address ask to include the programs' own imports? */
export const includesPrograms = (params) => params.get("include") === "programs";

const LEVEL_TEXT = { direct: "direct use", transitive: "transitive use", unknown: "statsd lines" };

/** The filters of `params` that apply (of `applies`: "env", "label", "level", "origin"), in
 * words: ["environment img:a", "hub=x", "direct use"]. */
export function filterParts(params, applies = ["env", "label"]) {
  const parts = [];
  if (applies.includes("env") && params.get("env")) parts.push("environment " + params.get("env"));
  if (applies.includes("label")) {
    for (const [key, value] of params) if (key.startsWith("label.")) parts.push(key.slice(6) + "=" + value);
  }
  const level = params.get("level");
  if (applies.includes("level") && level) parts.push(LEVEL_TEXT[level] || "level " + level);
  if (applies.includes("origin") && params.get("origin")) parts.push("origin " + params.get("origin"));
  return parts;
}

