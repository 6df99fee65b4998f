// Home: the atlas at a glance — the model, its hook points, every dictionary's metrics side by side,
// and the firing-density histograms of the dictionaries at each hook point overlaid.

import { api } from '../api.js';
import { h, fmt, fmtPct, loading, errorBox } from '../dom.js';
import { featuresHash, mapHash } from '../router.js';
import { plot, histogramLine, COLOURS } from '../plots.js';

// Metrics shown first, in this order, with their display names and formats.
const METRICS = [
  ['l0', 'L0', (v) => fmt(v, 2), 'Mean number of active features per token'],
  ['explained_variance', 'Expl. var.', (v) => fmtPct(v), 'Fraction of activation variance the reconstruction explains'],
  ['ce_recovered', 'CE recovered', (v) => fmtPct(v), 'Share of the cross-entropy loss recovered when splicing the reconstruction in (vs zero ablation)'],
  ['dead', 'Dead', null, 'Features that never fired on the evaluation tokens'],
  ['dense', 'Dense', null, 'Features firing on more than a large share of tokens'],
  ['mse', 'MSE', (v) => fmt(v, 3), 'Mean squared reconstruction error'],
  ['ce_clean', 'CE clean', (v) => fmt(v, 3), 'Model loss without intervention'],
  ['ce_spliced', 'CE spliced', (v) => fmt(v, 3), 'Model loss with the reconstruction spliced in'],
  ['kl', 'KL', (v) => fmt(v, 3), 'KL divergence of spliced vs clean next-token distributions'],
];

function formatCount(v, dsae) {
  if (v === null || v === undefined) return '—';
  if (Number.isInteger(v)) return `${fmt(v)}${dsae ? ` (${fmtPct(v / dsae)})` : ''}`;
  if (v >= 0 && v <= 1) return fmtPct(v);
  return fmt(v);
}

/** Hover text of a dictionary row: its hyperparameters and provenance. */
function describe(d) {
  const part = (title, obj) => {
    const entries = Object.entries(obj || {}).filter(([, v]) => v !== null && typeof v !== 'object');
    return entries.length ? `${title}: ${entries.map(([k, v]) => `${k}=${v}`).join(', ')}` : '';
  };
  return [`d_in ${d.d_in}`, part('hyperparameters', d.hyperparameters), part('provenance', d.provenance)].filter(Boolean).join('\n');
}

function metricsTable(dicts) {
  const present = METRICS.filter(([key]) => dicts.some((d) => d.metrics && d.metrics[key] !== undefined));
  const head = h('tr', {},
    h('th', {}, 'Dictionary'), h('th', {}, 'Kind'), h('th', {}, 'Architecture'),
    h('th', { class: 'num' }, 'd_sae'),
    present.map(([, label, , tip]) => h('th', { class: 'num', title: tip }, label)),
    h('th', {}, ''));
  const rows = dicts.map((d) => h('tr', {},
    h('td', { title: describe(d) }, h('a', { href: featuresHash(d.id), class: 'dict-link' }, d.id),
      d.display_prefix ? h('span', { class: 'muted' }, ` ${d.display_prefix}`) : null),
    h('td', {}, h('span', { class: `badge kind-${d.kind}` }, d.kind)),
    h('td', {}, d.architecture),
    h('td', { class: 'num' }, fmt(d.d_sae)),
    present.map(([key, , format]) => {
      const v = d.metrics ? d.metrics[key] : undefined;
      return h('td', { class: 'num' }, format ? format(v) : formatCount(v, d.d_sae));
    }),
    h('td', {}, h('a', { href: featuresHash(d.id) }, 'features'))));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'data metrics' }, h('thead', {}, head), h('tbody', {}, rows)));
}

function modelCard(model) {
  const facts = [
    ['source', model.source], ['layers', model.n_layers], ['d_model', model.d_model],
    ['vocabulary', model.d_vocab], ['context', model.n_ctx],
  ];
  const metrics = Object.entries(model.metrics || {}).filter(([, v]) => typeof v === 'number' || typeof v === 'string');
  return h('section', { class: 'card model-card' },
    h('h2', {}, 'Model ', h('code', {}, model.id)),
    h('dl', { class: 'stats' },
      facts.map(([k, v]) => h('div', { class: 'stat' }, h('dt', {}, k), h('dd', {}, typeof v === 'number' ? fmt(v) : String(v ?? '—')))),
      metrics.map(([k, v]) => h('div', { class: 'stat' }, h('dt', {}, k.replace(/_/g, ' ')), h('dd', {}, typeof v === 'number' ? fmt(v, 4) : v)))),
    model.location ? h('p', { class: 'muted small' }, 'location: ', h('code', {}, model.location)) : null);
}

async function densityPlot(el, dicts) {
  const hists = await Promise.all(dicts.map((d) => api.densityHistogram(d.id).catch((err) => ({ err }))));
  const traces = [];
  const errors = [];
  hists.forEach((hist, i) => {
    if (hist.err) errors.push(`${dicts[i].id}: ${hist.err.message}`);
    else traces.push(histogramLine(hist, { name: dicts[i].id, colour: COLOURS[i % COLOURS.length] }));
  });
  if (errors.length) el.before(h('p', { class: 'error small' }, `Density histogram unavailable — ${errors.join('; ')}`));
  if (!traces.length) { el.remove(); return; }
  await plot(el, traces, {
    height: 280,
    margin: { t: 36 },
    xaxis: { title: { text: 'log₁₀ firing density' }, zeroline: false },
    yaxis: { title: { text: 'features' } },
    showlegend: true,
  });
}

export async function render(root, route, ctx) {
  root.append(h('h1', {}, 'Atlas'), loading('Loading the atlas…'));
  const [models, dicts] = await Promise.all([api.models(), api.dictionaries()]);
  if (!ctx.alive()) return;
  root.lastChild.remove();

  if (!models.length) root.append(h('p', { class: 'empty' }, 'This store has no model yet. Build an atlas with the saescope command, then reload.'));
  for (const model of models) root.append(modelCard(model));
  if (!dicts.length) {
    root.append(h('p', { class: 'empty' }, 'No dictionary is ready in this store yet (a precompute may still be running).'));
    return;
  }

  const hooks = new Map();
  for (const d of dicts) {
    if (!hooks.has(d.hook_name)) hooks.set(d.hook_name, []);
    hooks.get(d.hook_name).push(d);
  }
  root.append(h('p', { class: 'muted' },
    `${dicts.length} dictionaries at ${hooks.size} hook point${hooks.size === 1 ? '' : 's'}. `,
    'Open a dictionary to browse its features, or ', h('a', { href: '#/analyse' }, 'analyse a text'),
    ' / ', h('a', { href: '#/steer' }, 'steer the model'), '.'));

  for (const [hook, group] of hooks) {
    const plotEl = h('div', { class: 'plot density-plot' });
    const section = h('section', { class: 'card hook-card' },
      h('div', { class: 'card-head' },
        h('h2', {}, 'Hook point ', h('code', {}, hook)),
        h('a', { href: mapHash(hook), class: 'button' }, 'Feature map')),
      metricsTable(group),
      h('h3', {}, 'Firing density of all features'),
      plotEl);
    root.append(section);
    densityPlot(plotEl, group).catch((err) => { if (ctx.alive()) plotEl.replaceWith(errorBox(err, 'Density histogram')); });
  }
}
