/* Plots: bar charts drawn by Chart.js (the global `Chart` of chart.umd.min.js, a classic script
 * the page loads before this module) and the tables' SVG sparklines. */

import { isHidden } from "./format.js";

export const COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4",
  "#ec4899", "#84cc16", "#f97316", "#64748b"];

let drawn = [];

/** A hidden count is a blank point in a chart. */
export const chartValue = (v) => (isHidden(v) ? null : v);

/** A stacked bar chart on `canvas`, one bar per slice starting at `times` (ISO), each bar's
 * tooltip titled `label(time)`, the axis labelled `tick(time)` every `every` seconds (on whole
 * multiples of `every` when a slice starts at one, else from the first slice); it lasts until
 * `destroyCharts`. Two charts given the same times and width are drawn alike: same labels,
 * same bar positions (the y axis has a fixed width). */
export function barChart(canvas, { times, every, label, tick }, datasets) {
  const labels = times.map(label);
  const ticks = times.map(tick);
  const seconds = times.map((time) => Date.parse(time) / 1000);
  const phase = seconds.find((t) => t % every === 0) ?? seconds[0];
  const shown = seconds.map((t) => (((t - phase) % every) + every) % every === 0);
  const aligned = shown.filter(Boolean).length >= 2;
  drawn.push(new Chart(canvas, {
    type: "bar",
    data: { labels, datasets },
    options: chartOptions(aligned, (index) => (!aligned || shown[index] ? ticks[index] : null)),
  }));
}

/** Remove every chart drawn since the last call (before the next view is drawn). */
export function destroyCharts() {
  for (const chart of drawn) chart.destroy();
  drawn = [];
}

/** Width in pixels of every chart's y axis, so that two charts' bars line up. */
const Y_AXIS_WIDTH = 44;

function chartOptions(aligned, tickLabel) {
  return {
    responsive: true, maintainAspectRatio: false, animation: false,
    interaction: { mode: "index", intersect: false },
    scales: {
      x: { stacked: true, grid: { display: false },
        ticks: { maxRotation: 0, autoSkip: !aligned, maxTicksLimit: 8, callback: (_value, index) => tickLabel(index) } },
      y: { stacked: true, beginAtZero: true, ticks: { precision: 0 },
        afterFit: (scale) => { scale.width = Y_AXIS_WIDTH; } },
    },
    plugins: { legend: { position: "bottom" } },
  };
}

/** A sparkline: one small bar per slice of the window, as wide as its cell. A count is a
 * bar in the accent colour, as high as its share of the largest; a hidden count ("fewer than
 * N": at least 1, below N) a grey bar as high as N - 1 would be; zero no bar. A baseline spans
 * the whole window, so a quiet stretch shows as such. */
export function sparkline(values, { label, minCount }) {
  const height = 24;
  const barWidth = 4;
  const width = Math.max(1, values.length) * barWidth;
  const numbers = values.map((v) => (isHidden(v) ? null : Number(v)));
  const hiddenHeight = Math.max(1, minCount - 1);
  const max = Math.max(1, ...numbers.filter((v) => v !== null), values.some(isHidden) ? hiddenHeight : 0);
  const svgNs = "http://www.w3.org/2000/svg";
  const node = (tag, attrs) => {
    const made = document.createElementNS(svgNs, tag);
    for (const [key, value] of Object.entries(attrs)) made.setAttribute(key, value);
    return made;
  };
  const svg = node("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: "none", role: "img", "aria-label": label });
  svg.dataset.values = JSON.stringify(values);
  svg.append(node("title", {}), node("line", { class: "base", x1: 0, x2: width, y1: height - 0.5,
    y2: height - 0.5 }));
  svg.firstChild.textContent = label;
  numbers.forEach((value, i) => {
    const amount = value === null ? hiddenHeight : value;
    if (!amount) return;
    const barHeight = Math.max(2, (amount / max) * (height - 1));
    svg.append(node("rect", { class: value === null ? "hidden" : "count", x: i * barWidth + 0.5,
      y: height - 1 - barHeight, width: barWidth - 1, height: barHeight }));
  });
  return svg;
}
