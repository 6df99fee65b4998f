// Text analyser (#/analyse?text=...): the data-oriented view. Paste text; tokens are shaded by the
// total activity of a dictionary (sum of its feature activations); click a token to list its top
// features per dictionary (links to feature pages); pick a feature to see its activation across the
// whole text.

import { api } from '../api.js';
import { h, fmt, loading, errorBox, setContent } from '../dom.js';
import { featureHash } from '../router.js';
import { renderTokens, displayToken } from '../tokens.js';

const DEFAULT_TEXT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n';
const DEFAULT_K = 5;

/** The form's inputs, filled from the URL query, and the form itself. */
function analyseForm(dicts, q) {
  const known = new Set(dicts.map((d) => d.id));
  const chosen = new Set((q.get('dicts') || '').split(',').filter((id) => known.has(id)));
  if (!chosen.size) dicts.forEach((d) => chosen.add(d.id));
  const f = {
    text: h('textarea', { rows: 6, class: 'analyse-text', 'aria-label': 'Text to analyse', placeholder: 'Paste text here…', value: q.get('text') ?? DEFAULT_TEXT }),
    topK: h('input', { type: 'number', min: 1, max: 100, value: q.get('k') || DEFAULT_K, class: 'num-input', 'aria-label': 'Top features per token' }),
    dictBoxes: dicts.map((d) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: d.id, checked: chosen.has(d.id) }), ` ${d.id}`, h('span', { class: 'muted small' }, ` ${d.hook_name}`))),
    runButton: h('button', { type: 'submit' }, 'Analyse'),
  };
  f.form = h('form', { class: 'card analyse-form' }, f.text,
    h('div', { class: 'row wrap' }, h('span', { class: 'muted' }, 'Dictionaries:'), f.dictBoxes),
    h('div', { class: 'row' }, h('label', {}, 'top features per token ', f.topK), f.runButton,
      h('span', { class: 'muted small' }, 'Ctrl+Enter runs.')));
  return f;
}

function checkedIds(form) {
  return form.dictBoxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
}

function tokenFeatureRow(r, f, prefixes, onShow) {
  return h('tr', {},
    h('td', {}, h('a', { href: featureHash(r.dictionary_id, f.index), title: 'Open the feature page' }, `${prefixes.get(r.dictionary_id)}${f.index}`)),
    h('td', { class: 'num' }, fmt(f.activation, 3)),
    h('td', { class: 'wide' }, f.label || ''),
    h('td', {}, h('button', { type: 'button', class: 'link-button show-feature', title: 'Show this feature across the whole text',
      on: { click: () => onShow(r.dictionary_id, f.index, f.label) } }, 'across text →')));
}

/** One dictionary's top features at token i. */
function tokenDictionary(r, i, prefixes, onShow) {
  const features = r.per_token[i];
  return h('div', { class: 'token-dict' },
    h('h4', {}, r.dictionary_id, h('span', { class: 'muted small' }, ` total ${fmt(r.token_totals[i], 3)}${r.token_l0?.length ? ` · ${r.token_l0[i]} firing` : ''}`)),
    features.length ? h('table', { class: 'data compact token-features' }, h('tbody', {}, features.map((f) => tokenFeatureRow(r, f, prefixes, onShow))))
      : h('p', { class: 'muted small' }, i === 0 ? 'BOS token: never counted.' : 'No feature fires here.'));
}

/** The token panel's content for token i: the token, then its top features per dictionary. */
function tokenPanelContent(res, i, prefixes, onShow) {
  return [h('h3', {}, 'Token ', h('span', { class: 'tok chip' }, displayToken(res.tokens[i])), h('span', { class: 'muted' }, ` at position ${i}`)),
    res.results.map((r) => tokenDictionary(r, i, prefixes, onShow))];
}

/** Show one feature's activation on every token of the text now in `textArea`, in `panel`. */
async function showFeatureAcross(panel, textArea, { dictId, index, label }, prefixes, ctx) {
  setContent(panel, loading(`Running ${dictId} #${index}…`));
  try {
    const r = await api.featureOnText({ text: textArea.value, dictionary: dictId, index });
    if (!ctx.alive()) return;
    setContent(panel,
      h('h3', {}, h('a', { href: featureHash(dictId, index) }, `${prefixes.get(dictId)}${index}`), h('span', { class: 'muted' }, ` ${dictId} `), label || ''),
      h('p', { class: 'small muted' }, `max on this text ${fmt(r.max_activation, 4)}; shaded relative to it.`),
      renderTokens(r.tokens, r.activations, { bos: true, multiline: true }));
  } catch (err) {
    setContent(panel, errorBox(err));
  }
}

/** Buttons choosing which dictionary shades the tokens; onPick(dictionary_id). */
function shadeButtons(res, shade, onPick) {
  return h('div', { class: 'segmented', role: 'group', 'aria-label': 'Shade tokens by' },
    res.results.map((r) => h('button', { type: 'button', dataset: { id: r.dictionary_id }, class: r.dictionary_id === shade ? 'active' : '',
      on: { click: () => onPick(r.dictionary_id) } }, r.dictionary_id)));
}

/** The nodes showing one analysis: shaded tokens, then the token and feature panels. */
function analysisResult(res, initialShade, textArea, prefixes, ctx) {
  let shade = res.results.find((r) => r.dictionary_id === initialShade) ? initialShade : res.results[0]?.dictionary_id;
  let selectedToken = null;
  const tokenHost = h('div', { class: 'card analyse-tokens' });
  const tokenPanel = h('div', { class: 'card token-panel' }, h('p', { class: 'muted' }, 'Click a token to list its top features.'));
  const featurePanel = h('div', { class: 'card feature-panel' }, h('p', { class: 'muted' }, 'Click a feature in the token list to see its activation across the whole text.'));
  const showFeature = (dictId, index, label) => showFeatureAcross(featurePanel, textArea, { dictId, index, label }, prefixes, ctx);
  const shadeSelect = shadeButtons(res, shade, (id) => {
    shade = id;
    ctx.setQuery({ ...Object.fromEntries(new URLSearchParams(window.location.hash.split('?')[1] || '')), shade });
    drawTokens();
  });

  function drawTokens() {
    for (const b of shadeSelect.querySelectorAll('button')) b.classList.toggle('active', b.dataset.id === shade);
    const r = res.results.find((x) => x.dictionary_id === shade);
    const row = renderTokens(res.tokens, r.token_totals, {
      bos: true, markMax: false, valueName: 'total activation', multiline: true,
      titleFn: (i) => (r.token_l0 && r.token_l0.length ? `${r.token_l0[i]} features firing` : ''),
      onClick: (i) => { selectedToken = i; drawTokens(); setContent(tokenPanel, tokenPanelContent(res, i, prefixes, showFeature)); },
    });
    if (selectedToken !== null) row.querySelector(`[data-i="${selectedToken}"]`)?.classList.add('tok-selected');
    setContent(tokenHost, h('div', { class: 'card-head' }, h('h3', {}, 'Tokens shaded by total activity'), shadeSelect), row);
  }

  drawTokens();
  return [tokenHost, h('div', { class: 'analyse-grid' }, tokenPanel, featurePanel)];
}

export async function render(root, route, ctx) {
  const dicts = await api.dictionaries();
  if (!ctx.alive()) return;
  const prefixes = new Map(dicts.map((d) => [d.id, d.display_prefix || '']));
  const q = route.query;
  const form = analyseForm(dicts, q);
  const out = h('div', { class: 'analyse-out', 'aria-live': 'polite' });
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Analyse a text'),
    h('span', { class: 'muted' }, 'Every feature active on every token (the data-oriented view).')), form.form, out);

  let requestNo = 0;
  async function run({ updateUrl = true } = {}) {
    const ids = checkedIds(form);
    const k = Number(form.topK.value) || DEFAULT_K;
    const text = form.text.value;
    if (updateUrl) ctx.setQuery({ text, k: k === DEFAULT_K ? '' : k, dicts: ids.length === dicts.length ? '' : ids.join(',') });
    if (!text) { setContent(out, errorBox(new Error('Enter some text to analyse.'))); return; }
    if (!ids.length) { setContent(out, errorBox(new Error('Tick at least one dictionary.'))); return; }
    const my = ++requestNo;
    form.runButton.disabled = true;
    setContent(out, loading('Running the model…'));
    try {
      const res = await api.activations({ text, dictionaries: ids, top_k: k });
      if (ctx.alive() && my === requestNo) setContent(out, analysisResult(res, q.get('shade'), form.text, prefixes, ctx));
    } catch (err) {
      if (ctx.alive() && my === requestNo) setContent(out, errorBox(err));
    } finally { form.runButton.disabled = false; }
  }

  form.form.addEventListener('submit', (e) => { e.preventDefault(); run(); });
  form.text.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } });
  if (q.get('text')) await run({ updateUrl: false });
}
