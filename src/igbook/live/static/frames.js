// Controller of a precomputed live figure (igbook.live.frames). Runs as the body of a Bokeh
// CustomJS at "document ready". Args: sources, store, sliders, labels, sizes, reads, readout, name.
const L = window.igbookLive;
function index() {
  let k = 0;
  for (let i = 0; i < sliders.length; i++) k = k * sizes[i] + Math.round(sliders[i].value);
  return k;
}
function controlsText() {
  return sliders.map((s, i) => `${labels[i]} = <b>${s.tags[0].texts[Math.round(s.value)]}</b>`).join(", ");
}
function state() {
  const k = index(), out = { frame: k, controls: sliders.map((s) => s.tags[0].values[Math.round(s.value)]), series: {}, readouts: {} };
  for (const key in sources) out.series[key] = { x: Array.from(sources[key].data.x), y: Array.from(sources[key].data.y) };
  for (const r of reads) out.readouts[r.key] = r.values[k];
  return out;
}
function update() {
  const k = index();
  const pick = (a) => a[a.length === 1 ? 0 : k];  // arrays equal in every frame are stored once
  for (const key in sources) sources[key].data = { x: pick(store[key].x), y: pick(store[key].y) };
  let rows = `<tr><td colspan="2">${controlsText()}</td></tr>`;
  for (const r of reads) rows += `<tr><td>${r.label}</td><td data-key="${r.key}">${r.text[k]}</td></tr>`;
  readout.text = `<table class="igbook-live-readout">${rows}</table>`;
  return state();
}
const fig = {
  name: name, state: state, update: update,
  set(o) {
    if (o.index) o.index.forEach((v, i) => { sliders[i].value = v; });
    return update();
  },
  controls: () => sliders.map((s) => ({ start: s.start, end: s.end })),
};
sliders[0].__igbook = fig;
L.register(fig);
L.followTheme(sliders[0].document);
update();
