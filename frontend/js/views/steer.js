// Steering playground (#/steer?prompt=...&f=<dict>:<index>:<mode>:<strength>,...): pick features by
// searching their labels, add or clamp them with a strength, and compare the default and steered
// continuations (same seed) side by side, each token with its log-probability on hover, and sweep
// a strength. This module holds the prompt, settings and interventions and keeps them in the URL;
// the interventions table, picker, continuations and sweep live in views/steer/.

import { api } from '../api.js';
import { h, loading, errorBox, setContent } from '../dom.js';
import { parseInterventions, serialise, interventionsTable } from './steer/interventions.js';
import { featurePicker } from './steer/picker.js';
import { continuations } from './steer/continuation.js';
import { sweepCard } from './steer/sweep.js';

const DEFAULT_PROMPT = 'import os\n\ndef ';
const DEFAULTS = { n: '32', t: '0.7', seed: '0' };

/** The prompt box and generation settings, filled from the URL query. */
function settingsInputs(q) {
  return {
    prompt: h('textarea', { rows: 3, class: 'steer-prompt', 'aria-label': 'Prompt', value: q.get('prompt') ?? DEFAULT_PROMPT }),
    nTokens: h('input', { type: 'number', min: 1, max: 512, value: q.get('n') || 32, class: 'num-input', 'aria-label': 'Tokens to generate' }),
    temperature: h('input', { type: 'number', min: 0, max: 10, step: 0.1, value: q.get('t') || 0.7, class: 'num-input', 'aria-label': 'Temperature' }),
    seed: h('input', { type: 'number', min: 0, value: q.get('seed') || 0, class: 'num-input', 'aria-label': 'Seed' }),
  };
}

/** The playground's state (prompt, settings, interventions) and its two outputs. */
class SteerView {
  constructor(dicts, q, ctx) {
    this.ctx = ctx;
    this.prefixes = new Map(dicts.map((d) => [d.id, d.display_prefix || '']));
    this.interventions = parseInterventions(q.get('f'), new Set(this.prefixes.keys()));
    Object.assign(this, settingsInputs(q));
    this.runButton = h('button', { type: 'submit' }, 'Generate');
    this.ivHost = h('div', { class: 'interventions' });
    this.out = h('div', { class: 'steer-out', 'aria-live': 'polite' });
  }

  saveUrl() {
    const orEmpty = (input, key) => (input.value === DEFAULTS[key] ? '' : input.value);
    this.ctx.setQuery({ prompt: this.prompt.value, f: serialise(this.interventions), n: orEmpty(this.nTokens, 'n'),
      t: orEmpty(this.temperature, 't'), seed: orEmpty(this.seed, 'seed') });
  }

  /** The POST steer body for the current settings, with `overrides` on top. */
  body(overrides = {}) {
    return {
      prompt: this.prompt.value,
      interventions: this.interventions.map(({ dictionary, index, mode, strength }) => ({ dictionary, index, mode, strength })),
      n_tokens: Number(this.nTokens.value),
      temperature: Number(this.temperature.value),
      seed: Number(this.seed.value),
      ...overrides,
    };
  }

  drawInterventions() {
    setContent(this.ivHost, interventionsTable(this.interventions, this.prefixes, {
      onChange: () => this.saveUrl(),
      onRemove: (i) => { this.interventions.splice(i, 1); this.drawInterventions(); this.saveUrl(); },
    }));
  }

  addIntervention(iv) {
    this.interventions.push(iv);
    this.drawInterventions();
    this.saveUrl();
  }

  /** Set an intervention's strength (from a sweep row) and generate with it. */
  useStrength(iv, strength) {
    iv.strength = strength;
    this.drawInterventions();
    this.saveUrl();
    this.generate();
  }

  async generate() {
    this.saveUrl();
    this.runButton.disabled = true;
    setContent(this.out, loading('Generating…'));
    try {
      const res = await api.steer(this.body());
      if (this.ctx.alive()) setContent(this.out, continuations(res));
    } catch (err) {
      if (this.ctx.alive()) setContent(this.out, errorBox(err));
    } finally { this.runButton.disabled = false; }
  }

  /** Fill in the labels of interventions that came from the URL. */
  fetchLabels() {
    for (const iv of this.interventions) {
      api.feature(iv.dictionary, iv.index).then((d) => { iv.label = d.label; if (this.ctx.alive()) this.drawInterventions(); }).catch(() => {});
    }
  }
}

function steerForm(view, dicts) {
  const picker = featurePicker(dicts, view.prefixes, view.interventions[0]?.dictionary, (iv) => view.addIntervention(iv));
  const form = h('form', { class: 'card steer-form' },
    h('label', { class: 'block' }, 'Prompt', view.prompt),
    h('h3', {}, 'Interventions'), view.ivHost,
    h('div', { class: 'row wrap picker' }, h('span', { class: 'muted' }, 'Add a feature:'), picker.controls), picker.results,
    h('div', { class: 'row wrap' },
      h('label', {}, 'tokens ', view.nTokens), h('label', {}, 'temperature ', view.temperature), h('label', {}, 'seed ', view.seed), view.runButton));
  form.addEventListener('submit', (e) => { e.preventDefault(); view.generate(); });
  view.prompt.addEventListener('change', () => view.saveUrl());
  return form;
}

export async function render(root, route, ctx) {
  const dicts = await api.dictionaries();
  if (!ctx.alive()) return;
  if (!dicts.length) { root.append(h('h1', {}, 'Steer'), h('p', { class: 'empty' }, 'No dictionary is ready in this store yet.')); return; }
  const view = new SteerView(dicts, route.query, ctx);
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Steering playground'),
    h('span', { class: 'muted' }, 'Same seed for both: differences come from the interventions.')),
  steerForm(view, dicts), view.out, sweepCard(view));
  view.drawInterventions();
  view.fetchLabels();
  if (route.query.get('run') === '1' && view.interventions.length) await view.generate();
}
