// usagelog's offline dashboards: draws the panels of one Grafana dashboard from the data the
// server (or the report) embedded in the page. Charts are Plotly's; text goes in via textContent.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("usagelog-data").textContent);
  var app = document.getElementById("app");
  var COLORS = { green: "#73bf69", orange: "#ff9830", red: "#f2495c", yellow: "#fade2a", blue: "#5794f2" };
  var ALL = "$__all";  // macros.ALL_VALUE: the value of a variable's "All" option
  var PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0",
                 "#508642", "#cca300", "#447ebc", "#c15c17", "#890f02", "#0a437c", "#6d1f62", "#584477"];

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function header() {
    var head = el("header");
    head.appendChild(el("h1", {}, data.dashboard.title));
    if (data.served && data.dashboards.length) {
      var nav = el("nav");
      data.dashboards.forEach(function (d) {
        var a = el("a", { href: "/d/" + encodeURIComponent(d.uid) + "/" + encodeURIComponent(d.name) }, d.title);
        if (d.uid === data.dashboard.uid) a.className = "current";
        nav.appendChild(a);
      });
      head.appendChild(nav);
    }
    var form = el("form", { class: "controls", method: "get" });
    data.variables.forEach(function (v) {
      var label = el("label", {}, v.label);
      var input;
      if (v.options.length) {
        input = el("select", { name: "var-" + v.name, "data-variable": v.name });
        if (v.multi) input.multiple = true;
        v.options.forEach(function (o) {
          var opt = el("option", { value: o.value }, o.text);
          if (v.current.indexOf(o.value) >= 0) opt.selected = true;
          input.appendChild(opt);
        });
        if (v.multi) allOrValues(input);
      } else {
        input = el("input", { name: "var-" + v.name, value: v.current.join(","), "data-variable": v.name });
        if (v.type === "constant") input.readOnly = true;
      }
      if (!data.served) input.disabled = true;
      label.appendChild(input);
      form.appendChild(label);
    });
    var range = el("label", {}, "Time range");
    var select = el("select", { name: "from", "data-variable": "__range" });
    var presets = [["now-1h", "Last 1 hour"], ["now-6h", "Last 6 hours"], ["now-24h", "Last 24 hours"],
                   ["now-7d", "Last 7 days"], ["now-30d", "Last 30 days"], ["now-90d", "Last 90 days"]];
    var known = false;
    presets.forEach(function (p) {
      var opt = el("option", { value: p[0] }, p[1]);
      if (p[0] === data.range.from) { opt.selected = true; known = true; }
      select.appendChild(opt);
    });
    if (!known) {
      var custom = el("option", { value: data.range.from }, data.range.from + " to " + data.range.to);
      custom.selected = true;
      select.appendChild(custom);
    }
    if (!data.served) select.disabled = true;
    range.appendChild(select);
    form.appendChild(range);
    if (data.served) {
      var to = el("input", { type: "hidden", name: "to", value: data.range.to });
      form.appendChild(to);
      // A preset is a quick range that ends now, as in Grafana. Keeping the end of a custom
      // range instead would put "now-24h" after an end in the past: a refused, empty range.
      select.addEventListener("change", function () {
        if (select.value !== data.range.from) to.value = "now";
      });
      form.appendChild(el("button", { type: "submit" }, "Apply"));
      form.addEventListener("change", function () { form.submit(); });
    }
    head.appendChild(form);
    var meta = data.range.start.slice(0, 16).replace("T", " ") + " to " + data.range.end.slice(0, 16).replace("T", " ") + " UTC";
    if (!data.served) meta += " · report generated " + data.generatedAt.slice(0, 19).replace("T", " ") + " UTC by usagelog";
    head.appendChild(el("div", { class: "meta" }, meta));
    return head;
  }

  // "All" and chosen values exclude each other, as in Grafana: picking a value while All is
  // selected leaves only that value, picking All clears the values, clearing everything means
  // All. Sending All with values would be refused (All is not one of the variable's values).
  function allOrValues(select) {
    var all = select.querySelector('option[value="' + ALL + '"]');
    if (!all) return;
    var hadAll = all.selected;
    select.addEventListener("change", function () {  // before the form's own handler submits
      var values = Array.prototype.filter.call(select.options, function (o) { return o.selected && o !== all; });
      if (all.selected && values.length) {
        if (hadAll) all.selected = false;
        else values.forEach(function (o) { o.selected = false; });
      } else if (!values.length) {
        all.selected = true;
      }
      hadAll = all.selected;
    });
  }

  function place(node, grid) {
    node.style.gridColumn = (grid.x + 1) + " / span " + grid.w;
    node.style.gridRow = (grid.y + 1) + " / span " + grid.h;
  }

  function baseLayout(view) {
    return {
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      font: { color: "#ccccdc", size: 11 }, margin: { l: 56, r: 12, t: 6, b: 30 },
      showlegend: true, legend: { orientation: "h", y: -0.15, font: { size: 10 } },
      colorway: PALETTE, hovermode: "x unified"
    };
  }

  function drawTimeseries(body, view) {
    var traces = view.series.map(function (s) {
      var t = { name: s.name, x: s.x, y: s.y, type: view.bars ? "bar" : "scatter", mode: "lines",
                line: { width: 1.5 }, connectgaps: false };
      if (view.stack && !view.bars) { t.stackgroup = "one"; }
      return t;
    });
    var layout = baseLayout(view);
    // The dashboard's time range, as Grafana shows it, not the data's extent: a burst stays
    // where it happened, and a single point does not stretch over the whole axis.
    layout.xaxis = { type: "date", gridcolor: "#2c3235", range: [data.range.start, data.range.end] };
    layout.yaxis = { gridcolor: "#2c3235", ticksuffix: view.unit, rangemode: "tozero" };
    if (view.bars) layout.barmode = view.stack ? "stack" : "group";
    return Plotly.newPlot(body, traces, layout, { displayModeBar: false, responsive: true });
  }

  function drawBar(body, view) {
    var traces = view.series.map(function (s) {
      return view.horizontal
        ? { name: s.name, type: "bar", orientation: "h", y: view.categories, x: s.values }
        : { name: s.name, type: "bar", x: view.categories, y: s.values };
    });
    var layout = baseLayout(view);
    layout.hovermode = "closest";
    layout.showlegend = traces.length > 1;
    layout.margin.l = view.horizontal ? 110 : 56;
    var valueAxis = { gridcolor: "#2c3235", ticksuffix: view.unit };
    if (view.horizontal) { layout.xaxis = valueAxis; layout.yaxis = { automargin: true, autorange: "reversed" }; }
    else { layout.yaxis = valueAxis; }
    return Plotly.newPlot(body, traces, layout, { displayModeBar: false, responsive: true });
  }

  function drawPie(body, view) {
    var s = view.series[0] || { values: [] };
    var layout = baseLayout(view);
    layout.hovermode = "closest";
    layout.legend = { orientation: "v", font: { size: 10 } };
    return Plotly.newPlot(body, [{ type: "pie", hole: 0.45, labels: view.categories, values: s.values,
      textinfo: "label+value", sort: false }], layout, { displayModeBar: false, responsive: true });
  }

  function drawTable(body, view) {
    var table = el("table", { class: "data" });
    var thead = el("thead"), tr = el("tr");
    view.columns.forEach(function (c, i) {
      var th = el("th", {}, c);
      th.addEventListener("click", function () { sortBy(i); });
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    table.appendChild(thead);
    var tbody = el("tbody");
    table.appendChild(tbody);
    var rows = view.rows.slice();
    var order = 1, sortedBy = -1;
    function fill() {
      tbody.textContent = "";
      rows.forEach(function (row) {
        var tr = el("tr");
        row.forEach(function (cell) {
          var td = el("td", cell.sort !== undefined ? { class: "num" } : {});
          if (cell.href) {
            var a = el("a", { href: cell.href, title: cell.title || "" }, cell.text);
            if (!/^\/d\//.test(cell.href)) { a.target = "_blank"; a.rel = "noopener noreferrer"; }
            td.appendChild(a);
          } else {
            td.textContent = cell.text;
          }
          td.title = cell.text;
          tr.appendChild(td);
        });
        tbody.appendChild(tr);
      });
    }
    function sortBy(i) {
      order = sortedBy === i ? -order : 1;
      sortedBy = i;
      rows.sort(function (a, b) {
        var x = a[i].sort !== undefined ? a[i].sort : a[i].text, y = b[i].sort !== undefined ? b[i].sort : b[i].text;
        return x < y ? -order : x > y ? order : 0;
      });
      fill();
    }
    fill();
    body.appendChild(table);
    return Promise.resolve();
  }

  function panel(view) {
    var box = el("section", { class: "panel", "data-panel-id": view.id, "data-kind": view.kind, "data-type": view.type });
    place(box, view.grid);
    var title = el("h3", {}, view.title);
    if (view.description) title.title = view.description;
    box.appendChild(title);
    // An empty panel says so once, in its body, below.
    if (view.note && view.kind !== "empty") box.appendChild(el("div", { class: "panel-note" }, view.note));
    var body = el("div", { class: "panel-body" });
    box.appendChild(body);
    grid.appendChild(box);  // in the page before drawing, so charts take the panel's size
    var drawn;
    if (view.kind === "error") {
      body.appendChild(el("div", { class: "panel-error", role: "alert" }, view.error));
      drawn = Promise.resolve();
    } else if (view.kind === "empty") {
      body.appendChild(el("div", { class: "panel-note" }, view.note || "No data"));
      drawn = Promise.resolve();
    } else if (view.kind === "stat") {
      var stat = el("div", { class: "stat" }, view.text);
      if (view.color) stat.style.color = COLORS[view.color] || view.color;
      body.appendChild(stat);
      drawn = Promise.resolve();
    } else if (view.kind === "table") {
      drawn = drawTable(body, view);
    } else {
      var chart = el("div", { class: "chart" });
      body.appendChild(chart);
      try {
        drawn = view.kind === "timeseries" ? drawTimeseries(chart, view)
              : view.kind === "pie" ? drawPie(chart, view) : drawBar(chart, view);
      } catch (e) {
        body.appendChild(el("div", { class: "panel-error", role: "alert" }, "cannot draw: " + e));
        drawn = Promise.resolve();
      }
    }
    return Promise.resolve(drawn).then(function () { box.setAttribute("data-drawn", "1"); });
  }

  app.appendChild(header());
  var grid = el("main", { class: "grid" });
  app.appendChild(grid);
  data.rows.forEach(function (row) {
    var title = el("div", { class: "row-title" }, row.title);
    title.style.gridRow = (row.y + 1) + " / span 1";
    grid.appendChild(title);
  });
  var pending = data.panels.map(panel);
  Promise.all(pending).then(function () { document.body.setAttribute("data-ready", "1"); });
})();
