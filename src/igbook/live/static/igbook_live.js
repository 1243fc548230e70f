// igbook live figures: the browser side.
//
// Ports of closed forms and quadratures of igbook (igbook.geometry, igbook.mixtures) to
// float64 JavaScript, the theme follower, and the registry of live figures on the page.
// tests/test_live.py proves every function here equal to igbook's at random states
// (1e-9 relative); nothing here is a model of its own.
//
// Loaded once per page by the first live figure's "document ready" callback (or by the site's
// script tag), it defines window.igbookLive.
(function (root) {
  "use strict";
  if (root.igbookLive && root.igbookLive.version === "1") return;
  // this file's own text: a Web Worker built from it runs the same functions off the main thread
  const SOURCE = (typeof document !== "undefined" && document.currentScript) ? document.currentScript.textContent : null;

  const SQRT2 = Math.SQRT2;

  // ---------------------------------------------------------------- small linear algebra
  // eigen-decomposition of a symmetric 2x2 [[a, b], [b, c]]: ascending eigenvalues, clamped
  // at 0 (igbook.mixtures.fisher_eigen), unit eigenvectors as columns [[v00, v01], [v10, v11]].
  function eig2(a, b, c) {
    const m = 0.5 * (a + c);
    const r = Math.hypot(0.5 * (a - c), b);
    const hi = m + r;
    const det = a * c - b * b;
    let lo = hi > 0 ? det / hi : m - r;  // det / lambda_max: no cancellation
    if (!(lo > 0)) lo = 0;
    // eigenvector of lambda_max: from the row with the larger entries
    let vx, vy;
    if (Math.abs(b) < 1e-300 * Math.max(Math.abs(a), Math.abs(c), 1e-300)) {
      if (a >= c) { vx = 1; vy = 0; } else { vx = 0; vy = 1; }
    } else if (Math.abs(a - hi) > Math.abs(c - hi)) {
      vx = b; vy = hi - a;
    } else {
      vx = hi - c; vy = b;
    }
    const n = Math.hypot(vx, vy);
    vx /= n; vy /= n;
    // columns: [v_min, v_max], v_min = v_max rotated by +90 degrees
    return { values: [lo, Math.max(hi, 0)], vectors: [[-vy, vx], [vx, vy]] };
  }

  function solve2(a, b, c, g0, g1) {
    const det = a * c - b * b;
    return [(c * g0 - b * g1) / det, (a * g1 - b * g0) / det];
  }

  // angle in degrees between 2-vectors, atan2 form (igbook.mixtures.gradient_angle)
  function angle2(u0, u1, v0, v1) {
    const cross = u0 * v1 - u1 * v0;
    return Math.atan2(Math.abs(cross), u0 * v0 + u1 * v1) * 180 / Math.PI;
  }

  // points on {c + d : d^T F d = eps} (igbook.geometry.ellipse_points, igbook.mixtures.ellipse_outlines)
  function ellipse(cx, cy, a, b, c, eps, num, cap) {
    const e = eig2(a, b, c);
    const tiny = 2.2250738585072014e-308;
    let s0 = Math.sqrt(eps / Math.max(e.values[0], tiny));
    let s1 = Math.sqrt(eps / Math.max(e.values[1], tiny));
    let clipped = false;
    if (cap !== undefined && cap !== null) {
      clipped = s0 > cap || s1 > cap;
      s0 = Math.min(s0, cap); s1 = Math.min(s1, cap);
    }
    const V = e.vectors, xs = new Array(num), ys = new Array(num);
    for (let k = 0; k < num; k++) {
      const t = num > 1 ? 2 * Math.PI * k / (num - 1) : 0;
      const p0 = Math.cos(t) * s0, p1 = Math.sin(t) * s1;
      xs[k] = cx + p0 * V[0][0] + p1 * V[0][1];
      ys[k] = cy + p0 * V[1][0] + p1 * V[1][1];
    }
    return { x: xs, y: ys, clipped: clipped };
  }

  // ---------------------------------------------------------------- the Gaussian half-plane
  const gaussian = {
    // Fisher metric in (mu, sigma): diag(1, 2) / sigma^2
    fisher(mu, sigma) { const s2 = sigma * sigma; return [[1 / s2, 0], [0, 2 / s2]]; },
    // KL(N(mu1, s1^2) || N(mu2, s2^2))
    kl(mu1, s1, mu2, s2) {
      const d = mu1 - mu2;
      return Math.log(s2 / s1) + (s1 * s1 + d * d) / (2 * s2 * s2) - 0.5;
    },
    // igbook.geometry.fisher_rao_gaussian (arcsinh form)
    fisherRao(mu1, s1, mu2, s2) {
      const chord = Math.hypot((mu1 - mu2) / SQRT2, s1 - s2);
      return 2 * SQRT2 * Math.asinh(chord / (2 * Math.sqrt(s1 * s2)));
    },
    // the Fisher ellipse {d : 1/2 d^T F d = eps} (the Fisher-metric chapter's convention)
    ellipse(mu, sigma, eps, num) {
      const s2 = sigma * sigma;
      return ellipse(mu, sigma, 1 / s2, 0, 2 / s2, 2 * eps, num || 100);
    },
    // the Fisher-Rao ball {q : d(p, q) = r}: in (mu/sqrt2, sigma) a Euclidean circle with
    // centre (mu/sqrt2, sigma cosh(r/sqrt2)) and radius sigma sinh(r/sqrt2)
    fisherRaoCircle(mu, sigma, r, num) {
      const rho = r / SQRT2, cy = sigma * Math.cosh(rho), R = sigma * Math.sinh(rho);
      const xs = [], ys = [];
      for (let k = 0; k < num; k++) {
        const t = 2 * Math.PI * k / (num - 1);
        xs.push(mu + SQRT2 * R * Math.cos(t)); ys.push(cy + R * Math.sin(t));
      }
      return { x: xs, y: ys };
    },
    // the KL ball {q : KL(p || q) = eps}: along each ray from p, the first q with KL = eps
    // (bisection to machine precision; KL grows along every ray from p in (mu, sigma))
    klBall(mu, sigma, eps, num) {
      const xs = [], ys = [];
      for (let k = 0; k < num; k++) {
        const t = 2 * Math.PI * k / (num - 1), dx = Math.cos(t), dy = Math.sin(t);
        let lo = 0, hi = sigma;  // grow hi until KL > eps or sigma would leave the half-plane
        const rmax = dy < 0 ? sigma / -dy : Infinity;
        while (hi < rmax && gaussian.kl(mu, sigma, mu + hi * dx, sigma + hi * dy) < eps) hi *= 2;
        if (hi >= rmax) hi = rmax * (1 - 1e-12);
        for (let i = 0; i < 80; i++) {
          const m = 0.5 * (lo + hi);
          if (gaussian.kl(mu, sigma, mu + m * dx, sigma + m * dy) < eps) lo = m; else hi = m;
        }
        xs.push(mu + lo * dx); ys.push(sigma + lo * dy);
      }
      return { x: xs, y: ys };
    },
    // igbook.geometry.gaussian_geodesic: uniform in arc length
    geodesic(mu1, s1, mu2, s2, num) {
      const u1 = mu1 / SQRT2, u2 = mu2 / SQRT2, xs = [], ys = [];
      if (Math.abs(u1 - u2) < 1e-14 * Math.max(1, Math.abs(u1))) {
        for (let k = 0; k < num; k++) {
          const t = k / (num - 1);
          xs.push(mu1); ys.push(s1 * Math.exp(t * Math.log(s2 / s1)));
        }
        return { x: xs, y: ys };
      }
      const c = (u2 * u2 + s2 * s2 - u1 * u1 - s1 * s1) / (2 * (u2 - u1));
      const r = Math.hypot(u1 - c, s1);
      const l1 = Math.log(Math.tan(Math.atan2(s1, u1 - c) / 2));
      const l2 = Math.log(Math.tan(Math.atan2(s2, u2 - c) / 2));
      for (let k = 0; k < num; k++) {
        const t = k / (num - 1), phi = 2 * Math.atan(Math.exp(l1 + t * (l2 - l1)));
        xs.push((c + r * Math.cos(phi)) * SQRT2); ys.push(r * Math.sin(phi));
      }
      return { x: xs, y: ys };
    },
  };

  // ---------------------------------------------------------------- the Gaussian mixture
  // trapezoid rule w_j ~ exp(-z_j^2 / 2) on |z| <= half_width, renormalized
  // (igbook.mixtures.trapezoid_rule)
  const ruleCache = new Map();
  function trapezoid(h, halfWidth) {
    halfWidth = halfWidth || 8.6;
    const key = h + "/" + halfWidth;
    if (ruleCache.has(key)) return ruleCache.get(key);
    const n = Math.round(halfWidth / h), z = new Float64Array(2 * n + 1), w = new Float64Array(2 * n + 1);
    let s = 0;
    for (let j = -n; j <= n; j++) { z[j + n] = j * h; w[j + n] = Math.exp(-0.5 * z[j + n] * z[j + n]); }
    // torch sums a float64 vector pairwise; a compensated sum agrees with it to rounding
    let comp = 0;
    for (let j = 0; j < w.length; j++) { const y = w[j] - comp, t = s + y; comp = (t - s) - y; s = t; }
    for (let j = 0; j < w.length; j++) w[j] /= s;
    const rule = { z: z, w: w };
    ruleCache.set(key, rule);
    return rule;
  }
  const sigmoid = (x) => 1 / (1 + Math.exp(-x));
  const LOG_SQRT_2PI = 0.5 * Math.log(2 * Math.PI);
  const logNormal = (x, mu, s) => -0.5 * ((x - mu) / s) ** 2 - Math.log(s) - LOG_SQRT_2PI;
  function logaddexp(a, b) { const m = Math.max(a, b); return m + Math.log(Math.exp(a - m) + Math.exp(b - m)); }
  const logMix = (x, m1, m2, s) => logaddexp(logNormal(x, m1, s), logNormal(x, m2, s)) - Math.LN2;

  // the quadrature step of igbook.mixtures._adaptive_rule for separations up to dmax
  function adaptiveH(dmax) {
    let h = Math.min(0.1, 0.6 / Math.max(dmax, 1e-12));
    return Math.max(h, 0.01);
  }

  const mixture = {
    trapezoid: trapezoid,
    // Fisher information at (mu1, mu2) by the standardized score form (igbook.mixtures.fisher)
    fisher(m1, m2, sigma) {
      const R = trapezoid(0.1), z = R.z, w = R.w, n = z.length;
      const delta = (m1 - m2) / sigma, half = 0.5 * delta * delta;
      let f11 = 0, f12 = 0, f22 = 0;
      for (let j = 0; j < n; j++) {
        const wz = 0.5 * w[j], zj = z[j], u = delta * zj;
        const ra = sigmoid(u + half), rb = sigmoid(u - half);
        const a1 = ra * zj, b1 = (1 - ra) * (zj + delta);
        const a2 = rb * (zj - delta), b2 = (1 - rb) * zj;
        f11 += wz * (a1 * a1 + a2 * a2);
        f12 += wz * (a1 * b1 + a2 * b2);
        f22 += wz * (b1 * b1 + b2 * b2);
      }
      const is2 = 1 / (sigma * sigma);
      return [[f11 * is2, f12 * is2], [f12 * is2, f22 * is2]];
    },
    eigen(F) { return eig2(F[0][0], F[0][1], F[1][1]); },
    // kappa = lambda_max / lambda_min, Infinity on the singular line (igbook.mixtures.condition_number)
    condition(F) {
      const e = eig2(F[0][0], F[0][1], F[1][1]);
      return e.values[0] > 0 ? e.values[1] / e.values[0] : Infinity;
    },
    ellipse: ellipse,
    density(x, m1, m2, s) { return Math.exp(logMix(x, m1, m2, s)); },
    // KL(p_target || p_theta) and its gradient (igbook.mixtures.KLToTarget), for the points
    // `thetas` (array of [mu1, mu2]) evaluated together as igbook evaluates a batch
    klToTarget(target, sigma, thetas, gradientOnly) {
      let dmax = Math.abs(target[0] - target[1]) / sigma;
      for (const t of thetas) dmax = Math.max(dmax, Math.abs(t[0] - t[1]) / sigma);
      const h = adaptiveH(dmax), R = h === 0.1 ? trapezoid(0.1) : trapezoid(h);
      const z = R.z, w = R.w, n = z.length, s2 = sigma * sigma;
      const out = [];
      for (const t of thetas) {
        let v = 0, g0 = 0, g1 = 0;
        for (let k = 0; k < 2; k++) {
          const mk = target[k];
          for (let j = 0; j < n; j++) {
            const x = mk + sigma * z[j], wj = 0.5 * w[j];
            if (!gradientOnly) v += wj * (logMix(x, target[0], target[1], sigma) - logMix(x, t[0], t[1], sigma));
            const r1 = sigmoid((t[0] - t[1]) * (x - 0.5 * (t[0] + t[1])) / s2);
            g0 -= wj * r1 * (x - t[0]) / s2;
            g1 -= wj * (1 - r1) * (x - t[1]) / s2;
          }
        }
        out.push({ value: gradientOnly ? null : v, gradient: [g0, g1] });
      }
      return out;
    },
    // Euclidean gradient, natural gradient (F + lambda I)^{-1} g and their angle at a probe;
    // null natural gradient where the undamped Fisher is singular (igbook.mixtures.natural_gradient_field)
    probe(target, sigma, theta, damping) {
      const lg = mixture.klToTarget(target, sigma, [theta])[0];
      const F = mixture.fisher(theta[0], theta[1], sigma), e = mixture.eigen(F);
      const g = lg.gradient, out = { loss: lg.value, gradient: g, natural: null, angle: null, singular: false };
      if (!(damping > 0) && e.values[0] <= 1e-12 * e.values[1]) { out.singular = true; return out; }
      const lam = damping > 0 ? damping : 0;
      out.natural = solve2(F[0][0] + lam, F[0][1], F[1][1] + lam, g[0], g[1]);
      if (Math.hypot(g[0], g[1]) > 1e-12) out.angle = angle2(g[0], g[1], out.natural[0], out.natural[1]);
      return out;
    },
    // both particle flows integrated together (igbook.mixtures.flow_pair): one gradient
    // evaluation of the union per step, Fisher at the natural set, damped, clipped to maxStep
    flowPair(particles, target, sigma, steps, dtNatural, dtEuclidean, damping, maxStep) {
      let nat = particles.map((p) => p.slice()), euc = particles.map((p) => p.slice());
      const k = nat.length, pathsN = [nat], pathsE = [euc];
      for (let it = 0; it < steps; it++) {
        const lg = mixture.klToTarget(target, sigma, nat.concat(euc), true);
        const nn = [], ee = [];
        for (let i = 0; i < 2 * k; i++) {
          const g = lg[i].gradient, p = i < k ? nat[i] : euc[i - k];
          let d;
          if (i < k) {
            const F = mixture.fisher(p[0], p[1], sigma);
            const v = solve2(F[0][0] + damping, F[0][1], F[1][1] + damping, g[0], g[1]);
            d = [-dtNatural * v[0], -dtNatural * v[1]];
          } else {
            d = [-dtEuclidean * g[0], -dtEuclidean * g[1]];
          }
          const nrm = Math.hypot(d[0], d[1]), f = Math.min(maxStep / Math.max(nrm, 1e-300), 1);
          (i < k ? nn : ee).push([p[0] + d[0] * f, p[1] + d[1] * f]);
        }
        nat = nn; euc = ee; pathsN.push(nat); pathsE.push(euc);
      }
      return { natural: pathsN, euclidean: pathsE };
    },
  };

  // ---------------------------------------------------------------- off the main thread
  // A worker that runs mixture.flowPair, so that dragging stays at frame rate while the flows
  // (36 particles x 60 steps of quadrature) follow; null where workers are unavailable.
  function flowWorker() {
    if (!SOURCE || typeof Worker === "undefined" || typeof Blob === "undefined") return null;
    const code = SOURCE + "\nself.onmessage = (e) => { const a = e.data;" +
      " self.postMessage({ id: a.id, paths: self.igbookLive.mixture.flowPair.apply(null, a.args) }); };";
    try {
      const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
      return new Worker(url);
    } catch (err) {
      return null;
    }
  }

  // ---------------------------------------------------------------- theme
  // Bokeh draws on a canvas, so page CSS cannot recolour its text: follow the page's theme
  // (pydata-sphinx-theme's <html data-theme>, JupyterLab's <body data-jp-theme-light>).
  function isDark() {
    const de = document.documentElement, b = document.body;
    if (de && de.dataset && de.dataset.theme) return de.dataset.theme === "dark";
    if (b && b.dataset && b.dataset.jpThemeLight !== undefined) return b.dataset.jpThemeLight === "false";
    return !!(root.matchMedia && root.matchMedia("(prefers-color-scheme: dark)").matches);
  }
  const THEMES = {
    light: { text: "#222222", axis: "#555555", grid: "#e3e3e3", legend: "#ffffff" },
    dark: { text: "#e6e6e6", axis: "#b0b0b0", grid: "#3a3a3a", legend: "#1e1e1e" },
  };
  function applyTheme(doc) {
    const t = THEMES[isDark() ? "dark" : "light"];
    for (const m of doc.all_models) {
      const type = m.type || (m.constructor && m.constructor.__name__) || "";
      if (type === "Figure" || type === "Plot") {
        m.setv({ background_fill_alpha: 0, border_fill_alpha: 0, outline_line_color: t.axis });
      } else if (/Axis$/.test(type)) {
        m.setv({ axis_label_text_color: t.text, major_label_text_color: t.text, axis_line_color: t.axis,
                 major_tick_line_color: t.axis, minor_tick_line_color: t.axis });
      } else if (type === "Grid") {
        m.setv({ grid_line_color: t.grid });
      } else if (type === "Title") {
        m.setv({ text_color: t.text });
      } else if (type === "Legend") {
        m.setv({ background_fill_color: t.legend, background_fill_alpha: 0.85, label_text_color: t.text,
                 border_line_color: t.grid });
      } else if (type === "Label" && m.tags && m.tags.indexOf("igbook-text") >= 0) {
        m.setv({ text_color: t.text });
      }
    }
  }
  const themedDocs = new Set();
  function followTheme(doc) {
    applyTheme(doc);
    if (themedDocs.has(doc)) return;
    themedDocs.add(doc);
    const again = () => { for (const d of themedDocs) applyTheme(d); };
    const obs = new MutationObserver(again);
    obs.observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme", "data-mode"] });
    if (document.body) obs.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light"] });
  }

  // ---------------------------------------------------------------- registry
  // Every live figure registers itself: tests and exercises find it by name, read its numbers
  // and set its state.
  const figures = [];
  function register(fig) {
    const old = figures.findIndex((f) => f.name === fig.name);  // a re-run cell replaces its figure
    if (old >= 0) figures.splice(old, 1);
    figures.push(fig);
    return fig;
  }
  const get = (name) => figures.find((f) => f.name === name) || null;
  function fmt(x, digits) {
    if (x === Infinity) return "\u221e";
    if (x === null || x === undefined || !Number.isFinite(x)) return "undefined";
    return Number(x).toPrecision(digits || 4).replace(/\.?0+(e|$)/, "$1");
  }

  root.igbookLive = {
    version: "1",
    eig2: eig2, solve2: solve2, angle2: angle2, ellipse: ellipse,
    gaussian: gaussian, mixture: mixture, flowWorker: flowWorker,
    isDark: isDark, followTheme: followTheme, applyTheme: applyTheme,
    figures: figures, register: register, get: get, fmt: fmt,
  };
})(typeof window !== "undefined" ? window : globalThis);
