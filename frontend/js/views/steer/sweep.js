// The strength sweep: steer with the first intervention at a range of strengths (the others stay
// fixed) and show, per strength, the mean log-probability of the steered tokens (fluency) and the
// feature's mean activation on the steered continuation (does the text now express it?), as a table
// and a plot, to help pick a strength. A click on a row uses that strength.

import { api } from '../../api.js';
import { h, fmt, loading, errorBox, setContent } from '../../dom.js';
import { displayToken } from '../../tokens.js';
import { plot, COLOURS } from '../../plots.js';
import { mean } from './continuation.js';

function linspace(a, b, n) {
  if (n <= 1) return [a];
  return Array.from({ length: n }, (_, i) => Number((a + ((b - a) * i) / (n - 1)).toPrecision(4)));
}

/** The strengths to try; an empty range runs from 0 to twice the target's strength (else 10). */
function sweepStrengths(target, from, to, steps) {
  const a = from === '' ? 0 : Number(from);
  const b = to === '' ? (target.strength ? 2 * target.strength : 10) : Number(to);
  return linspace(a, b, Math.max(2, Math.min(15, Number(steps) || 7)));
}

/** The feature's mean activation over the `generated` last tokens of `text`: {act} or {error}. */
async function activationOnContinuation(target, text, generated) {
  if (!generated) return { act: null };
  try {
    const fa = await api.featureOnText({ text, dictionary: target.dictionary, index: target.index });
    return { act: mean(fa.activations.slice(Math.max(1, fa.activations.length - generated))) };
  } catch (err) {
    return { act: null, error: err.message }; // e.g. prompt + continuation longer than the model's context
  }
}

/** One sweep point: steer with the first intervention at `strength` (null once the view is gone). */
async function sweepPoint(view, target, strength) {
  const ivs = view.body().interventions;
  ivs[0] = { ...ivs[0], strength };
  const res = await api.steer(view.body({ interventions: ivs }));
  if (!view.ctx.alive()) return null;
  const { act, error } = await activationOnContinuation(target, view.prompt.value + res.steered.text, res.steered.tokens.length);
  return {
    row: { strength, logprob: mean(res.steered.tokens.map((t) => t.logprob)), act, text: res.steered.text },
    defaultLp: mean(res.default.tokens.map((t) => t.logprob)),
    error,
  };
}

function sweepTable(rows, name, onUse) {
  return h('table', { class: 'data compact sweep-table' },
    h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'strength'), h('th', { class: 'num' }, 'mean logprob'), h('th', { class: 'num' }, `${name} mean act.`), h('th', {}, 'steered continuation (click to use this strength)'))),
    h('tbody', {}, rows.map((r) => h('tr', { class: 'clickable', on: { click: () => onUse(r.strength) } },
      h('td', { class: 'num' }, fmt(r.strength, 3)), h('td', { class: 'num' }, fmt(r.logprob, 3)), h('td', { class: 'num' }, fmt(r.act, 3)),
      h('td', { class: 'wide mono' }, displayToken(r.text).slice(0, 90))))));
}

/** A dotted line and label at the default continuation's mean log-probability (none if unknown). */
function defaultMarker(defaultLp) {
  if (defaultLp === null) return { shapes: [], annotations: [] };
  return {
    shapes: [{ type: 'line', xref: 'paper', x0: 0, x1: 1, y0: defaultLp, y1: defaultLp, line: { dash: 'dot', color: '#888', width: 1 } }],
    annotations: [{ xref: 'paper', x: 0, y: defaultLp, text: 'default', showarrow: false, yanchor: 'bottom', xanchor: 'left', font: { size: 10, color: '#666' } }],
  };
}

function drawSweepPlot(el, rows, target, name, defaultLp) {
  const x = rows.map((r) => r.strength);
  return plot(el, [
    { type: 'scatter', mode: 'lines+markers', x, y: rows.map((r) => r.logprob), name: 'mean logprob of steered tokens', line: { color: COLOURS[4] } },
    { type: 'scatter', mode: 'lines+markers', x, y: rows.map((r) => r.act), name: `${name} mean activation on steered text`, yaxis: 'y2', line: { color: COLOURS[1] } },
  ], {
    height: 280,
    xaxis: { title: { text: `${target.mode} strength of ${name}` } },
    yaxis: { title: { text: 'mean logprob' } },
    yaxis2: { title: { text: 'feature activation' }, overlaying: 'y', side: 'right', rangemode: 'tozero' },
    ...defaultMarker(defaultLp),
    margin: { r: 56, t: 36 },
    legend: { orientation: 'h', x: 0, y: 1.02, yanchor: 'bottom' },
    showlegend: true,
  });
}

/**
 * The sweep card. view: {interventions, prefixes, prompt, ctx, body(overrides), useStrength(iv, s)}:
 * the steering view whose interventions and settings the sweep reads.
 */
export function sweepCard(view) {
  const from = h('input', { type: 'number', step: 'any', class: 'num-input', 'aria-label': 'Sweep from' });
  const to = h('input', { type: 'number', step: 'any', class: 'num-input', 'aria-label': 'Sweep to' });
  const steps = h('input', { type: 'number', min: 2, max: 15, value: 7, class: 'num-input', 'aria-label': 'Sweep steps' });
  const button = h('button', { type: 'button' }, 'Run sweep');
  const out = h('div', { class: 'sweep-out' });
  const plotEl = h('div', { class: 'plot sweep-plot' });

  async function run() {
    if (!view.interventions.length) { setContent(out, errorBox(new Error('Choose a feature to steer with first.'))); return; }
    const target = view.interventions[0];
    const strengths = sweepStrengths(target, from.value, to.value, steps.value);
    const points = [];
    button.disabled = true;
    try {
      for (const [k, s] of strengths.entries()) {
        setContent(out, loading(`Strength ${fmt(s, 3)} (${k + 1} of ${strengths.length})…`));
        const point = await sweepPoint(view, target, s);
        if (!view.ctx.alive()) return;
        points.push(point);
      }
    } catch (err) {
      if (view.ctx.alive()) setContent(out, errorBox(err));
      return;
    } finally { button.disabled = false; }
    await show(target, points);
  }

  async function show(target, points) {
    const rows = points.map((p) => p.row);
    const defaultLp = points.length ? points[points.length - 1].defaultLp : null;
    const actError = points.map((p) => p.error).filter(Boolean).pop();
    const name = `${view.prefixes.get(target.dictionary)}${target.index}`;
    setContent(out, sweepTable(rows, name, (s) => view.useStrength(target, s)),
      actError ? h('p', { class: 'muted small' }, `Feature activation on the steered text unavailable: ${actError}`) : null);
    await drawSweepPlot(plotEl, rows, target, name, defaultLp);
  }
  button.addEventListener('click', run);

  return h('section', { class: 'card sweep-card' },
    h('h3', {}, 'Strength sweep', h('span', { class: 'muted small' }, ' (first feature; the others stay fixed)')),
    h('div', { class: 'row wrap' }, h('label', {}, 'from ', from), h('label', {}, 'to ', to), h('label', {}, 'steps ', steps), button,
      h('span', { class: 'muted small' }, 'Empty range = 0 … 2 × the current strength. Fluency falls as strength grows; pick a strength where the feature shows up before the log-probability collapses.')),
    plotEl, out);
}
