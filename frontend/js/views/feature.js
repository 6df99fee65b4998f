// Feature page (#/feature/<dictionary>/<index>, shareable): label and explanations with scores,
// density and activation statistics, the activation histogram with quantile interval edges, top
// examples then interval groups with tokens shaded by activation, logit effects, nearest features and
// best matches in other dictionaries, which attention heads the decoder direction lives in (attn.hook_z
// dictionaries), and a "try your own text" box (live activations and ablation).

import { api } from '../api.js';
import { h, append, fmt, fmtDensity, loading, errorBox, setContent } from '../dom.js';
import { featureHash, featuresHash, mapHash, buildHash } from '../router.js';
import { renderTokens, argmaxOf, windowAround, displayToken, shadeLegend } from '../tokens.js';
import { plot, histogramTrace, COLOURS } from '../plots.js';

const SHOWN_PER_GROUP = { top: 12, default: 6 };

function name(dict, index) {
  return `${dict?.display_prefix || ''}${index}`;
}

function statBlock(pairs) {
  return h('dl', { class: 'stats' }, pairs.map(([k, v, title]) => h('div', { class: 'stat', title },
    h('dt', {}, k), h('dd', {}, v))));
}

function explanationsBlock(detail) {
  if (!detail.explanations.length) return null;
  return h('section', { class: 'explanations' },
    h('h3', {}, 'Explanations'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'data compact' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Explanation'), h('th', {}, 'Method'),
        h('th', { class: 'num', title: 'Correlation of simulated vs true activations on top and random examples' }, 'top+random'),
        h('th', { class: 'num' }, 'top'), h('th', { class: 'num' }, 'random'),
        h('th', { class: 'num', title: 'Balanced accuracy: does the explanation pick out the activating fragments?' }, 'detection'),
        h('th', { class: 'num', title: 'Balanced accuracy: does the explanation pick out the activating tokens?' }, 'fuzzing'))),
      h('tbody', {}, detail.explanations.map((e) => h('tr', {},
        h('td', { class: 'wide' }, e.text),
        h('td', {}, e.method, e.explainer ? h('span', { class: 'muted' }, ` (${e.explainer})`) : null),
        scoreCell(e, 'simulation', 'top_and_random', e.score_top_random),
        scoreCell(e, 'simulation', 'top', e.score_top),
        scoreCell(e, 'simulation', 'random', e.score_random),
        scoreCell(e, 'detection', 'balanced_accuracy'),
        scoreCell(e, 'fuzzing', 'balanced_accuracy')))))));
}

/** One score of an explanation: its value, or NaN / failed with the reason on hover; the scorer's version in the title. */
function scoreCell(e, scorer, variant, fallback = null) {
  const s = (e.scores || []).find((x) => x.scorer === scorer && x.variant === variant);
  if (!s) return h('td', { class: 'num' }, fmt(fallback));
  const text = s.value !== null ? fmt(s.value) : (s.failed ? 'failed' : 'NaN');
  return h('td', { class: `num${s.value === null ? ' muted' : ''}`, title: `${s.version}${s.note ? `: ${s.note}` : ''} (n=${s.n})` }, text);
}

async function activationHistogram(el, detail) {
  const hist = detail.histogram;
  if (!hist || !hist.counts || !hist.counts.length) { setContent(el, h('p', { class: 'muted' }, 'No activation histogram (the feature never fires).')); return; }
  const edges = detail.quantile_edges || [];
  const shapes = edges.map((x) => ({ type: 'line', x0: x, x1: x, yref: 'paper', y0: 0, y1: 1, line: { color: '#d62728', width: 1, dash: 'dot' } }));
  await plot(el, [histogramTrace(hist, { name: 'activations', colour: COLOURS[1] })], {
    height: 220, shapes, bargap: 0.02,
    xaxis: { title: { text: 'activation (firing tokens)' } },
    yaxis: { title: { text: 'tokens (log)' }, type: 'log', dtick: 1, exponentformat: 'power' },
    showlegend: false,
    title: { text: edges.length ? 'dotted lines: interval (quantile) edges' : '', font: { size: 10 }, x: 0.98, xanchor: 'right' },
  });
}

function logitTable(title, rows, cls) {
  return h('div', { class: 'logit-table' },
    h('h4', {}, title),
    rows.length ? h('table', { class: `data compact ${cls}` }, h('tbody', {}, rows.map((r) => h('tr', {},
      h('td', { class: 'tokcell' }, h('span', { class: 'tok chip', title: `token id ${r.token_id}` }, displayToken(r.token))),
      h('td', { class: `num ${r.value >= 0 ? 'pos' : 'neg'}` }, fmt(r.value, 3))))))
      : h('p', { class: 'muted' }, '—'));
}

async function logitsHistogram(el, detail) {
  const hist = detail.logits_histogram;
  if (!hist || !hist.counts || !hist.counts.length) { el.remove(); return; }
  await plot(el, [histogramTrace(hist, { name: 'logit effect', colour: COLOURS[0] })], {
    height: 160, bargap: 0.02, margin: { t: 8, b: 36 },
    xaxis: { title: { text: 'logit effect over the vocabulary' } }, yaxis: { title: { text: 'tokens' } }, showlegend: false,
  });
}

/** Per-head share of the decoder norm (attn.hook_z dictionaries): one bar per head, null otherwise. */
function headSharesBlock(detail) {
  const shares = detail.head_norm_share;
  if (!Array.isArray(shares) || !shares.length) return null;
  const best = shares.reduce((b, v, i) => (v > shares[b] ? i : b), 0);
  return h('section', { class: 'card head-shares' },
    h('h3', { title: "Each head's share of the squared norm of the decoder direction (sums to 1)" }, 'Heads'),
    h('table', { class: 'data compact head-share-list' }, h('tbody', {}, shares.map((v, i) => h('tr', { class: i === best ? 'best' : null },
      h('td', {}, `H${i}`),
      h('td', { class: 'wide' }, h('div', {
        class: 'head-share-bar',
        title: `head ${i}: ${(100 * v).toFixed(1)}% of the decoder norm²`,
        style: { width: `${Math.max(0, Math.min(1, v)) * 100}%`, height: '0.8em', background: COLOURS[0] },
      })),
      h('td', { class: 'num' }, `${(100 * v).toFixed(1)}%`))))));
}

function exampleRow(ex, detail, opts = {}) {
  const max = detail.max_activation > 0 ? detail.max_activation : Math.max(1e-9, ex.max_activation);
  const centre = argmaxOf(ex.activations, true);
  const win = windowAround(ex.tokens.length, centre, opts.before ?? 28, opts.after ?? 12);
  let expanded = false;
  const tokensHost = h('div', { class: 'example-tokens' });
  const draw = () => setContent(tokensHost, renderTokens(ex.tokens, ex.activations, {
    max, bos: true, window: expanded ? null : win,
  }));
  draw();
  const toggle = h('button', { type: 'button', class: 'link-button', title: 'Show the whole context',
    on: { click: () => { expanded = !expanded; toggle.textContent = expanded ? '−' : '+'; draw(); } } }, '+');
  return h('div', { class: 'example', dataset: { group: ex.group, rank: String(ex.rank) } },
    h('span', { class: 'example-max', title: `max activation in this context; document ${ex.doc_id}` }, fmt(ex.max_activation, 3)),
    toggle, tokensHost);
}

function exampleGroups(host, detail, examples) {
  if (!examples.length) { setContent(host, h('p', { class: 'muted' }, 'No stored examples (dead features have none).')); return; }
  const byGroup = new Map();
  for (const ex of examples) {
    if (!byGroup.has(ex.group)) byGroup.set(ex.group, []);
    byGroup.get(ex.group).push(ex);
  }
  // The server lists groups in reading order (top, intervals from high to low, random).
  const ordered = detail.example_groups.map((g) => g.group).filter((g) => byGroup.has(g));
  for (const g of byGroup.keys()) if (!ordered.includes(g)) ordered.push(g);
  const sections = ordered.map((g) => {
    const list = byGroup.get(g).slice().sort((a, b) => a.rank - b.rank);
    const info = detail.example_groups.find((x) => x.group === g);
    const label = g === 'top' ? 'Top activations' : (info?.label || list[0].group_label || g);
    const limit = SHOWN_PER_GROUP[g] ?? SHOWN_PER_GROUP.default;
    const body = h('div', { class: 'examples' });
    const drawList = (all) => {
      setContent(body, (all ? list : list.slice(0, limit)).map((ex) => exampleRow(ex, detail)));
      if (!all && list.length > limit) {
        body.append(h('button', { type: 'button', class: 'link-button more', on: { click: () => drawList(true) } }, `show all ${list.length}`));
      }
    };
    drawList(false);
    return h('section', { class: 'example-group', dataset: { group: g } },
      h('h4', {}, label, h('span', { class: 'muted' }, ` · ${info?.count ?? list.length} examples`)), body);
  });
  setContent(host, sections);
}

/** The live activations of the feature on a text, shaded relative to its corpus maximum. */
function liveActivations(res, detail) {
  const max = detail.max_activation > 0 ? detail.max_activation : Math.max(1e-9, res.max_activation);
  return [h('p', { class: 'small' }, `max activation on this text: `, h('strong', {}, fmt(res.max_activation, 4)),
    ` (${detail.max_activation > 0 ? `${fmt(100 * res.max_activation / detail.max_activation, 1)}% of the corpus max` : 'feature never fired on the corpus'})`),
  renderTokens(res.tokens, res.activations, { max, bos: true, multiline: true, className: 'try-tokens' })];
}

/** The per-token effect of ablating the feature and the next-token log-probabilities it moved most. */
function ablationResult(res) {
  const maxAbs = Math.max(1e-9, ...res.delta_logprob.map(Math.abs));
  return [
    h('p', { class: 'small' }, 'Effect of removing the feature on log p(token | prefix): orange tokens were predicted better with the feature (clean − ablated > 0), blue ones worse.'),
    renderTokens(res.tokens, res.delta_logprob.map((d) => -d), { max: maxAbs, bos: true, markMax: false, valueName: 'clean − ablated log p', className: 'ablate-tokens',
      titleFn: (i) => (res.activations?.length ? `feature ${fmt(res.activations[i], 3)}` : '') }),
    res.top_moved.length ? h('div', { class: 'moved' }, h('h4', {}, 'Next-token log-probabilities moved most (ablated − clean)'),
      res.top_moved.slice(0, 12).map((m) => h('span', { class: `chip ${m.delta < 0 ? 'pos' : 'neg'}`, title: `token id ${m.token_id}` }, `${displayToken(m.token)} ${fmt(m.delta, 3)}`)))
      : h('p', { class: 'muted small' }, 'The feature does not fire on this text, so nothing moved.')];
}

function tryYourOwn(dict, detail) {
  const text = h('textarea', { rows: 3, placeholder: 'Type or paste text to see where this feature fires…', 'aria-label': 'Text to test the feature on', class: 'try-text' });
  const runButton = h('button', { type: 'submit' }, 'Run');
  const ablateButton = h('button', { type: 'button', class: 'secondary', title: 'Remove this feature and show how each next-token log-probability changes' }, 'Ablate');
  const out = h('div', { class: 'try-result', 'aria-live': 'polite' });
  const form = h('form', { class: 'try-form' }, text, h('div', { class: 'row' }, runButton, ablateButton,
    h('span', { class: 'muted small' }, 'Shaded relative to the feature\'s corpus maximum; hover a token for its value.')), out);
  // Send the text with `request`, show the answer with `show`; both buttons wait meanwhile.
  const act = async (busyText, request, show) => {
    if (!text.value) { setContent(out, errorBox(new Error('Enter some text first.'))); return; }
    runButton.disabled = true; ablateButton.disabled = true;
    setContent(out, loading(busyText));
    try {
      setContent(out, show(await request({ text: text.value, dictionary: dict.id, index: detail.index })));
    } catch (err) {
      setContent(out, errorBox(err));
    } finally { runButton.disabled = false; ablateButton.disabled = false; }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); act('Running the model…', api.featureOnText, (res) => liveActivations(res, detail)); });
  ablateButton.addEventListener('click', () => act('Ablating…', api.ablate, ablationResult));
  return h('section', { class: 'card try-card' }, h('h3', {}, 'Try your own text'), form);
}

function neighboursBlock(dict, detail, prefixes) {
  return h('section', { class: 'neighbours' },
    h('h3', {}, 'Nearest features', h('span', { class: 'muted small' }, ' (decoder cosine)')),
    detail.neighbours.length ? h('table', { class: 'data compact neighbour-list' }, h('tbody', {}, detail.neighbours.map((n) => h('tr', {},
      h('td', {}, h('a', { href: featureHash(dict.id, n.index) }, name(dict, n.index))),
      h('td', { class: 'wide' }, n.label || ''),
      h('td', { class: 'num' }, fmt(n.cosine, 3)))))) : h('p', { class: 'muted' }, '—'),
    h('h3', {}, 'Best matches in other dictionaries'),
    detail.matches.length ? h('table', { class: 'data compact match-list' }, h('tbody', {}, detail.matches.map((m) => h('tr', {},
      h('td', {}, h('a', { href: featureHash(m.dictionary_id, m.index) }, `${prefixes.get(m.dictionary_id) ?? ''}${m.index}`)),
      h('td', { class: 'wide' }, h('span', { class: 'muted small' }, `${m.dictionary_id} `), m.label || ''),
      h('td', { class: 'num' }, fmt(m.cosine, 3)))))) : h('p', { class: 'muted' }, 'No other dictionary at this hook point.'));
}

/** Links to the previous and next features, the table, the map and the steering playground. */
function featureNav(dict, index, detail) {
  const steerStrength = detail.max_activation > 0 ? Number((detail.max_activation * 2).toPrecision(2)) : 5;
  return h('nav', { class: 'feature-nav' },
    index > 0 ? h('a', { href: featureHash(dict.id, index - 1), title: 'Previous feature ([)' }, `‹ ${name(dict, index - 1)}`) : null,
    index < dict.d_sae - 1 ? h('a', { href: featureHash(dict.id, index + 1), title: 'Next feature (])' }, `${name(dict, index + 1)} ›`) : null,
    h('a', { href: featuresHash(dict.id) }, 'all features'),
    h('a', { href: mapHash(dict.hook_name) }, 'map'),
    h('a', { href: buildHash(['steer'], { f: `${dict.id}:${index}:add:${steerStrength}` }) }, 'steer with it'));
}

/** Title, navigation, label with flags, statistics and explanations. */
function featureSummary(dict, index, detail) {
  return [
    h('div', { class: 'page-head feature-head' },
      h('h1', {}, name(dict, index), ' ', h('span', { class: 'muted' }, dict.id)),
      featureNav(dict, index, detail)),
    h('p', { class: 'feature-label' }, detail.label || h('span', { class: 'muted' }, 'no label'),
      detail.dead ? h('span', { class: 'badge dead' }, 'dead') : null,
      detail.pruned ? h('span', { class: 'badge pruned' }, 'pruned') : null),
    statBlock([
      ['density', fmtDensity(detail.density), 'Share of corpus tokens where it fires'],
      ['max activation', fmt(detail.max_activation, 4)],
      ['mean activation', fmt(detail.mean_activation, 4), 'Mean over the tokens where it fires'],
      ['decoder norm', fmt(detail.decoder_norm, 4)],
      ['score', fmt(detail.score), 'Best explanation score'],
      ['hook point', dict.hook_name],
    ]),
    explanationsBlock(detail)];
}

/** The two-column body; hosts: {histEl, logitsHistEl, examplesHost}, filled once the page is shown. */
function featureGrid(dict, detail, prefixes, hosts) {
  return h('div', { class: 'feature-grid' },
    h('div', { class: 'col-side' },
      h('section', { class: 'card' }, h('h3', {}, 'Activation histogram'), hosts.histEl),
      h('section', { class: 'card' }, h('h3', {}, 'Logit effects'),
        h('div', { class: 'logit-tables' }, logitTable('promoted', detail.logits_top, 'logits-top'), logitTable('suppressed', detail.logits_bottom, 'logits-bottom')),
        hosts.logitsHistEl),
      headSharesBlock(detail),
      h('section', { class: 'card' }, neighboursBlock(dict, detail, prefixes))),
    h('div', { class: 'col-main' },
      tryYourOwn(dict, detail),
      h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h3', {}, 'Examples'),
        detail.max_activation > 0 ? shadeLegend(detail.max_activation) : null), hosts.examplesHost)));
}

/** Keys [ and ] open the previous and next feature. */
function wireFeatureKeys(dict, index, ctx) {
  const onKey = (e) => {
    const tag = (e.target.tagName || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === '[' && index > 0) ctx.navigate(featureHash(dict.id, index - 1));
    if (e.key === ']' && index < dict.d_sae - 1) ctx.navigate(featureHash(dict.id, index + 1));
  };
  document.addEventListener('keydown', onKey);
  ctx.onCleanup(() => document.removeEventListener('keydown', onKey));
}

export async function render(root, route, ctx) {
  const dictId = route.params.dictionary;
  const index = Number(route.params.index);
  root.append(loading(`Loading feature ${index} of ${dictId}…`));
  if (!Number.isInteger(index) || index < 0) throw new Error(`"${route.params.index}" is not a feature index (a whole number ≥ 0).`);
  // one request for the record and every example (pre-rendered at publish time)
  const [dict, page, dicts] = await Promise.all([api.dictionary(dictId), api.featurePage(dictId, index), api.dictionaries()]);
  const detail = page.feature;
  const prefixes = new Map(dicts.map((d) => [d.id, d.display_prefix || '']));
  if (!ctx.alive()) return;
  root.replaceChildren();
  document.title = `${name(dict, index)} · ${dict.id} · saescope`;
  ctx.onCleanup(() => { document.title = 'saescope'; });

  const hosts = {
    histEl: h('div', { class: 'plot act-hist' }),
    logitsHistEl: h('div', { class: 'plot logits-hist' }),
    examplesHost: h('div', { class: 'example-groups' }),
  };
  append(root, featureSummary(dict, index, detail));
  root.append(featureGrid(dict, detail, prefixes, hosts));
  wireFeatureKeys(dict, index, ctx);

  const tasks = [
    activationHistogram(hosts.histEl, detail).catch((err) => setContent(hosts.histEl, errorBox(err, 'Histogram'))),
    logitsHistogram(hosts.logitsHistEl, detail).catch((err) => setContent(hosts.logitsHistEl, errorBox(err, 'Histogram'))),
  ];
  try { exampleGroups(hosts.examplesHost, detail, page.examples); } catch (err) { setContent(hosts.examplesHost, errorBox(err, 'Examples')); }
  await Promise.all(tasks);
}
