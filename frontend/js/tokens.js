// Token rendering shared by every view that shows text: visible whitespace (↵ for newlines, ⇥ for
// tabs, · for spaces in whitespace-only tokens), background shading by activation relative to a
// maximum, the exact value on hover (title attribute), and the maximum token marked.
// Tokens are always inserted as text nodes, never as HTML.

import { h, fmt } from './dom.js';

/** Make whitespace visible: newline -> ↵, tab -> ⇥, spaces of a whitespace-only token -> ·. */
export function displayToken(token) {
  if (token === null || token === undefined) return '';
  let s = String(token);
  const onlySpace = /^[ \t\r\n]+$/.test(s);
  s = s.replace(/\r\n/g, '↵').replace(/\n/g, '↵').replace(/\r/g, '↵').replace(/\t/g, '⇥');
  // Other control characters as their Unicode "control pictures" (U+2400 + code), DEL as ␡.
  s = s.replace(/[\u0000-\u001f]/g, (c) => String.fromCharCode(0x2400 + c.charCodeAt(0))).replace(/\u007f/g, '␡');
  if (onlySpace) s = s.replace(/ /g, '·');
  return s === '' ? '∅' : s;
}

/** Background colour for an activation: orange for positive, blue for negative, alpha = |v| / max. */
export function activationColour(value, max) {
  if (!value || !max || max <= 0) return '';
  const a = Math.min(1, Math.abs(value) / max);
  if (a < 0.005) return '';
  const alpha = (0.08 + 0.82 * a).toFixed(3);
  return value > 0 ? `rgba(255, 127, 14, ${alpha})` : `rgba(31, 119, 180, ${alpha})`;
}

/**
 * Render a token sequence. values: number per token (or null); max: the scale (defaults to the max
 * |value|). Options: markMax (outline the maximum token), onClick(i, span), selected (index),
 * bos (true: position 0 is the BOS token, shown dimmed), window: [start, end) slice to show,
 * titleFn(i) -> extra hover text, multiline (break the line after newline tokens).
 */
export function renderTokens(tokens, values = null, opts = {}) {
  const { max = null, markMax = true, onClick = null, bos = false, window: win = null, titleFn = null,
    valueName = 'activation', className = '', multiline = false } = opts;
  let scale = max;
  let argmax = -1;
  if (values) {
    let best = -Infinity;
    values.forEach((v, i) => {
      if (bos && i === 0) return;
      if (v > best) { best = v; argmax = i; }
    });
    if (scale === null || scale === undefined) {
      scale = Math.max(1e-9, ...values.map((v) => Math.abs(v || 0)));
    }
    if (!(best > 0)) argmax = -1;
  }
  const [start, end] = win || [0, tokens.length];
  const row = h('div', { class: `tokens ${className}`.trim() });
  if (start > 0) row.append(h('span', { class: 'tok-ellipsis', title: `${start} earlier tokens` }, '…'));
  for (let i = start; i < end; i += 1) {
    const v = values ? values[i] : null;
    const parts = [`“${tokens[i]}” (${i})`];
    if (values) parts.push(`${valueName} ${fmt(v, 4)}`);
    if (titleFn) { const extra = titleFn(i); if (extra) parts.push(extra); }
    const classes = ['tok'];
    if (bos && i === 0) classes.push('tok-bos');
    if (i === argmax && markMax) classes.push('tok-max');
    if (typeof tokens[i] === 'string' && tokens[i].includes('\n')) classes.push('tok-nl');
    if (onClick) classes.push('tok-click');
    const span = h('span', {
      class: classes.join(' '),
      title: parts.join(' · '),
      dataset: { i: String(i), v: values ? String(v) : '' },
      style: values ? { backgroundColor: activationColour(v, scale) } : {},
    }, displayToken(tokens[i]));
    if (onClick) {
      span.tabIndex = 0;
      span.addEventListener('click', () => onClick(i, span));
      span.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onClick(i, span); } });
    }
    row.append(span);
    if (multiline && typeof tokens[i] === 'string' && tokens[i].includes('\n')) row.append(h('br'));
  }
  if (end < tokens.length) row.append(h('span', { class: 'tok-ellipsis', title: `${tokens.length - end} later tokens` }, '…'));
  return row;
}

/** Index of the maximum value (ignoring position 0 when bos). */
export function argmaxOf(values, bos = false) {
  let best = -Infinity;
  let idx = -1;
  values.forEach((v, i) => { if (!(bos && i === 0) && v > best) { best = v; idx = i; } });
  return idx;
}

/** A window of about `before` tokens before and `after` after the centre, clipped to the sequence. */
export function windowAround(n, centre, before = 24, after = 10) {
  if (centre < 0) return [0, Math.min(n, before + after + 1)];
  return [Math.max(0, centre - before), Math.min(n, centre + after + 1)];
}

/** A small colour legend for activation shading. */
export function shadeLegend(max, label = 'activation') {
  const steps = [0.1, 0.25, 0.5, 0.75, 1];
  return h('span', { class: 'legend' }, `${label}: `,
    steps.map((s) => h('span', { class: 'legend-swatch', style: { backgroundColor: activationColour(s * max, max) }, title: fmt(s * max, 3) }, fmt(s * max, 2))));
}
