// DOM helpers: build elements from data without ever parsing HTML strings, so tokens, labels and
// explanations (untrusted text from the corpus and the models) are always inserted as text.
// Also number formatting and the small shared widgets (loading, error box, pagination).

/**
 * Create an element. attrs: {class, text, title, href, style: {...}, dataset: {...},
 * on: {click: fn, ...}, any other attribute}. Children: nodes, strings (as text), arrays, or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'style') Object.assign(el.style, value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
    else if (key === 'value') el.value = value;
    else if (key === 'checked' || key === 'selected' || key === 'disabled') el[key] = Boolean(value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replace the contents of el with children. */
export function setContent(el, ...children) {
  clear(el);
  return append(el, children);
}

/** Format a number compactly: null -> em dash, tiny values in scientific notation. */
export function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  if (typeof x !== 'number') return String(x);
  if (Number.isInteger(x)) return x.toLocaleString('en-US');
  const ax = Math.abs(x);
  if (ax !== 0 && (ax < 1e-3 || ax >= 1e6)) return x.toExponential(digits - 1);
  return x.toFixed(ax >= 100 ? 1 : digits);
}

/** Format a fraction as a percentage. */
export function fmtPct(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  const p = x * 100;
  if (p !== 0 && Math.abs(p) < 0.01) return p.toExponential(1) + '%';
  return p.toFixed(digits) + '%';
}

/** Firing density: shown as a percentage with enough digits for rare features. */
export function fmtDensity(x) {
  if (x === null || x === undefined) return '—';
  if (x === 0) return '0';
  if (x < 1e-4) return x.toExponential(1);
  return fmtPct(x, x < 0.01 ? 3 : 2);
}

export function loading(text = 'Loading…') {
  return h('p', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), text);
}

/** An error box showing the server's {"error", "field"} message (or a network error). */
export function errorBox(err, context = '') {
  const message = err && err.message ? err.message : String(err);
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, context ? `${context}: ` : 'Error: '),
    message,
    err && err.field ? h('span', { class: 'error-field' }, ` (field: ${err.field})`) : null,
    err && err.status ? h('span', { class: 'error-status' }, ` [HTTP ${err.status}]`) : null);
}

/** Debounce a function by ms. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Save a text file in the browser (CSV export). */
export function download(filename, text, mime = 'text/csv') {
  const blob = new Blob([text], { type: `${mime};charset=utf-8` });
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename, style: { display: 'none' } });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Quote one CSV field (RFC 4180). */
export function csvField(value) {
  if (value === null || value === undefined) return '';
  const s = String(value);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csv(rows) {
  return rows.map((r) => r.map(csvField).join(',')).join('\r\n') + '\r\n';
}
