// Controller of the live Fisher-metric figure (igbook.live.gaussian). Runs as the body of a
// Bokeh CustomJS at "document ready"; args: pts, ell, klb, frb, geo, seg, dens, eps, readout,
// bounds, name.
const L = window.igbookLive, G = L.gaussian;
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
function state() {
  const d = pts.data, e = eps.value;
  const P = [d.x[0], d.y[0]], Q = [d.x[1], d.y[1]];
  const fr = G.fisherRao(P[0], P[1], Q[0], Q[1]);
  const klPQ = G.kl(P[0], P[1], Q[0], Q[1]), klQP = G.kl(Q[0], Q[1], P[0], P[1]);
  return { P: P, Q: Q, eps: e, fisherRao: fr, klPQ: klPQ, klQP: klQP,
           sqrt2klPQ: Math.sqrt(2 * klPQ), euclidean: Math.hypot(P[0] - Q[0], P[1] - Q[1]),
           fisherP: G.fisher(P[0], P[1]) };
}
function update() {
  const d = pts.data;
  // keep the points inside the drawn half-plane (sigma >= its lower bound)
  let moved = false;
  for (let i = 0; i < 2; i++) {
    const x = clamp(d.x[i], bounds[0], bounds[1]), y = clamp(d.y[i], bounds[2], bounds[3]);
    if (x !== d.x[i] || y !== d.y[i]) { d.x[i] = x; d.y[i] = y; moved = true; }
  }
  if (moved) pts.change.emit();
  const s = state(), P = s.P, Q = s.Q, e = s.eps;
  const el = G.ellipse(P[0], P[1], e, 121);
  ell.data = { x: el.x, y: el.y };
  const kb = G.klBall(P[0], P[1], e, 121);
  klb.data = { x: kb.x, y: kb.y };
  const fb = G.fisherRaoCircle(P[0], P[1], Math.sqrt(2 * e), 121);
  frb.data = { x: fb.x, y: fb.y };
  const g = G.geodesic(P[0], P[1], Q[0], Q[1], 101);
  geo.data = { x: g.x, y: g.y };
  seg.data = { x: [P[0], Q[0]], y: [P[1], Q[1]] };
  const xs = [], p = [], q = [];
  for (let k = 0; k < 241; k++) {
    const x = -6 + 12 * k / 240; xs.push(x);
    p.push(Math.exp(-0.5 * ((x - P[0]) / P[1]) ** 2) / (P[1] * Math.sqrt(2 * Math.PI)));
    q.push(Math.exp(-0.5 * ((x - Q[0]) / Q[1]) ** 2) / (Q[1] * Math.sqrt(2 * Math.PI)));
  }
  dens.data = { x: xs, p: p, q: q };
  const f = L.fmt;
  readout.text = `<table class="igbook-live-readout"><tr><td>P = N(${f(P[0], 3)}, ${f(P[1], 3)}²)</td>` +
    `<td>Q = N(${f(Q[0], 3)}, ${f(Q[1], 3)}²)</td></tr>` +
    `<tr><td>Fisher–Rao distance d(P, Q)</td><td data-key="fisherRao">${f(s.fisherRao, 5)}</td></tr>` +
    `<tr><td>√(2 KL(P‖Q))</td><td data-key="sqrt2klPQ">${f(s.sqrt2klPQ, 5)}</td></tr>` +
    `<tr><td>Euclidean distance in (μ, σ)</td><td data-key="euclidean">${f(s.euclidean, 5)}</td></tr></table>`;
  return s;
}
const fig = {
  name: name, state: state, update: update,
  set(o) {
    const d = pts.data;
    if (o.P) { d.x[0] = o.P[0]; d.y[0] = o.P[1]; }
    if (o.Q) { d.x[1] = o.Q[0]; d.y[1] = o.Q[1]; }
    if (o.eps !== undefined) eps.value = o.eps;
    pts.change.emit();
    return update();
  },
};
pts.__igbook = fig;
L.register(fig);
L.followTheme(pts.document);
update();
