// The steering interventions: their URL form (f=<dict>:<index>:<mode>:<strength>,...) and the table
// that edits them (mode, strength, remove). The table edits the given objects in place and calls
// back; it sends no request.

import { h } from '../../dom.js';
import { featureHash } from '../../router.js';

/** Interventions from the URL's `f` value; parts naming an unknown dictionary or bad numbers are dropped. */
export function parseInterventions(value, dictIds) {
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

export const serialise = (ivs) => ivs.map((iv) => `${iv.dictionary}:${iv.index}:${iv.mode}:${iv.strength}`).join(',');

function modeSelect(iv, onChange) {
  return h('select', { 'aria-label': 'Mode', on: { change: (e) => { iv.mode = e.target.value; onChange(); } } },
    h('option', { value: 'add', selected: iv.mode === 'add', title: 'x + strength · decoder direction' }, 'add'),
    h('option', { value: 'clamp', selected: iv.mode === 'clamp', title: 'set the feature activation to strength' }, 'clamp'));
}

function strengthInput(iv, onChange) {
  return h('input', { type: 'number', step: 'any', value: iv.strength, class: 'num-input strength', 'aria-label': 'Strength',
    on: { input: (e) => { iv.strength = Number(e.target.value); onChange(); } } });
}

function interventionRow(iv, i, prefixes, { onChange, onRemove }) {
  return h('tr', {},
    h('td', {}, h('a', { href: featureHash(iv.dictionary, iv.index) }, `${prefixes.get(iv.dictionary)}${iv.index}`), h('span', { class: 'muted small' }, ` ${iv.dictionary}`)),
    h('td', { class: 'wide iv-label' }, iv.label || ''),
    h('td', {}, modeSelect(iv, onChange)),
    h('td', {}, strengthInput(iv, onChange)),
    h('td', {}, h('button', { type: 'button', class: 'link-button', title: 'Remove', on: { click: () => onRemove(i) } }, '✕')));
}

/** The interventions as an editable table (or a hint when there is none). handlers: {onChange(), onRemove(i)}. */
export function interventionsTable(interventions, prefixes, handlers) {
  if (!interventions.length) {
    return h('p', { class: 'muted' }, 'No feature chosen yet: search for one below, or use “steer with it” on a feature page.');
  }
  return h('table', { class: 'data compact iv-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Feature'), h('th', {}, 'Label'), h('th', {}, 'Mode'), h('th', {}, 'Strength'), h('th', {}, ''))),
    h('tbody', {}, interventions.map((iv, i) => interventionRow(iv, i, prefixes, handlers))));
}
