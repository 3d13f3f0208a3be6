// Time-series charts drawn with uPlot from server-rendered JSON. No inline scripts: the CSP forbids them.
//
// Markup (server):
//   <figure class="chart" data-chart>
//     <script type="application/json" class="chart-data">{"kind": "stacked"|"lines", "unit": "count"|"ms"|"percent",
//       "tz": "Europe/Berlin", "step": "minute"|"hour"|"day", "x": [unix seconds...],
//       "series": [{"label": "...", "values": [number|null, ...]}, ...]}</script>
//     <div class="chart-canvas" role="img" aria-label="..."></div>
//   </figure>
//
// The hover legend is visual sugar: the server renders a table view of the same numbers next to each chart.
(function () {
  "use strict";

  var HEIGHT = 240;
  var MIN_WIDTH = 280;
  var RESIZE_DEBOUNCE_MS = 120;
  var SELECTOR = "figure[data-chart]";
  var DASH = "—";

  // Okabe–Ito, in case app.css has not defined the variables.
  var FALLBACK_SERIES = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999"];

  var MIN = 60, HOUR = 3600, DAY = 86400;
  var STEP_SECONDS = { minute: MIN, hour: HOUR, day: DAY };
  // Tick increments (seconds) for the x axis; never finer than the bucket size.
  var TIME_INCRS = [
    MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN,
    HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR, 6 * HOUR, 8 * HOUR, 12 * HOUR,
    DAY, 2 * DAY, 3 * DAY, 4 * DAY, 5 * DAY, 7 * DAY, 10 * DAY, 15 * DAY,
    30 * DAY, 60 * DAY, 90 * DAY, 180 * DAY, 365 * DAY
  ];
  // Whole numbers only on count axes (no "0.5 requests").
  var INT_INCRS = [];
  (function () {
    for (var exp = 0; exp <= 15; exp++) {
      var base = Math.pow(10, exp);
      INT_INCRS.push(base, 2 * base, 5 * base);
    }
  })();

  // figure element -> {uplot, observer, timer}
  var registry = typeof WeakMap === "function" ? new WeakMap() : null;
  var live = [];  // records of rendered figures, for re-rendering on theme changes

  // ---------------------------------------------------------------- formatting

  function roundTo(value, decimals) {
    var factor = Math.pow(10, decimals);
    return Math.round(value * factor) / factor;
  }

  function trimNumber(value, decimals) {
    // 1.20 -> "1.2", 3.00 -> "3"; never exponent notation at these magnitudes.
    var text = roundTo(value, decimals).toFixed(decimals);
    if (text.indexOf(".") >= 0) text = text.replace(/0+$/, "").replace(/\.$/, "");
    return text === "-0" ? "0" : text;
  }

  var COMPACT_UNITS = [[1, ""], [1e3, "k"], [1e6, "M"], [1e9, "B"], [1e12, "T"]];

  function formatCount(value, decimals) {
    var abs = Math.abs(value);
    var i = 0;
    while (i < COMPACT_UNITS.length - 1 && abs >= COMPACT_UNITS[i + 1][0]) i++;
    var scaled = roundTo(value / COMPACT_UNITS[i][0], decimals);
    // 999 950 rounds to "1000k": move up a unit.
    if (Math.abs(scaled) >= 1000 && i < COMPACT_UNITS.length - 1) {
      i++;
      scaled = roundTo(value / COMPACT_UNITS[i][0], decimals);
    }
    return trimNumber(scaled, decimals) + COMPACT_UNITS[i][1];
  }

  function formatMs(value, decimals) {
    var abs = Math.abs(value);
    if (abs >= 1000 || roundTo(abs, 0) >= 1000) return trimNumber(value / 1000, decimals) + " s";
    return trimNumber(value, abs < 10 ? 1 : 0) + " ms";
  }

  function formatPercent(value, decimals) {
    return trimNumber(value, decimals) + "%";
  }

  // decimals: legend values are a little terser than axis ticks (which must stay distinct: 1.25k vs 1.5k).
  function formatterFor(unit, decimals) {
    var fmt = unit === "ms" ? formatMs : unit === "percent" ? formatPercent : formatCount;
    return function (value) {
      if (value == null || typeof value !== "number" || !isFinite(value)) return DASH;
      return fmt(value, decimals);
    };
  }

  // ---------------------------------------------------------------- time

  function validTimeZone(tz) {
    if (typeof tz !== "string" || !tz) return "UTC";
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: tz }).format(0);
      return tz;
    } catch (e) {
      return "UTC";
    }
  }

  function tzDateFn(tz) {
    return function (ts) { return uPlot.tzDate(new Date(ts * 1e3), tz); };
  }

  function dayKey(date) {
    return date.getFullYear() * 10000 + date.getMonth() * 100 + date.getDate();
  }

  function xAxisValues(step, toDate) {
    var time = uPlot.fmtDate("{HH}:{mm}");
    var day = uPlot.fmtDate("{MMM} {D}");
    return function (u, splits) {
      var previousDay = null;
      return splits.map(function (ts, i) {
        if (ts == null) return null;
        var date = toDate(ts);
        if (step === "day") return day(date);
        var key = dayKey(date);
        var label = time(date);
        // Hours: the date under the first tick and under each midnight. Minutes: only when the day changes.
        var showDay = step === "hour" ? (i === 0 || key !== previousDay) : (previousDay !== null && key !== previousDay);
        previousDay = key;
        return showDay ? label + "\n" + day(date) : label;
      });
    };
  }

  function legendTime(step, toDate, tz) {
    var stamp = uPlot.fmtDate(step === "day" ? "{MMM} {D}, {YYYY}" : "{MMM} {D} {HH}:{mm}");
    return function (u, ts) {
      if (ts == null) return DASH;
      return stamp(toDate(ts)) + " (" + tz + ")";
    };
  }

  // ---------------------------------------------------------------- colours

  var colourCtx = null;

  function rootStyle() {
    return window.getComputedStyle(document.documentElement);
  }

  function cssVar(style, name, fallback) {
    var value = style.getPropertyValue(name);
    value = value ? value.trim() : "";
    return value || fallback;
  }

  // "#0072b2" / "rgb(…)" / any CSS colour -> "rgba(r, g, b, alpha)"; the colour itself if it cannot be parsed.
  function withAlpha(colour, alpha) {
    if (!colourCtx) colourCtx = document.createElement("canvas").getContext("2d");
    if (!colourCtx) return colour;
    colourCtx.fillStyle = "#000000";
    colourCtx.fillStyle = colour;
    var normal = String(colourCtx.fillStyle);
    var m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(normal);
    if (m) {
      return "rgba(" + parseInt(m[1], 16) + ", " + parseInt(m[2], 16) + ", " + parseInt(m[3], 16) + ", " + alpha + ")";
    }
    m = /^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)(?:[\s,/]+([\d.]+))?\s*\)$/i.exec(normal);
    if (m) {
      var a = m[4] == null ? 1 : parseFloat(m[4]);
      return "rgba(" + m[1] + ", " + m[2] + ", " + m[3] + ", " + roundTo(a * alpha, 3) + ")";
    }
    return colour;
  }

  function isDark() {
    var explicit = document.documentElement.getAttribute("data-theme");
    if (explicit === "dark" || explicit === "light") return explicit === "dark";
    return !!(window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches);
  }

  function palette() {
    var style = rootStyle();
    var dark = isDark();
    var series = [];
    for (var i = 0; i < 8; i++) series.push(cssVar(style, "--gh-series-" + (i + 1), FALLBACK_SERIES[i]));
    var family = cssVar(style, "--pico-font-family", "system-ui, -apple-system, \"Segoe UI\", Roboto, sans-serif");
    return {
      series: series,
      text: cssVar(style, "--pico-muted-color", dark ? "#8891a4" : "#646b79"),
      grid: cssVar(style, "--pico-muted-border-color", dark ? "#2a3140" : "#e7eaf0"),
      background: cssVar(style, "--pico-background-color", dark ? "#13161e" : "#ffffff"),
      fillAlpha: dark ? 0.55 : 0.35,
      font: "12px " + family
    };
  }

  // ---------------------------------------------------------------- data

  function parseChart(figure) {
    // The data comes in the figure's data-chart-json attribute (htmx, configured not to process script
    // tags, drops <script> elements from swapped content), or in a <script type="application/json">.
    var script = figure.querySelector("script.chart-data");
    var text = figure.getAttribute("data-chart-json") || (script ? script.textContent : "");
    if (!text) return { error: "Chart data unavailable." };
    var spec;
    try {
      spec = JSON.parse(text);
    } catch (e) {
      return { error: "Chart data unavailable." };
    }
    if (!spec || typeof spec !== "object" || !Array.isArray(spec.x)) return { error: "Chart data unavailable." };
    var x = [];
    for (var i = 0; i < spec.x.length; i++) {
      var ts = spec.x[i];
      if (typeof ts !== "number" || !isFinite(ts)) return { error: "Chart data unavailable." };
      x.push(ts);
    }
    if (!x.length) return { error: "No data for this period." };
    var series = [];
    var anyValue = false;
    (Array.isArray(spec.series) ? spec.series : []).forEach(function (s, index) {
      if (!s || typeof s !== "object") return;
      var raw = Array.isArray(s.values) ? s.values : [];
      var values = new Array(x.length);
      for (var j = 0; j < x.length; j++) {
        var v = raw[j];
        values[j] = typeof v === "number" && isFinite(v) ? v : null;
        if (values[j] !== null) anyValue = true;
      }
      series.push({ label: s.label != null && s.label !== "" ? String(s.label) : "Series " + (index + 1), values: values });
    });
    if (!series.length || !anyValue) return { error: "No data for this period." };
    var unit = spec.unit === "ms" || spec.unit === "percent" ? spec.unit : "count";
    return {
      kind: spec.kind === "stacked" ? "stacked" : "lines",
      unit: unit,
      tz: validTimeZone(spec.tz),
      step: STEP_SECONDS[spec.step] ? spec.step : "hour",
      scale: spec.scale === "log" && spec.kind !== "stacked" ? "log" : "linear",
      x: x,
      series: series
    };
  }

  // Cumulative sums bottom-up (series 0 at the bottom); hidden series add nothing and keep their raw values.
  // Returns uPlot data plus the bands that fill each visible series down to the visible one below it.
  function stack(chart, isShown) {
    var n = chart.x.length;
    var running = new Array(n);
    for (var i = 0; i < n; i++) running[i] = 0;
    var data = [chart.x];
    var bands = [];
    var below = null;  // uPlot index of the nearest visible series below
    chart.series.forEach(function (s, k) {
      var idx = k + 1;
      if (!isShown(idx)) {
        data.push(s.values);
        return;
      }
      var cumulative = new Array(n);
      for (var j = 0; j < n; j++) {
        running[j] += s.values[j] == null ? 0 : s.values[j];
        cumulative[j] = running[j];
      }
      data.push(cumulative);
      if (below !== null) bands.push({ series: [idx, below] });
      below = idx;
    });
    return { data: data, bands: bands };
  }

  // ---------------------------------------------------------------- uPlot options

  function autoAxisSize(u, values, axisIdx, cycleNum) {
    var axis = u.axes[axisIdx];
    if (cycleNum > 1 && axis._size) return axis._size;
    var size = axis.ticks.size + axis.gap + 4;
    var longest = "";
    (values || []).forEach(function (v) {
      if (v != null && String(v).length > longest.length) longest = String(v);
    });
    if (longest) {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / (uPlot.pxRatio || window.devicePixelRatio || 1);
    }
    return Math.ceil(Math.max(size, 32));
  }

  function yRange(unit, kind) {
    if (unit === "ms" && kind !== "stacked") return null;  // uPlot's default (soft floor at 0)
    return function (u, min, max) {
      if (max == null || !isFinite(max) || max <= 0) return [0, unit === "percent" ? 100 : 1];
      var top = uPlot.rangeNum(0, max, 0.1, true)[1];
      if (unit === "percent" && max <= 100) top = Math.min(top, 100);
      return [0, top];
    };
  }

  function buildOptions(chart, colours, width) {
    var toDate = tzDateFn(chart.tz);
    var stepSec = STEP_SECONDS[chart.step];
    var axisFormat = formatterFor(chart.unit, 2);
    var legendFormat = formatterFor(chart.unit, chart.unit === "percent" ? 2 : 1);
    var stacked = chart.kind === "stacked";

    var series = [{
      label: "Time",
      value: legendTime(chart.step, toDate, chart.tz)
    }];
    chart.series.forEach(function (s, k) {
      var colour = colours.series[k % 8];
      var opts = {
        label: s.label,
        stroke: colour,
        width: stacked ? 1.5 : 2,
        spanGaps: false
      };
      if (stacked) {
        opts.fill = withAlpha(colour, colours.fillAlpha);
        opts.points = { show: false };
        // The plotted values are cumulative; the legend shows each series' own number.
        opts.value = function (u, v, seriesIdx, dataIdx) {
          return dataIdx == null ? DASH : legendFormat(s.values[dataIdx]);
        };
      } else {
        opts.points = { fill: colours.background };  // hollow dots on the page background, both schemes
        opts.value = function (u, v) { return legendFormat(v); };
      }
      series.push(opts);
    });

    var grid = { stroke: colours.grid, width: 1 };
    var ticks = { stroke: colours.grid, width: 1, size: 4 };
    var yScale = {};
    var range = yRange(chart.unit, chart.kind);
    if (chart.scale === "log") {
      // Latencies of RPC calls (ms) and LLM completions (s) share a chart: a log axis keeps both legible.
      yScale = { distr: 3, log: 10 };
    } else if (range) {
      yScale.range = range;
    }

    var opts = {
      width: width,
      height: HEIGHT,
      tzDate: toDate,
      series: series,
      scales: {
        x: {
          time: true,
          range: function (u, min, max) {
            // One bucket: centre it (uPlot would otherwise span 1000 days for second timestamps).
            var first = chart.x[0], last = chart.x[chart.x.length - 1];
            if (first === last) return [first - stepSec, last + stepSec];
            return [min, max];
          }
        },
        y: yScale
      },
      axes: [
        {
          stroke: colours.text,
          font: colours.font,
          grid: grid,
          ticks: ticks,
          incrs: TIME_INCRS.filter(function (incr) { return incr >= stepSec; }),
          values: xAxisValues(chart.step, toDate),
          space: chart.step === "day" ? 56 : 60
        },
        {
          stroke: colours.text,
          font: colours.font,
          grid: grid,
          ticks: ticks,
          incrs: chart.unit === "count" && chart.scale !== "log" ? INT_INCRS : undefined,
          values: function (u, splits) {
            return splits.map(function (v) { return v == null ? null : axisFormat(v); });
          },
          size: autoAxisSize,
          space: 36
        }
      ],
      legend: { live: true },
      cursor: {
        points: { size: 7 },
        drag: { x: true, y: false, setScale: true }
      }
    };
    if (opts.axes[1].incrs === undefined) delete opts.axes[1].incrs;

    if (stacked) {
      var stackedData = stack(chart, function () { return true; });
      opts.bands = stackedData.bands;
      opts.cursor.dataIdx = function (u, seriesIdx, closestIdx) {
        // No cursor point on a bucket where this series has no data (it still counts as 0 in the stack).
        if (seriesIdx === 0 || closestIdx == null) return closestIdx;
        return chart.series[seriesIdx - 1].values[closestIdx] == null ? null : closestIdx;
      };
      opts.hooks = {
        // Restack when a series is toggled in the legend so the remaining bands sit on each other.
        setSeries: [function (u) {
          var restacked = stack(chart, function (idx) { return u.series[idx].show; });
          u.delBand(null);
          restacked.bands.forEach(function (band) { u.addBand(band); });
          u.setData(restacked.data);
        }]
      };
      return { opts: opts, data: stackedData.data };
    }
    var data = [chart.x];
    chart.series.forEach(function (s) { data.push(s.values); });
    return { opts: opts, data: data };
  }

  // ---------------------------------------------------------------- rendering

  function canvasOf(figure) {
    var canvas = figure.querySelector(".chart-canvas");
    if (!canvas) {
      canvas = document.createElement("div");
      canvas.className = "chart-canvas";
      var caption = figure.querySelector("figcaption");
      figure.insertBefore(canvas, caption);
    }
    return canvas;
  }

  function widthOf(canvas) {
    return Math.max(MIN_WIDTH, Math.floor(canvas.clientWidth || 0));
  }

  function clear(canvas) {
    while (canvas.firstChild) canvas.removeChild(canvas.firstChild);
  }

  function showMessage(canvas, text) {
    clear(canvas);
    var p = document.createElement("p");
    p.className = "chart-empty";
    p.textContent = text;
    canvas.appendChild(p);
  }

  function recordOf(figure) {
    if (registry) return registry.get(figure) || null;
    for (var i = 0; i < live.length; i++) if (live[i].figure === figure) return live[i];
    return null;
  }

  function destroy(record) {
    if (record.timer) clearTimeout(record.timer);
    if (record.observer) record.observer.disconnect();
    if (record.uplot) record.uplot.destroy();
    record.uplot = null;
    record.observer = null;
    record.timer = null;
    var i = live.indexOf(record);
    if (i >= 0) live.splice(i, 1);
    if (registry) registry.delete(record.figure);
  }

  function observeWidth(record, canvas) {
    var lastWidth = canvas.clientWidth;
    function resize() {
      record.timer = null;
      if (!record.uplot) return;
      if (!record.figure.isConnected) { destroy(record); return; }
      var width = widthOf(canvas);
      if (width !== record.uplot.width) record.uplot.setSize({ width: width, height: HEIGHT });
    }
    function schedule() {
      if (record.timer) clearTimeout(record.timer);
      record.timer = setTimeout(resize, RESIZE_DEBOUNCE_MS);
    }
    if (typeof ResizeObserver === "function") {
      record.observer = new ResizeObserver(function () {
        var width = canvas.clientWidth;
        if (width === lastWidth) return;  // the legend changing height is not our business
        lastWidth = width;
        schedule();
      });
      record.observer.observe(canvas);
    } else {
      window.addEventListener("resize", schedule);
      record.observer = { disconnect: function () { window.removeEventListener("resize", schedule); } };
    }
  }

  function renderFigure(figure, colours) {
    var old = recordOf(figure);
    if (old) destroy(old);
    var canvas = canvasOf(figure);
    var record = { figure: figure, uplot: null, observer: null, timer: null };
    if (registry) registry.set(figure, record);
    live.push(record);
    figure.setAttribute("data-chart-rendered", "");

    var chart = parseChart(figure);
    if (chart.error || typeof uPlot !== "function") {
      showMessage(canvas, chart.error || "Chart unavailable.");
      figure.setAttribute("data-chart-rendered", "empty");
      return record;
    }
    try {
      clear(canvas);
      var built = buildOptions(chart, colours, widthOf(canvas));
      record.uplot = new uPlot(built.opts, built.data, canvas);
      observeWidth(record, canvas);
    } catch (e) {
      if (record.uplot) { try { record.uplot.destroy(); } catch (ignored) { /* already gone */ } }
      record.uplot = null;
      showMessage(canvas, "Chart unavailable.");
      figure.setAttribute("data-chart-rendered", "empty");
      if (window.console && console.warn) console.warn("Chart failed to render", e);
    }
    return record;
  }

  function figuresIn(root) {
    root = root && root.querySelectorAll ? root : document;
    var found = Array.prototype.slice.call(root.querySelectorAll(SELECTOR));
    if (root.matches && root.matches(SELECTOR)) found.unshift(root);
    return found;
  }

  function prune() {
    live.slice().forEach(function (record) {
      if (!record.figure.isConnected) destroy(record);
    });
  }

  // Renders the charts under root that have not been rendered yet (force: re-render those too).
  function render(root, force) {
    prune();
    var colours = null;
    figuresIn(root).forEach(function (figure) {
      if (!force && recordOf(figure)) return;
      colours = colours || palette();
      renderFigure(figure, colours);
    });
  }

  // Destroys and redraws every chart on the page (colours changed).
  function renderAll() {
    render(document, true);
  }

  document.addEventListener("gatehouse:bind", function (event) {
    render(event.detail || document);
  });
  document.addEventListener("gatehouse:theme", function () {
    renderAll();
  });
  // htmx restores history snapshots without a swap; snapshots hold dead copies of the charts.
  document.addEventListener("htmx:historyRestore", function () {
    render(document);
  });
  if (window.matchMedia) {
    var scheme = window.matchMedia("(prefers-color-scheme: dark)");
    if (scheme.addEventListener) scheme.addEventListener("change", renderAll);
    else if (scheme.addListener) scheme.addListener(renderAll);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { render(document); });
  } else {
    render(document);
  }

  window.GatehouseCharts = {
    render: function (root) { render(root || document); },
    renderAll: renderAll
  };
})();
