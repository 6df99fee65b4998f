// Steering playground (#/steer?prompt=...&f=<dict>:<index>:<mode>:<strength>,...): pick features by
// searching their labels, add or clamp them with a strength, and compare the default and steered
// continuations (same seed) side by side, each token with its log-probability on hover. A strength
// sweep plots, for the first feature, the mean log-probability of the steered tokens (fluency) and
// the feature's mean activation on the steered continuation (does the text now express it?) against
// the strength, to help pick a strength.

import { api } from '../api.js';
import { h, fmt, loading, errorBox, setContent, debounce } from '../dom.js';
import { featureHash } from '../router.js';
import { displayToken } from '../tokens.js';
import { plot, COLOURS } from '../plots.js';

const DEFAULT_PROMPT = 'import os\n\ndef ';

function parseInterventions(value, dictIds) {
  if (!value) return [];
  return value.split(',').map((part) => {
    const bits = part.split(':');
    if (bits.length < 4) return null;
    const strength = Number(bits.pop());
    const mode = bits.pop() === 'clamp' ? 'clamp' : 'add';
    const index = Number(bits.pop());
    const dictionary = bits.join(':');
    if (!dictIds.has(dictionary) || !Number.isInteger(index) || !Number.isFinite(strength)) return null;
    return { dictionary, index, mode, strength, label: '' };
  }).filter(Boolean);
}

const serialise = (ivs) => ivs.map((iv) => `${iv.dictionary}:${iv.index}:${iv.mode}:${iv.strength}`).join(',');

const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

function linspace(a, b, n) {
  if (n <= 1) return [a];
  return Array.from({ length: n }, (_, i) => Number((a + ((b - a) * i) / (n - 1)).toPrecision(4)));
}

/** Continuation tokens shaded by surprise (−log p), exact log-probability on hover. */
function continuationTokens(promptTokens, cont) {
  const row = h('div', { class: 'tokens continuation' });
  promptTokens.forEach((t, i) => {
    if (i === 0) return;
    row.append(h('span', { class: `tok tok-prompt${t.includes('\n') ? ' tok-nl' : ''}`, title: 'prompt' }, displayToken(t)));
    if (t.includes('\n')) row.append(h('br'));
  });
  for (const [i, t] of cont.tokens.entries()) {
    const surprise = Math.min(1, -t.logprob / 8);
    row.append(h('span', {
      class: `tok tok-gen${t.token.includes('\n') ? ' tok-nl' : ''}`,
      title: `“${t.token}” (${i}) · logprob ${fmt(t.logprob, 3)} · p ${fmt(Math.exp(t.logprob), 3)}`,
      dataset: { logprob: String(t.logprob) },
      style: { backgroundColor: `rgba(148, 103, 189, ${(0.05 + 0.6 * surprise).toFixed(3)})` },
    }, displayToken(t.token)));
    if (t.token.includes('\n')) row.append(h('br'));
  }
  return row;
}

export async function render(root, route, ctx) {
  const dicts = await api.dictionaries();
  if (!ctx.alive()) return;
  if (!dicts.length) { root.append(h('h1', {}, 'Steer'), h('p', { class: 'empty' }, 'No dictionary is ready in this store yet.')); return; }
  const prefixes = new Map(dicts.map((d) => [d.id, d.display_prefix || '']));
  const q = route.query;
  const interventions = parseInterventions(q.get('f'), new Set(prefixes.keys()));

  const prompt = h('textarea', { rows: 3, class: 'steer-prompt', 'aria-label': 'Prompt', value: q.get('prompt') ?? DEFAULT_PROMPT });
  const nTokens = h('input', { type: 'number', min: 1, max: 512, value: q.get('n') || 32, class: 'num-input', 'aria-label': 'Tokens to generate' });
  const temperature = h('input', { type: 'number', min: 0, max: 10, step: 0.1, value: q.get('t') || 0.7, class: 'num-input', 'aria-label': 'Temperature' });
  const seed = h('input', { type: 'number', min: 0, value: q.get('seed') || 0, class: 'num-input', 'aria-label': 'Seed' });
  const runButton = h('button', { type: 'submit' }, 'Generate');
  const ivHost = h('div', { class: 'interventions' });
  const out = h('div', { class: 'steer-out', 'aria-live': 'polite' });

  // --- feature picker -------------------------------------------------------------------------
  const pickDict = h('select', { 'aria-label': 'Dictionary to pick from' },
    dicts.map((d) => h('option', { value: d.id, selected: interventions.length > 0 && d.id === interventions[0].dictionary }, d.id)));
  const pickSearch = h('input', { type: 'search', placeholder: 'Search features by label or token, or type an index', 'aria-label': 'Search features to steer with', class: 'search' });
  const pickResults = h('div', { class: 'pick-results' });
  const pickSearchNow = async () => {
    const dictId = pickDict.value;
    const term = pickSearch.value.trim();
    const options = [];
    if (/^\d+$/.test(term)) options.push({ index: Number(term), label: '(by index)' });
    if (term && !/^\d+$/.test(term)) {
      setContent(pickResults, loading('Searching…'));
      try {
        const page = await api.features(dictId, { q: term, limit: 8, sort: 'max_activation', order: 'desc', dead: 'false' });
        options.push(...page.items.map((f) => ({ index: f.index, label: f.label, max: f.max_activation })));
      } catch (err) { setContent(pickResults, errorBox(err)); return; }
    }
    if (!term) { pickResults.replaceChildren(); return; }
    setContent(pickResults, options.length ? options.map((o) => h('button', {
      type: 'button', class: 'pick-option',
      on: { click: () => { addIntervention({ dictionary: dictId, index: o.index, mode: 'add', strength: o.max ? Number((2 * o.max).toPrecision(2)) : 5, label: o.label === '(by index)' ? '' : o.label }); pickSearch.value = ''; pickResults.replaceChildren(); } },
    }, h('strong', {}, `${prefixes.get(dictId)}${o.index}`), ' ', o.label || '')) : h('p', { class: 'muted small' }, 'No feature matches.'));
  };
  pickSearch.addEventListener('input', debounce(pickSearchNow, 250));

  function addIntervention(iv) {
    interventions.push(iv);
    drawInterventions();
    saveUrl();
  }

  function drawInterventions() {
    if (!interventions.length) {
      setContent(ivHost, h('p', { class: 'muted' }, 'No feature chosen yet: search for one below, or use “steer with it” on a feature page.'));
      return;
    }
    setContent(ivHost, h('table', { class: 'data compact iv-table' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Feature'), h('th', {}, 'Label'), h('th', {}, 'Mode'), h('th', {}, 'Strength'), h('th', {}, ''))),
      h('tbody', {}, interventions.map((iv, i) => h('tr', {},
        h('td', {}, h('a', { href: featureHash(iv.dictionary, iv.index) }, `${prefixes.get(iv.dictionary)}${iv.index}`), h('span', { class: 'muted small' }, ` ${iv.dictionary}`)),
        h('td', { class: 'wide iv-label' }, iv.label || ''),
        h('td', {}, h('select', { 'aria-label': 'Mode', on: { change: (e) => { iv.mode = e.target.value; saveUrl(); } } },
          h('option', { value: 'add', selected: iv.mode === 'add', title: 'x + strength · decoder direction' }, 'add'),
          h('option', { value: 'clamp', selected: iv.mode === 'clamp', title: 'set the feature activation to strength' }, 'clamp'))),
        h('td', {}, h('input', { type: 'number', step: 'any', value: iv.strength, class: 'num-input strength', 'aria-label': 'Strength',
          on: { input: (e) => { iv.strength = Number(e.target.value); saveUrl(); } } })),
        h('td', {}, h('button', { type: 'button', class: 'link-button', title: 'Remove', on: { click: () => { interventions.splice(i, 1); drawInterventions(); saveUrl(); } } }, '✕')))))));
  }

  function saveUrl() {
    ctx.setQuery({ prompt: prompt.value, f: serialise(interventions), n: nTokens.value === '32' ? '' : nTokens.value,
      t: temperature.value === '0.7' ? '' : temperature.value, seed: seed.value === '0' ? '' : seed.value });
  }

  function body(overrides = {}) {
    return {
      prompt: prompt.value,
      interventions: interventions.map(({ dictionary, index, mode, strength }) => ({ dictionary, index, mode, strength })),
      n_tokens: Number(nTokens.value),
      temperature: Number(temperature.value),
      seed: Number(seed.value),
      ...overrides,
    };
  }

  async function generate() {
    saveUrl();
    runButton.disabled = true;
    setContent(out, loading('Generating…'));
    try {
      const res = await api.steer(body());
      if (!ctx.alive()) return;
      const col = (title, cont, cls) => h('div', { class: `card continuation-card ${cls}` },
        h('h3', {}, title, h('span', { class: 'muted small' }, ` mean logprob ${fmt(mean(cont.tokens.map((t) => t.logprob)), 3)}`)),
        continuationTokens(res.prompt_tokens, cont));
      setContent(out, h('div', { class: 'side-by-side' }, col('Default', res.default, 'default'), col('Steered', res.steered, 'steered')),
        h('p', { class: 'muted small' }, 'Prompt in grey; generated tokens shaded by surprise (−log p); hover a token for its log-probability.'));
    } catch (err) {
      if (ctx.alive()) setContent(out, errorBox(err));
    } finally { runButton.disabled = false; }
  }

  // --- sweep ----------------------------------------------------------------------------------
  const sweepFrom = h('input', { type: 'number', step: 'any', class: 'num-input', 'aria-label': 'Sweep from' });
  const sweepTo = h('input', { type: 'number', step: 'any', class: 'num-input', 'aria-label': 'Sweep to' });
  const sweepSteps = h('input', { type: 'number', min: 2, max: 15, value: 7, class: 'num-input', 'aria-label': 'Sweep steps' });
  const sweepButton = h('button', { type: 'button' }, 'Run sweep');
  const sweepOut = h('div', { class: 'sweep-out' });
  const sweepPlot = h('div', { class: 'plot sweep-plot' });

  async function sweep() {
    if (!interventions.length) { setContent(sweepOut, errorBox(new Error('Choose a feature to steer with first.'))); return; }
    const target = interventions[0];
    const from = sweepFrom.value === '' ? 0 : Number(sweepFrom.value);
    const to = sweepTo.value === '' ? (target.strength ? 2 * target.strength : 10) : Number(sweepTo.value);
    const strengths = linspace(from, to, Math.max(2, Math.min(15, Number(sweepSteps.value) || 7)));
    sweepButton.disabled = true;
    const rows = [];
    let defaultLp = null;
    let actError = null;
    try {
      for (const [k, s] of strengths.entries()) {
        setContent(sweepOut, loading(`Strength ${fmt(s, 3)} (${k + 1} of ${strengths.length})…`));
        const ivs = body().interventions;
        ivs[0] = { ...ivs[0], strength: s };
        const res = await api.steer(body({ interventions: ivs }));
        if (!ctx.alive()) return;
        defaultLp = mean(res.default.tokens.map((t) => t.logprob));
        const gen = res.steered.tokens.length;
        let act = null;
        if (gen) {
          try {
            const fa = await api.featureOnText({ text: prompt.value + res.steered.text, dictionary: target.dictionary, index: target.index });
            act = mean(fa.activations.slice(Math.max(1, fa.activations.length - gen)));
          } catch (err) {
            actError = err.message; // e.g. prompt + continuation longer than the model's context
          }
        }
        rows.push({ strength: s, logprob: mean(res.steered.tokens.map((t) => t.logprob)), act, text: res.steered.text });
      }
    } catch (err) {
      if (ctx.alive()) setContent(sweepOut, errorBox(err));
      sweepButton.disabled = false;
      return;
    }
    sweepButton.disabled = false;
    const x = rows.map((r) => r.strength);
    const name = `${prefixes.get(target.dictionary)}${target.index}`;
    setContent(sweepOut,
      h('table', { class: 'data compact sweep-table' },
        h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'strength'), h('th', { class: 'num' }, 'mean logprob'), h('th', { class: 'num' }, `${name} mean act.`), h('th', {}, 'steered continuation (click to use this strength)'))),
        h('tbody', {}, rows.map((r) => h('tr', { class: 'clickable', on: { click: () => { target.strength = r.strength; drawInterventions(); saveUrl(); generate(); } } },
          h('td', { class: 'num' }, fmt(r.strength, 3)), h('td', { class: 'num' }, fmt(r.logprob, 3)), h('td', { class: 'num' }, fmt(r.act, 3)),
          h('td', { class: 'wide mono' }, displayToken(r.text).slice(0, 90)))))),
      actError ? h('p', { class: 'muted small' }, `Feature activation on the steered text unavailable: ${actError}`) : null);
    await plot(sweepPlot, [
      { type: 'scatter', mode: 'lines+markers', x, y: rows.map((r) => r.logprob), name: 'mean logprob of steered tokens', line: { color: COLOURS[4] } },
      { type: 'scatter', mode: 'lines+markers', x, y: rows.map((r) => r.act), name: `${name} mean activation on steered text`, yaxis: 'y2', line: { color: COLOURS[1] } },
    ], {
      height: 280,
      xaxis: { title: { text: `${target.mode} strength of ${name}` } },
      yaxis: { title: { text: 'mean logprob' } },
      yaxis2: { title: { text: 'feature activation' }, overlaying: 'y', side: 'right', rangemode: 'tozero' },
      shapes: defaultLp === null ? [] : [{ type: 'line', xref: 'paper', x0: 0, x1: 1, y0: defaultLp, y1: defaultLp, line: { dash: 'dot', color: '#888', width: 1 } }],
      annotations: defaultLp === null ? [] : [{ xref: 'paper', x: 0, y: defaultLp, text: 'default', showarrow: false, yanchor: 'bottom', xanchor: 'left', font: { size: 10, color: '#666' } }],
      margin: { r: 56, t: 36 },
      legend: { orientation: 'h', x: 0, y: 1.02, yanchor: 'bottom' },
      showlegend: true,
    });
  }
  sweepButton.addEventListener('click', sweep);

  const form = h('form', { class: 'card steer-form' },
    h('label', { class: 'block' }, 'Prompt', prompt),
    h('h3', {}, 'Interventions'), ivHost,
    h('div', { class: 'row wrap picker' }, h('span', { class: 'muted' }, 'Add a feature:'), pickDict, pickSearch), pickResults,
    h('div', { class: 'row wrap' },
      h('label', {}, 'tokens ', nTokens), h('label', {}, 'temperature ', temperature), h('label', {}, 'seed ', seed), runButton));
  form.addEventListener('submit', (e) => { e.preventDefault(); generate(); });
  prompt.addEventListener('change', saveUrl);

  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Steering playground'),
    h('span', { class: 'muted' }, 'Same seed for both: differences come from the interventions.')),
  form, out,
  h('section', { class: 'card sweep-card' },
    h('h3', {}, 'Strength sweep', h('span', { class: 'muted small' }, ' (first feature; the others stay fixed)')),
    h('div', { class: 'row wrap' }, h('label', {}, 'from ', sweepFrom), h('label', {}, 'to ', sweepTo), h('label', {}, 'steps ', sweepSteps), sweepButton,
      h('span', { class: 'muted small' }, 'Empty range = 0 … 2 × the current strength. Fluency falls as strength grows; pick a strength where the feature shows up before the log-probability collapses.')),
    sweepPlot, sweepOut));
  drawInterventions();
  // Fill in labels of features that came from the URL.
  for (const iv of interventions) {
    api.feature(iv.dictionary, iv.index).then((d) => { iv.label = d.label; if (ctx.alive()) drawInterventions(); }).catch(() => {});
  }
  if (q.get('run') === '1' && interventions.length) await generate();
}
