// Controller of the live Gaussian-mixture explorer (igbook.live.mixture). Runs as the body of
// a Bokeh CustomJS at "document ready". Args: handles (data-space handles), star (theta* in the
// parameter plane), mirror, probe, arrows, field, fieldClipped, handleEll, flowsN, flowsE,
// dens, comps, marker, sigma, gridN, scale, flow, readout, cfg, name.
const L = window.igbookLive, M = L.mixture;
const lo = cfg.extent[0], hi = cfg.extent[1];
const clamp = (v, a, b) => Math.min(b, Math.max(a, v));
let target = [handles.data.x[0], handles.data.x[1]];
let probeAt = cfg.probe ? cfg.probe.slice() : null;
let fieldKey = "";
const timing = { last: 0, frames: [] };
// flows: computed in a worker when the page allows one (the frame does not wait for them),
// else synchronously; `flowsFor` is the request the drawn flows answer
const worker = L.flowWorker();
let flowSeq = 0, flowsFor = 0, flowBusy = false, flowPending = null;
function drawFlows(fl) {
  const paths = (P) => {
    const xs = [], ys = [];
    for (let i = 0; i < P[0].length; i++) { xs.push(P.map((q) => q[i][0])); ys.push(P.map((q) => q[i][1])); }
    return { xs: xs, ys: ys };
  };
  flowsN.data = paths(fl.natural);
  flowsE.data = paths(fl.euclidean);
}
function requestFlows(args) {
  const id = ++flowSeq;
  if (!worker) { drawFlows(M.flowPair.apply(null, args)); flowsFor = id; return; }
  if (flowBusy) { flowPending = { id: id, args: args }; return; }
  flowBusy = true;
  worker.postMessage({ id: id, args: args });
}
if (worker) {
  worker.onmessage = (e) => {
    flowBusy = false;
    if (flow.active && e.data.id > flowsFor) { drawFlows(e.data.paths); flowsFor = e.data.id; }
    if (flowPending) { const p = flowPending; flowPending = null; flowBusy = true; worker.postMessage(p); }
  };
}

function spacing() { return (hi - lo) / (gridN.value - 1); }

// the Fisher-ellipse field: depends on sigma, grid density and ellipse scale only
function drawField() {
  const s = sigma.value, n = gridN.value, sp = spacing();
  const key = s + "/" + n + "/" + scale.value;
  if (key === fieldKey) return;
  fieldKey = key;
  const lamFar = 0.5 / (s * s), eps = lamFar * (0.5 * scale.value * sp) ** 2, cap = 1.5 * sp;
  // one polyline per set, ellipses separated by NaN (a break in Bokeh's line glyph)
  const xs = [], ys = [], cxs = [], cys = [];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const a = lo + sp * j, b = lo + sp * i, F = M.fisher(a, b, s);
      const e = M.ellipse(a, b, F[0][0], F[0][1], F[1][1], eps, 32, cap);
      const X = e.clipped ? cxs : xs, Y = e.clipped ? cys : ys;
      if (X.length) { X.push(NaN); Y.push(NaN); }
      for (let k = 0; k < e.x.length; k++) { X.push(e.x[k]); Y.push(e.y[k]); }
    }
  }
  field.data = { x: new Float64Array(xs), y: new Float64Array(ys) };
  fieldClipped.data = { x: new Float64Array(cxs), y: new Float64Array(cys) };
}

function state() {
  const s = sigma.value, F = M.fisher(target[0], target[1], s), e = M.eigen(F);
  const out = {
    mu1: target[0], mu2: target[1], sigma: s, gridN: gridN.value, scale: scale.value,
    separation: Math.abs(target[0] - target[1]) / s, fisher: F,
    eigenvalues: e.values, condition: M.condition(F), probe: probeAt,
    loss: null, gradient: null, natural: null, angle: null, singular: false,
  };
  if (probeAt) Object.assign(out, (({ loss, gradient, natural, angle, singular }) =>
    ({ loss, gradient, natural, angle, singular }))(M.probe(target, s, probeAt, 0)));
  return out;
}

function update() {
  const t0 = performance.now();
  const s = sigma.value, sp = spacing();
  drawField();
  star.data = { x: [target[0]], y: [target[1]] };
  mirror.data = { x: [target[1]], y: [target[0]] };
  handles.data = { x: [target[0], target[1]], y: [0, 0], label: ["μ₁*", "μ₂*"] };
  const st = state();
  // the handle's own ellipse, four times the field's epsilon
  const lamFar = 0.5 / (s * s), eps = lamFar * (0.5 * scale.value * sp) ** 2;
  const F = st.fisher, he = M.ellipse(target[0], target[1], F[0][0], F[0][1], F[1][1], 4 * eps, 64, 6 * sp);
  handleEll.data = { x: he.x, y: he.y };
  // data space: the mixture and its components
  const x0 = Math.min(lo, target[0], target[1]) - 3.5 * s, x1 = Math.max(hi, target[0], target[1]) + 3.5 * s;
  const xs = [], p = [], c1 = [], c2 = [];
  for (let k = 0; k < 300; k++) {
    const x = x0 + (x1 - x0) * k / 299;
    const a = 0.5 * Math.exp(-0.5 * ((x - target[0]) / s) ** 2) / (s * Math.sqrt(2 * Math.PI));
    const b = 0.5 * Math.exp(-0.5 * ((x - target[1]) / s) ** 2) / (s * Math.sqrt(2 * Math.PI));
    xs.push(x); c1.push(a); c2.push(b); p.push(a + b);
  }
  dens.data = { x: xs, p: p, c1: c1, c2: c2 };
  // the spectrum panel: where this separation sits on the dimensionless curves
  const d = Math.max(st.separation, cfg.deltaMin);
  marker.data = { x: [d, d], y: [2 * s * s * st.eigenvalues[0], 2 * s * s * st.eigenvalues[1]] };
  // the probe: Euclidean and natural descent directions, drawn with equal length
  if (probeAt) {
    probe.data = { x: [probeAt[0]], y: [probeAt[1]] };
    const len = 1.5 * Math.max(sp, 0.25), seg = { x_start: [], y_start: [], x_end: [], y_end: [], color: [] };
    const add = (v, color) => {
      const n = Math.hypot(v[0], v[1]);
      if (!(n > 0) || !Number.isFinite(n)) return;
      seg.x_start.push(probeAt[0]); seg.y_start.push(probeAt[1]);
      seg.x_end.push(probeAt[0] - len * v[0] / n); seg.y_end.push(probeAt[1] - len * v[1] / n); seg.color.push(color);
    };
    if (st.gradient) add(st.gradient, cfg.colors.euclidean);
    if (st.natural) add(st.natural, cfg.colors.natural);
    arrows.data = seg;
  } else {
    probe.data = { x: [], y: [] };
    arrows.data = { x_start: [], y_start: [], x_end: [], y_end: [], color: [] };
  }
  // particle flows along both fields (igbook.mixtures.flow_pair with the explorer's settings)
  if (flow.active) {
    requestFlows([cfg.flowSeeds, target.slice(), s, cfg.flowSteps, cfg.flowDt, cfg.flowDt * 2 * s * s, 1e-3 * lamFar, 0.5 * sp]);
  } else {
    flowSeq++; flowsFor = flowSeq; flowPending = null;
    flowsN.data = { xs: [], ys: [] };
    flowsE.data = { xs: [], ys: [] };
  }
  const f = L.fmt;
  let probeRows = "<tr><td>probe</td><td>click the parameter plane to place it</td></tr>";
  if (probeAt) {
    probeRows = `<tr><td>probe (μ₁, μ₂)</td><td>(${f(probeAt[0], 3)}, ${f(probeAt[1], 3)})</td></tr>` +
      `<tr><td>KL(p* ‖ p<sub>probe</sub>)</td><td data-key="loss">${f(st.loss, 4)}</td></tr>` +
      `<tr><td>angle(gradient, natural gradient)</td><td data-key="angle">${st.singular ? "undefined: the Fisher is singular here" : f(st.angle, 4) + "°"}</td></tr>`;
  }
  readout.text = `<table class="igbook-live-readout">` +
    `<tr><td>θ* = (μ₁*, μ₂*)</td><td>(${f(target[0], 3)}, ${f(target[1], 3)}), σ = ${f(s, 3)}</td></tr>` +
    `<tr><td>separation |μ₁ − μ₂| / σ</td><td data-key="separation">${f(st.separation, 4)}</td></tr>` +
    `<tr><td>eigenvalues λ<sub>min</sub>, λ<sub>max</sub> of F(θ*)</td><td data-key="eigenvalues">${f(st.eigenvalues[0], 4)}, ${f(st.eigenvalues[1], 4)}</td></tr>` +
    `<tr><td>condition number κ</td><td data-key="condition">${f(st.condition, 4)}</td></tr>` + probeRows + `</table>`;
  timing.last = performance.now() - t0;
  timing.frames.push(timing.last);
  if (timing.frames.length > 500) timing.frames.shift();
  return st;
}

// which handle moved: the data-space handles or the star in the parameter plane
function sync(from) {
  if (from === "handles") {
    target = [clamp(handles.data.x[0], lo, hi), clamp(handles.data.x[1], lo, hi)];
  } else if (from === "star") {
    target = [clamp(star.data.x[0], lo, hi), clamp(star.data.y[0], lo, hi)];
  }
  return update();
}

const fig = {
  name: name, state: state, update: update, sync: sync, timing: timing,
  // true once the drawn flows answer the latest state (always true with the flows off)
  flowsCurrent: () => flowsFor === flowSeq,
  set(o) {
    if (o.mu1 !== undefined) target[0] = clamp(o.mu1, lo, hi);
    if (o.mu2 !== undefined) target[1] = clamp(o.mu2, lo, hi);
    if (o.sigma !== undefined) sigma.value = o.sigma;
    if (o.gridN !== undefined) gridN.value = o.gridN;
    if (o.scale !== undefined) scale.value = o.scale;
    if (o.flow !== undefined) flow.active = !!o.flow;
    if (o.probe !== undefined) probeAt = o.probe ? o.probe.slice() : null;
    return update();
  },
  tap(x, y) {
    if (x < lo || x > hi || y < lo || y > hi) return;
    // a click on the star is a grab, not a probe
    if (Math.hypot(x - target[0], y - target[1]) < 0.04 * (hi - lo)) return;
    probeAt = [x, y];
    update();
  },
};
handles.__igbook = fig;
L.register(fig);
L.followTheme(handles.document);
update();
