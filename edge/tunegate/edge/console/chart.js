// Loss and token-accuracy charts as inline SVG, drawn at the width of their container.
// Training and validation lines differ by stroke (solid, dashed) and marker, not only by
// colour, and every chart has a text summary and its numbers in a table.

const NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  const unit = [1, 2, 2.5, 5, 10].find((m) => m * power >= raw) || 10;
  return unit * power;
}

// Tick values from lo to hi, each with its label (as many decimals as the step needs).
function ticks(lo, hi, count) {
  if (hi <= lo) return [[lo, String(lo)]];
  const step = niceStep(hi - lo, count);
  const power = Math.floor(Math.log10(step));
  const decimals = Math.max(0, -power + ((step / 10 ** power) % 1 ? 1 : 0));
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push([v, v.toFixed(decimals)]);
  return out;
}

function fmt(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3);
}

const MARKERS = {
  circle: (x, y) => svg("circle", { cx: x, cy: y, r: 3 }),
  square: (x, y) => svg("rect", { x: x - 3, y: y - 3, width: 6, height: 6 }),
};

// One chart: `series` = [{ name, points: [[step, value], …], kind: "train" | "valid" }].
export function lineChart({ id, title, series, width, yFloor, yCeil }) {
  const drawn = series.filter((s) => s.points.length);
  const height = 220;
  const pad = { left: 52, right: 24, top: 12, bottom: 36 };
  const xs = drawn.flatMap((s) => s.points.map((p) => p[0]));
  const ys = drawn.flatMap((s) => s.points.map((p) => p[1]));
  const xLo = Math.min(...xs);
  const xHi = Math.max(...xs, xLo + 1);
  let yLo = yFloor ?? Math.min(...ys);
  let yHi = yCeil ?? Math.max(...ys);
  if (yHi - yLo < 1e-9) {
    yLo -= 0.5;
    yHi += 0.5;
  }
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const X = (x) => pad.left + ((x - xLo) / (xHi - xLo)) * plotW;
  const Y = (y) => pad.top + (1 - (y - yLo) / (yHi - yLo)) * plotH;

  const grid = svg("g", { class: "grid" });
  for (const [t, text] of ticks(yLo, yHi, 4)) {
    grid.append(
      svg("line", { x1: pad.left, x2: width - pad.right, y1: Y(t), y2: Y(t) }),
      svg("text", { x: pad.left - 6, y: Y(t), "text-anchor": "end", "dominant-baseline": "middle" }, text),
    );
  }
  for (const [t, text] of ticks(xLo, xHi, Math.max(2, Math.floor(plotW / 70)))) {
    if (Number.isInteger(t)) grid.append(svg("text", { x: X(t), y: height - pad.bottom + 16, "text-anchor": "middle" }, text));
  }
  grid.append(svg("text", { x: pad.left + plotW / 2, y: height - 4, "text-anchor": "middle", class: "axis-title" }, "step"));

  const lines = svg("g", {});
  for (const s of drawn) {
    const points = [...s.points].sort((a, b) => a[0] - b[0]);
    const group = svg("g", { class: `series series-${s.kind}` });
    group.append(svg("polyline", { points: points.map(([x, y]) => `${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join(" ") }));
    // Markers where points are few enough to tell apart (and always for validation, which is sparse).
    if (s.kind === "valid" || points.length <= 40) {
      for (const [x, y] of points) group.append(MARKERS[s.kind === "valid" ? "square" : "circle"](X(x), Y(y)));
    }
    lines.append(group);
  }

  const summary = drawn
    .map((s) => {
      const p = [...s.points].sort((a, b) => a[0] - b[0]);
      const [x0, y0] = p[0];
      const [x1, y1] = p[p.length - 1];
      return `${s.name}: ${fmt(y0)} at step ${x0}, ${fmt(y1)} at step ${x1}`;
    })
    .join("; ");
  const chart = svg(
    "svg",
    { id, class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title}. ${summary}.` },
    svg("title", {}, title),
    grid,
    lines,
  );
  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const s of drawn) {
    const li = document.createElement("li");
    const sample = svg("svg", { width: 28, height: 10, "aria-hidden": "true", class: `series series-${s.kind}` });
    sample.append(svg("line", { x1: 0, x2: 28, y1: 5, y2: 5 }), MARKERS[s.kind === "valid" ? "square" : "circle"](14, 5));
    li.append(sample, ` ${s.name} (${s.kind === "valid" ? "dashed, squares" : "solid, circles"})`);
    legend.append(li);
  }
  const figure = document.createElement("figure");
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  figure.append(caption, chart, legend);
  return figure;
}

// The metrics rows by step ({ train_loss, valid_loss, train_accuracy, valid_accuracy }) as a
// loss chart, a token-accuracy chart and a table of the numbers.
export function metricsView(rows, width) {
  const steps = [...rows.keys()].sort((a, b) => a - b);
  const pick = (key) => steps.filter((s) => Number.isFinite(rows.get(s)[key])).map((s) => [s, rows.get(s)[key]]);
  const wrap = document.createElement("div");
  wrap.className = "charts";
  const loss = [
    { name: "Training loss", points: pick("train_loss"), kind: "train" },
    { name: "Validation loss", points: pick("valid_loss"), kind: "valid" },
  ];
  const accuracy = [
    { name: "Training token accuracy", points: pick("train_accuracy"), kind: "train" },
    { name: "Validation token accuracy", points: pick("valid_accuracy"), kind: "valid" },
  ];
  if (loss.some((s) => s.points.length)) wrap.append(lineChart({ id: "loss-chart", title: "Loss per step", series: loss, width, yFloor: 0 }));
  if (accuracy.some((s) => s.points.length)) {
    wrap.append(lineChart({ id: "accuracy-chart", title: "Token accuracy per step", series: accuracy, width, yFloor: 0, yCeil: 1 }));
  }
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = `The numbers (${steps.length} steps)`;
  const table = document.createElement("table");
  table.innerHTML = "<caption>Metrics per step</caption><thead><tr><th scope=col>Step</th><th scope=col>Training loss</th><th scope=col>Validation loss</th><th scope=col>Training accuracy</th><th scope=col>Validation accuracy</th></tr></thead>";
  const body = document.createElement("tbody");
  for (const s of steps) {
    const r = rows.get(s);
    const tr = document.createElement("tr");
    for (const v of [s, r.train_loss, r.valid_loss, r.train_accuracy, r.valid_accuracy]) {
      const td = document.createElement("td");
      td.textContent = Number.isFinite(v) ? (Number.isInteger(v) ? String(v) : v.toFixed(4)) : "—";
      tr.append(td);
    }
    body.append(tr);
  }
  table.append(body);
  const scroll = document.createElement("div");
  scroll.className = "table-wrap";
  scroll.append(table);
  details.append(summary, scroll);
  wrap.append(details);
  return wrap;
}
