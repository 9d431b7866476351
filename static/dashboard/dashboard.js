// Draws the dashboard's charts from the JSON the page carries (Chart.js, served from static/).
(function () {
  "use strict";
  function data(id) {
    var node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }
  function draw() {
    if (typeof Chart === "undefined") return;
    var trend = data("dash-trend");
    var labels = data("dash-labels") || {};
    var style = getComputedStyle(document.documentElement);
    var ink = style.getPropertyValue("--body-quiet-color").trim() || "#666";
    var line = style.getPropertyValue("--hairline-color").trim() || "#e5e7eb";
    var blue = "#417690", teal = "#2a9d8f", orange = "#e76f51", gold = "#e9c46a";
    Chart.defaults.color = ink;
    Chart.defaults.borderColor = line;
    Chart.defaults.font.size = 11;
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.plugins.legend.labels.boxWidth = 12;
    var weeks = trend ? trend.weeks.map(function (w) { return w.slice(5); }) : [];
    var axis = { x: { ticks: { maxTicksLimit: 13, maxRotation: 0 }, grid: { display: false } } };
    function chart(id, config) {
      var canvas = document.getElementById(id);
      if (canvas) new Chart(canvas, config);
    }
    if (trend) {
      chart("chart-sales", {
        data: { labels: weeks, datasets: [
          { type: "bar", label: labels.sales, data: trend.sales, backgroundColor: blue, yAxisID: "y" },
          { type: "line", label: labels.transactions, data: trend.transactions, borderColor: orange,
            backgroundColor: orange, pointRadius: 0, borderWidth: 2, yAxisID: "y1" }
        ] },
        options: { scales: Object.assign({}, axis, { y: { beginAtZero: true }, y1: { beginAtZero: true,
          position: "right", grid: { display: false } } }) }
      });
      chart("chart-share", {
        type: "line",
        data: { labels: weeks, datasets: [{ label: labels.share, data: trend.member_share, borderColor: teal,
          backgroundColor: "rgba(42,157,143,.15)", fill: true, pointRadius: 0, borderWidth: 2, spanGaps: true }] },
        options: { plugins: { legend: { display: false } }, scales: Object.assign({}, axis, { y: { min: 0, max: 100 } }) }
      });
      chart("chart-aov", {
        type: "line",
        data: { labels: weeks, datasets: [
          { label: labels.aov, data: trend.aov, borderColor: blue, backgroundColor: blue, pointRadius: 0,
            borderWidth: 2, yAxisID: "y", spanGaps: true },
          { label: labels.basket, data: trend.basket, borderColor: gold, backgroundColor: gold, pointRadius: 0,
            borderWidth: 2, yAxisID: "y1", spanGaps: true }
        ] },
        options: { scales: Object.assign({}, axis, { y: { beginAtZero: true }, y1: { beginAtZero: true,
          position: "right", grid: { display: false } } }) }
      });
      chart("chart-new", {
        type: "bar",
        data: { labels: weeks, datasets: [{ label: labels["new"], data: trend.new_members, backgroundColor: teal }] },
        options: { plugins: { legend: { display: false } }, scales: Object.assign({}, axis, { y: { beginAtZero: true } }) }
      });
    }
    var tiers = data("dash-tiers");
    if (tiers && tiers.length) {
      chart("chart-tiers", {
        type: "bar",
        data: { labels: tiers.map(function (t) { return t.name; }), datasets: [
          { label: labels.members, data: tiers.map(function (t) { return t.members * 100; }), backgroundColor: blue },
          { label: labels.spend, data: tiers.map(function (t) { return t.spend * 100; }), backgroundColor: orange }
        ] },
        options: { scales: { x: { grid: { display: false } }, y: { beginAtZero: true, max: 100,
          ticks: { callback: function (v) { return v + "%"; } } } } }
      });
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
}());
// Long result tables show their first rows; a button unfolds the rest (all are in the Excel export).
document.addEventListener("click", function (event) {
  var button = event.target.closest(".dash-show-all");
  if (!button) return;
  var rest = button.previousElementSibling.querySelector(".dash-rest");
  if (!rest) return;
  var hidden = rest.hasAttribute("hidden");
  if (hidden) { rest.removeAttribute("hidden"); } else { rest.setAttribute("hidden", ""); }
  var other = button.getAttribute("data-label-less");
  button.setAttribute("data-label-less", button.textContent);
  button.textContent = other;
});
