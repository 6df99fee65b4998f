// Feature map (#/map/<hook_name>): the UMAP of decoder directions of every dictionary at one hook
// point, co-embedded; coloured by dictionary or by log10 firing density; hover shows the label and a
// click opens the feature. Uses WebGL (scattergl) when the browser has it, SVG otherwise.

import { api } from '../api.js';
import { h, fmt, loading } from '../dom.js';
import { featureHash, mapHash } from '../router.js';
import { plot, hasWebGL, plotText, COLOURS } from '../plots.js';

const SYMBOLS = ['circle', 'diamond', 'square', 'triangle-up', 'cross', 'x'];

const colourQuery = (colourBy) => ({ color: colourBy === 'density' ? 'density' : '' });

/** Page head: title, hook point select, colour toggle. */
function mapHead(hooks, hook, colourBy, ctx) {
  const hookSelect = h('select', { 'aria-label': 'Hook point', on: { change: (e) => ctx.navigate(mapHash(e.target.value, colourQuery(colourBy))) } },
    hooks.map((x) => h('option', { value: x, selected: x === hook }, x)));
  const toggle = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Colour by' },
    ['dictionary', 'density'].map((c) => h('a', {
      href: mapHash(hook, colourQuery(c)),
      class: c === colourBy ? 'active' : '', 'aria-pressed': c === colourBy ? 'true' : 'false',
    }, c === 'density' ? 'colour: log density' : 'colour: dictionary')));
  return h('div', { class: 'page-head' }, h('h1', {}, 'Feature map'), hookSelect, toggle);
}

function groupByDictionary(points) {
  const byDict = new Map();
  for (const p of points) {
    if (!byDict.has(p.dictionary_id)) byDict.set(p.dictionary_id, []);
    byDict.get(p.dictionary_id).push(p);
  }
  return byDict;
}

/** Marker fields shared by both colourings: position, hover text, the feature a click opens. */
function pointFields(pts, prefixes) {
  const hover = (p) => `<b>${plotText(prefixes.get(p.dictionary_id))}${p.index}</b> ${plotText(p.dictionary_id)}<br>${plotText(p.label.slice(0, 80))}<br>density ${fmt(p.density, 3)}`;
  return {
    x: pts.map((p) => p.x), y: pts.map((p) => p.y),
    customdata: pts.map((p) => [p.dictionary_id, p.index]),
    text: pts.map(hover), hovertemplate: '%{text}<extra></extra>',
  };
}

function markerSize(n) {
  if (n > 20000) return 3;
  return n > 3000 ? 4 : 6;
}

/** One trace per dictionary, one colour each. */
function tracesByDictionary(byDict, type, size, prefixes) {
  return [...byDict.entries()].map(([id, pts], i) => ({
    type, mode: 'markers', name: `${id} (${pts.length})`,
    ...pointFields(pts, prefixes),
    marker: { size, color: COLOURS[i % COLOURS.length], opacity: 0.75 },
  }));
}

/** One trace coloured by log10 density (never-firing features at the floor), shape per dictionary. */
function traceByDensity(points, byDict, type, size, prefixes) {
  const densities = points.map((p) => (p.density > 0 ? Math.log10(p.density) : null));
  const finite = densities.filter((d) => d !== null);
  const floor = finite.length ? finite.reduce((a, b) => Math.min(a, b), Infinity) - 0.5 : -8; // no spread: maps can hold 100k+ points
  const dictIds = [...byDict.keys()];
  return [{
    type, mode: 'markers', name: 'features',
    ...pointFields(points, prefixes),
    marker: {
      size, opacity: 0.8,
      color: densities.map((d) => (d === null ? floor : d)),
      colorscale: 'Viridis', showscale: true,
      colorbar: { title: { text: 'log₁₀ density' }, thickness: 12 },
      symbol: points.map((p) => SYMBOLS[dictIds.indexOf(p.dictionary_id) % SYMBOLS.length]),
    },
  }];
}

function infoText(nPoints, nDicts, colourBy, type) {
  return `${fmt(nPoints)} features from ${nDicts} dictionar${nDicts === 1 ? 'y' : 'ies'} co-embedded` +
    `${colourBy === 'density' && nDicts > 1 ? ' (marker shape = dictionary)' : ''}. Hover for labels, click to open a feature, drag to zoom, double-click to reset.` +
    (type === 'scatter' ? ' (WebGL unavailable: drawing with SVG.)' : '');
}

function mapLayout(colourBy) {
  return {
    height: Math.max(420, Math.min(760, window.innerHeight - 190)),
    xaxis: { showgrid: false, zeroline: false, showticklabels: false, title: { text: 'UMAP 1' } },
    yaxis: { showgrid: false, zeroline: false, showticklabels: false, title: { text: 'UMAP 2' }, scaleanchor: 'x' },
    showlegend: colourBy === 'dictionary',
    margin: { l: 24, r: 12, t: 36, b: 40 },
    dragmode: 'zoom',
  };
}

/** Plot the points in plotEl (info gets the caption); a click on a point opens its feature. */
async function drawMap(plotEl, info, points, colourBy, prefixes, ctx) {
  const type = hasWebGL() ? 'scattergl' : 'scatter';
  const byDict = groupByDictionary(points);
  const size = markerSize(points.length);
  const traces = colourBy === 'dictionary' ? tracesByDictionary(byDict, type, size, prefixes) : traceByDensity(points, byDict, type, size, prefixes);
  info.textContent = infoText(points.length, byDict.size, colourBy, type);
  await plot(plotEl, traces, mapLayout(colourBy));
  if (!ctx.alive()) return;
  plotEl.on('plotly_click', (ev) => {
    const pt = ev.points && ev.points[0];
    if (pt && pt.customdata) ctx.navigate(featureHash(pt.customdata[0], pt.customdata[1]));
  });
  ctx.onCleanup(() => { if (window.Plotly) window.Plotly.purge(plotEl); });
}

export async function render(root, route, ctx) {
  const dicts = await api.dictionaries();
  if (!ctx.alive()) return;
  const hooks = [...new Set(dicts.map((d) => d.hook_name))];
  if (!hooks.length) { root.append(h('h1', {}, 'Map'), h('p', { class: 'empty' }, 'No dictionary is ready in this store yet.')); return; }
  const hook = route.params.hook;
  if (!hook) { ctx.redirect(mapHash(hooks[0])); return; }
  const colourBy = route.query.get('color') === 'density' ? 'density' : 'dictionary';
  const prefixes = new Map(dicts.map((d) => [d.id, d.display_prefix || '']));
  const info = h('p', { class: 'muted small' });
  const plotEl = h('div', { class: 'plot map-plot' });
  root.append(mapHead(hooks, hook, colourBy, ctx), info, plotEl);
  plotEl.append(loading('Loading UMAP coordinates…'));

  const data = await api.map(hook);
  if (!ctx.alive()) return;
  plotEl.replaceChildren();
  if (!data.points.length) {
    plotEl.replaceWith(h('p', { class: 'empty' }, `No UMAP coordinates for ${hook} (the precompute may have skipped the map).`));
    return;
  }
  await drawMap(plotEl, info, data.points, colourBy, prefixes, ctx);
}
