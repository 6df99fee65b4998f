// The feature table's controls: page head, dictionary select, search box, filter boxes, dead/pruned
// selects, reset and export buttons, status line, and the hosts of the table and the pager. Builds
// the elements with the state's values; the view wires their events.

import { h, fmt } from '../../dom.js';
import { featuresHash } from '../../router.js';

export const EXPORT_CAP = 20000; // rows fetched at most for a CSV export

function numInput(state, key, placeholder, title) {
  return h('input', { type: 'text', inputmode: 'decimal', size: 7, placeholder, title, value: state[key], dataset: { key }, class: 'num-input', 'aria-label': title });
}

function filterInputs(state) {
  return {
    min_density: numInput(state, 'min_density', 'min', 'Minimum firing density: a fraction (1e-4) or a percentage (0.01%)'),
    max_density: numInput(state, 'max_density', 'max', 'Maximum firing density: a fraction (0.1) or a percentage (10%)'),
    min_max_activation: numInput(state, 'min_max_activation', 'min', 'Minimum max activation'),
    max_max_activation: numInput(state, 'max_max_activation', 'max', 'Maximum max activation'),
    min_score: numInput(state, 'min_score', 'min', 'Minimum explanation score'),
  };
}

/** A three-way select for a boolean filter: any, only false, only true. */
function triSelect(state, key, label) {
  return h('select', { 'aria-label': label, dataset: { key } },
    h('option', { value: '', selected: state[key] === '' }, `${label}: any`),
    h('option', { value: 'false', selected: state[key] === 'false' }, `not ${label}`),
    h('option', { value: 'true', selected: state[key] === 'true' }, `only ${label}`));
}

function dictionarySelect(dicts, dict, ctx) {
  return h('select', { 'aria-label': 'Dictionary', on: { change: (e) => ctx.navigate(featuresHash(e.target.value)) } },
    dicts.map((d) => h('option', { value: d.id, selected: d.id === dict.id }, `${d.id} (${d.hook_name}, ${d.d_sae})`)));
}

/** Every control of the table, by name, plus `nodes`: the elements to append to the page, in order. */
export function buildControls(dicts, dict, state, ctx) {
  const c = {
    search: h('input', { type: 'search', placeholder: 'Search labels, explanations, top tokens  ( / )', value: state.q, 'aria-label': 'Search features', class: 'search' }),
    inputs: filterInputs(state),
    selects: [triSelect(state, 'dead', 'dead'), triSelect(state, 'pruned', 'pruned')],
    status: h('span', { class: 'muted', 'aria-live': 'polite' }),
    exportButton: h('button', { type: 'button', title: `Download the filtered features as CSV (at most ${EXPORT_CAP} rows)` }, 'Export CSV'),
    resetButton: h('button', { type: 'button', class: 'secondary' }, 'Reset filters'),
    tableHost: h('div', { class: 'table-wrap' }),
    pager: h('div', { class: 'pager' }),
  };
  c.nodes = [
    h('div', { class: 'page-head' },
      h('h1', {}, 'Features ', h('code', {}, dict.id)),
      h('span', { class: 'muted' }, `${dict.kind} · ${dict.architecture} · ${dict.hook_name} · ${fmt(dict.d_sae)} features`)),
    h('div', { class: 'toolbar' }, dictionarySelect(dicts, dict, ctx), c.search),
    h('div', { class: 'toolbar filters' },
      h('label', {}, 'density ', c.inputs.min_density, ' – ', c.inputs.max_density),
      h('label', {}, 'max act. ', c.inputs.min_max_activation, ' – ', c.inputs.max_max_activation),
      h('label', {}, 'score ≥ ', c.inputs.min_score),
      c.selects, c.resetButton, c.exportButton),
    h('p', { class: 'hint muted small' }, 'Click a column header to sort. Keys: ↑/↓ or j/k move, Enter opens, ←/→ change page, / searches.'),
    c.status, c.tableHost, c.pager];
  return c;
}
