/* Plots: bar charts drawn by Chart.js (the global `Chart` of chart.umd.min.js, a classic script
 * the page loads before this module) and the tables' SVG sparklines. */

import { isHidden } from "./format.js";

export const COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4",
  "#ec4899", "#84cc16", "#f97316", "#64748b"];

let drawn = [];

/** A hidden count is a blank point in a chart. */
export const chartValue = (v) => (isHidden(v) ? null : v);

/** A stacked bar chart on `canvas`; it lasts until `destroyCharts`. */
export function barChart(canvas, labels, datasets) {
  drawn.push(new Chart(canvas, {
    type: "bar",
    data: { labels, datasets },
    options: chartOptions(true),
  }));
}

/** Remove every chart drawn since the last call (before the next view is drawn). */
export function destroyCharts() {
  for (const chart of drawn) chart.destroy();
  drawn = [];
}

function chartOptions(stacked) {
  return {
    responsive: true, maintainAspectRatio: false, animation: false,
    interaction: { mode: "index", intersect: false },
    scales: {
      x: { stacked, ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 8 },
        grid: { display: false } },
      y: { stacked, beginAtZero: true, ticks: { precision: 0 } },
    },
    plugins: { legend: { position: "bottom" } },
  };
}

/** A small line of `values` (hidden counts are dots on the baseline) as an SVG element. */
export function sparkline(values, label) {
  const width = 120;
  const height = 28;
  const numbers = values.map((v) => (isHidden(v) ? null : Number(v)));
  const max = Math.max(1, ...numbers.filter((v) => v !== null));
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.dataset.values = JSON.stringify(values);
  const x = (i) => (values.length > 1 ? (i * (width - 4)) / (values.length - 1) + 2 : width / 2);
  const y = (v) => height - 2 - (v / max) * (height - 4);
  let points = [];
  const flush = () => {
    if (points.length) {
      const line = document.createElementNS(svgNs, "polyline");
      line.setAttribute("points", points.join(" "));
      svg.append(line);
    }
    points = [];
  };
  numbers.forEach((value, i) => {
    if (value === null) {
      flush();
      const dot = document.createElementNS(svgNs, "circle");
      dot.setAttribute("cx", x(i));
      dot.setAttribute("cy", height - 3);
      dot.setAttribute("r", 1.5);
      svg.append(dot);
    } else {
      points.push(x(i).toFixed(1) + "," + y(value).toFixed(1));
    }
  });
  if (points.length === 1) points.push((Number(points[0].split(",")[0]) + 1) + "," + points[0].split(",")[1]);
  flush();
  return svg;
}
