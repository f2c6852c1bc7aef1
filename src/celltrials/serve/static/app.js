// celltrials dashboard: progressive enhancement only (every page works without it).
(function () {
  "use strict";

  // "/" focuses the search box (unless typing in a field)
  document.addEventListener("keydown", function (ev) {
    if (ev.key !== "/" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT")) return;
    var box = document.getElementById("q") || document.getElementById("quick-q");
    if (box) { ev.preventDefault(); box.focus(); }
  });

  // on a phone the filter panel starts folded
  var box = document.querySelector(".facet-box");
  if (box && window.matchMedia && window.matchMedia("(max-width: 820px)").matches) box.removeAttribute("open");

  // facet checkboxes and the sort menu apply at once
  var form = document.getElementById("filters");
  if (form) {
    form.addEventListener("change", function (ev) {
      if (ev.target && ev.target.type === "checkbox") submitClean(form);
    });
    form.addEventListener("submit", function (ev) { ev.preventDefault(); submitClean(form); });
  }
  document.querySelectorAll("select[data-autosubmit]").forEach(function (sel) {
    sel.addEventListener("change", function () { submitClean(sel.form); });
  });

  // submit a GET form without empty parameters (short, shareable URLs)
  function submitClean(f) {
    var params = new URLSearchParams();
    new FormData(f).forEach(function (v, k) { if (String(v).trim() !== "") params.append(k, v); });
    if (params.get("sort") === "trial_id") params.delete("sort");
    var qs = params.toString();
    window.location.assign(f.getAttribute("action") + (qs ? "?" + qs : ""));
  }

  // overview charts (plotly.js served by the dashboard itself; no CDN)
  var data = document.getElementById("chart-data");
  if (data) {
    var run = function () {
      if (!window.Plotly) { setTimeout(run, 50); return; }
      drawCharts(JSON.parse(data.textContent));
    };
    run();
  }

  var PALETTE = { immune: "#0072B2", stem_stromal: "#E69F00", other: "#009E73", unassigned: "#999999" };

  function linkFor(params, pairs) {
    var p = new URLSearchParams();
    pairs.forEach(function (kv) { p.append(kv[0], kv[1]); });
    return "/trials?" + p.toString();
  }

  function drawCharts(payload) {
    payload.charts.forEach(function (c) {
      var el = document.getElementById("plot-" + c.id);
      if (!el) return;
      var traces = [];
      if (c.stacked) {
        var series = [];
        c.items.forEach(function (it) { if (series.indexOf(it.series) < 0) series.push(it.series); });
        var cats = [];
        c.items.forEach(function (it) { if (cats.indexOf(it.label) < 0) cats.push(it.label); });
        series.forEach(function (s) {
          var its = c.items.filter(function (it) { return it.series === s; });
          traces.push({
            type: "bar", name: its.length ? its[0].series_label : s,
            x: its.map(function (it) { return it.label; }), y: its.map(function (it) { return it.n; }),
            customdata: its.map(function (it) { return it.link ? linkFor(payload.params, it.link) : ""; }),
            marker: { color: PALETTE[s] || "#56B4E9" },
            hovertemplate: "%{x}: %{y}<extra>%{fullData.name}</extra>"
          });
        });
      } else {
        var its = c.items.slice().reverse();
        traces.push({
          type: "bar", orientation: "h",
          y: its.map(function (it) { return it.label; }), x: its.map(function (it) { return it.n; }),
          customdata: its.map(function (it) { return it.link ? linkFor(payload.params, it.link) : ""; }),
          marker: { color: "#0072B2" }, hovertemplate: "%{y}: %{x}<extra></extra>"
        });
      }
      var rows = c.stacked ? 8 : Math.max(3, c.items.length);
      var layout = {
        barmode: "stack", height: Math.min(520, 90 + rows * 24), margin: { l: c.stacked ? 40 : 150, r: 10, t: 6, b: 40 },
        showlegend: c.stacked, legend: { orientation: "h", y: -0.25 },
        font: { family: "system-ui, sans-serif", size: 12 }, yaxis: { automargin: true }, xaxis: { automargin: true }
      };
      Plotly.newPlot(el, traces, layout, { displayModeBar: false, responsive: true });
      el.setAttribute("data-drawn", "1");
      el.on("plotly_click", function (ev) {
        var url = ev && ev.points && ev.points[0] && ev.points[0].customdata;
        if (url) window.location.assign(url);
      });
    });
  }
})();
