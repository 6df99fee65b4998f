// Interpretability comparison (#/scores/<hook_name>?explainer=E): the dictionaries of one hook point
// side by side, as in the sparse-coding post — mean simulation scores with 95% confidence intervals for
// top-and-random, top-only and random-only scoring (one bar chart each), detection and fuzzing
// balanced accuracy, a table with n / NaN / failed counts, score vs max cosine similarity with the
// other dictionaries, and a search over labels and explanations of every dictionary.

import { api } from '../api.js';
import { h, fmt, loading, errorBox, debounce } from '../dom.js';
import { buildHash, featureHash } from '../router.js';
import { plot, plotText, COLOURS } from '../plots.js';

const SIMULATION = [
  ['top_and_random', 'Top and random'],
  ['top', 'Top only'],
  ['random', 'Random only'],
];

const scoresHash = (hook, query = {}) => buildHash(['scores', hook], query);

/** The summary of (scorer, variant) in a dictionary's run by `explainer`, or null. */
function summaryOf(d, explainer, scorer, variant) {
  const run = d.runs.find((r) => r.explainer === explainer);
  return run ? run.summary.find((s) => s.scorer === scorer && s.variant === variant) || null : null;
}

function barTrace(dicts, explainer, scorer, variant) {
  const rows = dicts.map((d) => [d, summaryOf(d, explainer, scorer, variant)]).filter(([, s]) => s && s.mean !== null);
  return {
    type: 'bar',
    x: rows.map(([d]) => d.dictionary_id),
    y: rows.map(([, s]) => s.mean),
    error_y: {
      type: 'data', symmetric: false, visible: true,
      array: rows.map(([, s]) => (s.ci_high === null ? 0 : s.ci_high - s.mean)),
      arrayminus: rows.map(([, s]) => (s.ci_low === null ? 0 : s.mean - s.ci_low)),
    },
    marker: { color: rows.map(([d]) => COLOURS[dicts.indexOf(d) % COLOURS.length]) },
    hovertext: rows.map(([d, s]) => `${plotText(d.dictionary_id)}<br>mean ${fmt(s.mean)} [${fmt(s.ci_low)}, ${fmt(s.ci_high)}]<br>n ${s.n} · NaN ${s.n_nan} · failed ${s.n_failed}`),
    hovertemplate: '%{hovertext}<extra></extra>',
  };
}

function barChart(el, dicts, explainer, scorer, variant, title) {
  return plot(el, [barTrace(dicts, explainer, scorer, variant)], {
    height: 300, title: { text: title, font: { size: 13 } }, showlegend: false,
    yaxis: { title: { text: scorer === 'simulation' ? 'mean correlation' : 'balanced accuracy' }, zeroline: true },
    margin: { l: 56, r: 12, t: 40, b: 90 },
  });
}

function summaryTable(dicts, explainer) {
  const rows = [];
  for (const d of dicts) {
    const run = d.runs.find((r) => r.explainer === explainer);
    for (const s of (run ? run.summary : [])) rows.push([d, s]);
  }
  if (!rows.length) return h('p', { class: 'empty' }, `No dictionary at this hook point has scores from ${explainer}.`);
  return h('table', { class: 'data compact scores-table' },
    h('thead', {}, h('tr', {}, ['Dictionary', 'Kind', 'Scorer', 'Variant', 'n', 'Mean', '95% CI', 'NaN', 'Failed', 'Dead']
      .map((t) => h('th', {}, t)))),
    h('tbody', {}, rows.map(([d, s]) => h('tr', { 'data-dictionary': d.dictionary_id },
      h('td', {}, d.dictionary_id), h('td', {}, d.kind), h('td', { title: s.version }, s.scorer), h('td', {}, s.variant),
      h('td', { class: 'num' }, fmt(s.n)), h('td', { class: 'num' }, fmt(s.mean)),
      h('td', { class: 'num' }, s.ci_low === null ? '—' : `[${fmt(s.ci_low)}, ${fmt(s.ci_high)}]`),
      h('td', { class: 'num' }, fmt(s.n_nan)), h('td', { class: 'num' }, fmt(s.n_failed)),
      h('td', { class: 'num' }, fmt(s.n_dead ?? 0))))));
}

async function scatter(el, dicts, ctx) {
  const traces = dicts.filter((d) => d.points.index.length).map((d, i) => {
    const keep = d.points.max_cosine.map((c, j) => (c === null ? -1 : j)).filter((j) => j >= 0);
    return {
      type: 'scatter', mode: 'markers', name: d.dictionary_id,
      x: keep.map((j) => d.points.max_cosine[j]), y: keep.map((j) => d.points.score[j]),
      customdata: keep.map((j) => [d.dictionary_id, d.points.index[j]]),
      marker: { size: 4, opacity: 0.6, color: COLOURS[i % COLOURS.length] },
      hovertemplate: `${plotText(d.dictionary_id)} #%{customdata[1]}<br>max cosine %{x:.3f}<br>score %{y:.3f}<extra></extra>`,
    };
  }).filter((t) => t.x.length);
  if (!traces.length) { el.replaceWith(h('p', { class: 'empty' }, 'No scored feature has a match in another dictionary.')); return; }
  await plot(el, traces, {
    height: 380, title: { text: 'Score vs max cosine similarity with another dictionary', font: { size: 13 } },
    xaxis: { title: { text: 'max cosine similarity' } }, yaxis: { title: { text: 'simulation score (top and random)' } },
  });
  if (!ctx.alive()) return;
  el.on('plotly_click', (ev) => {
    const pt = ev.points && ev.points[0];
    if (pt && pt.customdata) ctx.navigate(featureHash(pt.customdata[0], pt.customdata[1]));
  });
  ctx.onCleanup(() => { if (window.Plotly) window.Plotly.purge(el); });
}

function searchBox(ctx) {
  const results = h('div', { class: 'search-results' });
  let seq = 0;
  const run = debounce(async (q) => {
    const mine = ++seq;
    if (!q.trim()) { results.replaceChildren(); return; }
    try {
      const found = await api.search(q.trim());
      if (mine !== seq || !ctx.alive()) return;
      results.replaceChildren(found.items.length
        ? h('table', { class: 'data compact search-table' },
          h('thead', {}, h('tr', {}, ['Feature', 'Dictionary', 'Hook point', 'Label', 'Explanation', 'Score'].map((t) => h('th', {}, t)))),
          h('tbody', {}, found.items.map((x) => h('tr', {},
            h('td', {}, h('a', { href: featureHash(x.dictionary_id, x.index) }, x.name)), h('td', {}, x.dictionary_id),
            h('td', {}, x.hook_name), h('td', {}, x.label), h('td', { class: 'wide' }, x.explanation),
            h('td', { class: 'num' }, fmt(x.score))))))
        : h('p', { class: 'empty' }, `Nothing matches “${q}”.`),
      found.total > found.items.length ? h('p', { class: 'muted small' }, `${found.items.length} of ${found.total} shown, best score first.`) : null);
    } catch (err) {
      if (mine === seq && ctx.alive()) results.replaceChildren(errorBox(err, 'Search'));
    }
  }, 250);
  const input = h('input', { type: 'search', class: 'search', placeholder: 'Search labels and explanations of every dictionary',
    'aria-label': 'Search every dictionary', on: { input: (e) => run(e.target.value) } });
  return h('section', { class: 'search-all' }, h('h2', {}, 'Search every dictionary'), input, results);
}

export async function render(root, route, ctx) {
  const dicts = await api.dictionaries();
  if (!ctx.alive()) return;
  const hooks = [...new Set(dicts.map((d) => d.hook_name))];
  if (!hooks.length) { root.append(h('h1', {}, 'Scores'), h('p', { class: 'empty' }, 'No dictionary is ready in this store yet.')); return; }
  const hook = route.params.hook;
  if (!hook) { ctx.redirect(scoresHash(hooks[0])); return; }
  const body = h('div', {}, loading('Loading scores…'));
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Interpretability'),
    h('select', { 'aria-label': 'Hook point', on: { change: (e) => ctx.navigate(scoresHash(e.target.value)) } },
      hooks.map((x) => h('option', { value: x, selected: x === hook }, x)))), body);
  const data = await api.interpretability(hook);
  if (!ctx.alive()) return;
  const explainers = [...new Set(data.dictionaries.flatMap((d) => d.runs.map((r) => r.explainer)))];
  body.replaceChildren();
  if (!explainers.length) {
    body.append(h('p', { class: 'empty' }, 'No explanations yet: run ', h('code', {}, 'saescope explain --atlas DIR'), '.'), searchBox(ctx));
    return;
  }
  const explainer = explainers.includes(route.query.get('explainer')) ? route.query.get('explainer') : explainers[0];
  const choose = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Explainer' }, explainers.map((e) => h('a', {
    href: scoresHash(hook, { explainer: e }), class: e === explainer ? 'active' : '', 'aria-pressed': e === explainer ? 'true' : 'false',
  }, e)));
  const charts = SIMULATION.map(() => h('div', { class: 'plot score-bars' }));
  const judges = ['detection', 'fuzzing'].filter((s) => data.dictionaries.some((d) => summaryOf(d, explainer, s, 'balanced_accuracy')));
  const judgeCharts = judges.map(() => h('div', { class: 'plot judge-bars' }));
  const scatterEl = h('div', { class: 'plot score-scatter' });
  body.append(choose,
    h('p', { class: 'muted small' }, 'Means over features with a defined score; bars show 95% confidence intervals. NaN scores (constant predictions or activations) and failed LLM answers are counted in the table, never averaged.'),
    h('div', { class: 'score-grid' }, charts, judgeCharts), summaryTable(data.dictionaries, explainer), scatterEl, searchBox(ctx));
  await Promise.all(SIMULATION.map(([variant, title], i) => barChart(charts[i], data.dictionaries, explainer, 'simulation', variant, `Simulation: ${title}`))
    .concat(judges.map((s, i) => barChart(judgeCharts[i], data.dictionaries, explainer, s, 'balanced_accuracy', `${s[0].toUpperCase()}${s.slice(1)}`))));
  if (!ctx.alive()) return;
  await scatter(scatterEl, data.dictionaries, ctx);
}
