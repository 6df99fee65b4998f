// Plotly helpers: loads plotly.js from /vendor (served by the API from the plotly Python package,
// never a CDN), applies one compact house style, and falls back from WebGL to SVG when the browser
// has no WebGL (headless, remote desktops).

import { h } from './dom.js';

let plotlyPromise = null;

/** Resolve with window.Plotly, loading /vendor/plotly.min.js once if the page has not yet. */
export function ensurePlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const existing = document.querySelector('script[src="/vendor/plotly.min.js"]');
      const script = existing || h('script', { src: '/vendor/plotly.min.js' });
      const done = () => (window.Plotly ? resolve(window.Plotly) : reject(new Error('plotly.js did not load from /vendor/plotly.min.js')));
      script.addEventListener('load', done);
      script.addEventListener('error', () => reject(new Error('Cannot load /vendor/plotly.min.js from the server')));
      if (!existing) document.head.append(script);
      // A deferred script may already have run between the check above and the listener.
      setTimeout(() => { if (window.Plotly) resolve(window.Plotly); }, 0);
    });
    plotlyPromise.catch(() => { plotlyPromise = null; });
  }
  return plotlyPromise;
}

let webgl = null;
/** Whether this browser can create a WebGL context (scattergl needs it). */
export function hasWebGL() {
  if (webgl === null) {
    try {
      const canvas = document.createElement('canvas');
      webgl = Boolean(canvas.getContext('webgl2') || canvas.getContext('webgl'));
    } catch {
      webgl = false;
    }
  }
  return webgl;
}

export const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

const BASE_LAYOUT = {
  margin: { l: 48, r: 12, t: 28, b: 40 },
  font: { family: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif', size: 11, color: '#222' },
  paper_bgcolor: 'rgba(0,0,0,0)',
  plot_bgcolor: '#fff',
  hovermode: 'closest',
  legend: { orientation: 'h', x: 0, y: 1.02, yanchor: 'bottom' },
};

function merge(base, extra) {
  const out = { ...base };
  for (const [k, v] of Object.entries(extra || {})) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && base[k] && typeof base[k] === 'object' ? merge(base[k], v) : v;
  }
  return out;
}

/** Draw a plot into el (replacing what it shows). Returns the Plotly graph div. */
export async function plot(el, data, layout = {}, config = {}) {
  const Plotly = await ensurePlotly();
  if (!el.isConnected) return el;
  await Plotly.react(el, data, merge(BASE_LAYOUT, layout), { displaylogo: false, responsive: true, ...config });
  return el;
}

/** Bar-chart trace of a {edges, counts} histogram. */
export function histogramTrace(hist, { name = '', colour = COLOURS[0], opacity = 1 } = {}) {
  const edges = hist.edges || [];
  const counts = hist.counts || [];
  const x = counts.map((_, i) => (edges[i] + edges[i + 1]) / 2);
  const width = counts.map((_, i) => edges[i + 1] - edges[i]);
  return { type: 'bar', x, y: counts, width, name, marker: { color: colour }, opacity,
    hovertemplate: counts.map((c, i) => `[${edges[i].toPrecision(3)}, ${edges[i + 1].toPrecision(3)}): ${c}<extra>${name}</extra>`) };
}

/** Step-line trace of a histogram (for overlaying several). */
export function histogramLine(hist, { name = '', colour = COLOURS[0] } = {}) {
  const edges = hist.edges || [];
  const counts = hist.counts || [];
  const x = [];
  const y = [];
  counts.forEach((c, i) => { x.push(edges[i], edges[i + 1]); y.push(c, c); });
  return { type: 'scatter', mode: 'lines', x, y, name, line: { color: colour, width: 1.5 },
    hovertemplate: `%{x:.2f}: %{y}<extra>${name}</extra>` };
}

/** Clean up plotly's listeners when a view goes away. */
export function purge(el) {
  if (window.Plotly && el) window.Plotly.purge(el);
}

/** Escape text for plotly's pseudo-HTML labels (hover text, titles): tokens are untrusted. */
export function plotText(s) {
  return String(s ?? '').replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/\n/g, '↵');
}
