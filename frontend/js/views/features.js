// Feature table of one dictionary: sortable columns, filters (density range, max activation, score,
// dead/pruned), text search over labels/explanations/top tokens, pagination, keyboard navigation
// (arrows or j/k to move, Enter to open, / to search), and CSV export of the filtered result.
// Every bit of state lives in the URL query so a filtered view can be shared.

import { api } from '../api.js';
import { h, fmt, fmtDensity, loading, errorBox, setContent, debounce, download, csv } from '../dom.js';
import { featureHash, featuresHash } from '../router.js';
import { displayToken } from '../tokens.js';

const SORTABLE = { index: 'asc', density: 'desc', max_activation: 'desc', score: 'desc' };
const PAGE_SIZES = [25, 50, 100, 200];
const EXPORT_CAP = 20000; // rows fetched at most for a CSV export
const EXPORT_PAGE = 500; // the API's largest page

// URL query keys -> API parameters (filters the API applies server-side).
const FILTER_KEYS = ['q', 'min_density', 'max_density', 'min_max_activation', 'max_max_activation', 'min_score', 'dead', 'pruned'];

function readState(query) {
  const sort = SORTABLE[query.get('sort')] ? query.get('sort') : 'index';
  const order = query.get('order') === 'asc' || query.get('order') === 'desc' ? query.get('order') : SORTABLE[sort];
  const limit = PAGE_SIZES.includes(Number(query.get('limit'))) ? Number(query.get('limit')) : 50;
  const offset = Math.max(0, Math.floor(Number(query.get('offset')) || 0));
  const state = { sort, order, limit, offset };
  for (const key of FILTER_KEYS) state[key] = query.get(key) ?? '';
  return state;
}

// Filters applied in the browser when the server does not offer them (read from its OpenAPI
// document): all matching rows are fetched (up to CLIENT_SCAN_CAP) and filtered here.
const CLIENT_FILTERS = {
  min_max_activation: (it, v) => it.max_activation >= v,
  max_max_activation: (it, v) => it.max_activation <= v,
  min_score: (it, v) => it.score !== null && it.score >= v,
};
const CLIENT_SCAN_CAP = 20000;

function apiParams(state, serverKeys) {
  const params = { sort: state.sort, order: state.order, offset: state.offset, limit: state.limit };
  for (const key of FILTER_KEYS) {
    if (state[key] === '') continue;
    if (key in CLIENT_FILTERS && serverKeys && !serverKeys.has(key)) continue;
    params[key] = state[key];
  }
  return params;
}

function urlQuery(state) {
  const q = { ...state };
  if (q.offset === 0) delete q.offset;
  if (q.limit === 50) delete q.limit;
  if (q.sort === 'index' && q.order === 'asc') { delete q.sort; delete q.order; }
  return q;
}

const COLUMNS = [
  { key: 'index', label: 'Feature', sort: 'index', cls: '' },
  { key: 'label', label: 'Label', cls: 'wide' },
  { key: 'density', label: 'Density', sort: 'density', cls: 'num', title: 'Share of corpus tokens where the feature fires' },
  { key: 'max_activation', label: 'Max act.', sort: 'max_activation', cls: 'num' },
  { key: 'mean_activation', label: 'Mean act.', cls: 'num', title: 'Mean activation over the tokens where it fires' },
  { key: 'score', label: 'Score', sort: 'score', cls: 'num', title: 'Best explanation score' },
  { key: 'top_tokens', label: 'Top tokens', cls: 'tokens-col' },
  { key: 'flags', label: 'Flags', cls: '' },
];

function featureName(dict, item) {
  return item.name || `${dict.display_prefix || ''}${item.index}`;
}

function flagBadges(item) {
  return [item.dead ? h('span', { class: 'badge dead' }, 'dead') : null,
    item.pruned ? h('span', { class: 'badge pruned' }, 'pruned') : null];
}

function topTokenChips(text) {
  const toks = (text || '').split(' ').filter((t) => t !== '').slice(0, 8);
  return toks.map((t) => h('span', { class: 'chip' }, displayToken(t)));
}

export async function render(root, route, ctx) {
  const dicts = await api.dictionaries();
  if (!ctx.alive()) return;
  if (!dicts.length) {
    root.append(h('h1', {}, 'Features'), h('p', { class: 'empty' }, 'No dictionary is ready in this store yet.'));
    return;
  }
  const dictId = route.params.dictionary;
  if (!dictId) { ctx.redirect(featuresHash(dicts[0].id)); return; }
  const dict = dicts.find((d) => d.id === dictId);
  if (!dict) {
    root.append(h('h1', {}, 'Features'), errorBox(new Error(`No dictionary named "${dictId}". Pick one from the list below.`)),
      h('ul', {}, dicts.map((d) => h('li', {}, h('a', { href: featuresHash(d.id) }, d.id)))));
    return;
  }

  const serverKeys = await api.featureListParams(); // null when unknown: send every filter
  if (!ctx.alive()) return;
  let state = readState(route.query);
  let page = null;
  let selected = 0;
  let requestNo = 0;

  // --- controls -------------------------------------------------------------------------------
  const dictSelect = h('select', { 'aria-label': 'Dictionary', on: { change: (e) => ctx.navigate(featuresHash(e.target.value)) } },
    dicts.map((d) => h('option', { value: d.id, selected: d.id === dict.id }, `${d.id} (${d.hook_name}, ${d.d_sae})`)));
  const search = h('input', { type: 'search', placeholder: 'Search labels, explanations, top tokens  ( / )', value: state.q, 'aria-label': 'Search features', class: 'search' });
  const numInput = (key, placeholder, title) => h('input', { type: 'text', inputmode: 'decimal', size: 7, placeholder, title, value: state[key], dataset: { key }, class: 'num-input', 'aria-label': title });
  const inputs = {
    min_density: numInput('min_density', 'min', 'Minimum firing density: a fraction (1e-4) or a percentage (0.01%)'),
    max_density: numInput('max_density', 'max', 'Maximum firing density: a fraction (0.1) or a percentage (10%)'),
    min_max_activation: numInput('min_max_activation', 'min', 'Minimum max activation'),
    max_max_activation: numInput('max_max_activation', 'max', 'Maximum max activation'),
    min_score: numInput('min_score', 'min', 'Minimum explanation score'),
  };
  const triSelect = (key, label) => h('select', { 'aria-label': label, dataset: { key } },
    h('option', { value: '', selected: state[key] === '' }, `${label}: any`),
    h('option', { value: 'false', selected: state[key] === 'false' }, `not ${label}`),
    h('option', { value: 'true', selected: state[key] === 'true' }, `only ${label}`));
  const deadSelect = triSelect('dead', 'dead');
  const prunedSelect = triSelect('pruned', 'pruned');
  const status = h('span', { class: 'muted', 'aria-live': 'polite' });
  const exportButton = h('button', { type: 'button', title: `Download the filtered features as CSV (at most ${EXPORT_CAP} rows)` }, 'Export CSV');
  const resetButton = h('button', { type: 'button', class: 'secondary' }, 'Reset filters');

  const tableHost = h('div', { class: 'table-wrap' });
  const pager = h('div', { class: 'pager' });

  root.append(
    h('div', { class: 'page-head' },
      h('h1', {}, 'Features ', h('code', {}, dict.id)),
      h('span', { class: 'muted' }, `${dict.kind} · ${dict.architecture} · ${dict.hook_name} · ${fmt(dict.d_sae)} features`)),
    h('div', { class: 'toolbar' }, dictSelect, search),
    h('div', { class: 'toolbar filters' },
      h('label', {}, 'density ', inputs.min_density, ' – ', inputs.max_density),
      h('label', {}, 'max act. ', inputs.min_max_activation, ' – ', inputs.max_max_activation),
      h('label', {}, 'score ≥ ', inputs.min_score),
      deadSelect, prunedSelect, resetButton, exportButton),
    h('p', { class: 'hint muted small' }, 'Click a column header to sort. Keys: ↑/↓ or j/k move, Enter opens, ←/→ change page, / searches.'),
    status, tableHost, pager);

  // --- data -----------------------------------------------------------------------------------
  function commit({ resetOffset = true } = {}) {
    if (resetOffset) state.offset = 0;
    ctx.setQuery(urlQuery(state));
    load();
  }

  async function load() {
    const myRequest = ++requestNo;
    status.textContent = 'Loading…';
    tableHost.classList.add('stale');
    try {
      const result = await fetchPage(state.offset, state.limit);
      if (!ctx.alive() || myRequest !== requestNo) return;
      page = result;
      selected = Math.min(selected, Math.max(0, page.items.length - 1));
      drawTable();
      status.textContent = (page.total === 0 ? 'No feature matches these filters.'
        : `${fmt(page.offset + 1)}–${fmt(page.offset + page.items.length)} of ${fmt(page.total)} features`) +
        (page.truncated ? ` (filtered in the browser among the first ${fmt(page.scanned)} only)` : '');
    } catch (err) {
      if (!ctx.alive() || myRequest !== requestNo) return;
      setContent(tableHost, errorBox(err));
      status.textContent = '';
      pager.replaceChildren();
    } finally {
      tableHost.classList.remove('stale');
    }
  }

  // --- client-side filters (only where the server lacks them) ----------------------------------
  let scanCache = { key: null, rows: null, truncated: false };
  function activeClientFilters() {
    if (!serverKeys) return [];
    return Object.keys(CLIENT_FILTERS).filter((k) => !serverKeys.has(k) && state[k] !== '' && Number.isFinite(Number(state[k])))
      .map((k) => [CLIENT_FILTERS[k], Number(state[k])]);
  }
  async function scanAll() {
    const base = apiParams(state, serverKeys);
    delete base.offset; delete base.limit;
    const key = JSON.stringify(base);
    if (scanCache.key === key) return scanCache;
    const rows = [];
    let total = Infinity;
    for (let offset = 0; offset < total && offset < CLIENT_SCAN_CAP; offset += EXPORT_PAGE) {
      status.textContent = `Scanning features ${fmt(offset)}…`;
      const page = await api.features(dict.id, { ...base, offset, limit: EXPORT_PAGE });
      total = page.total;
      rows.push(...page.items);
      if (!page.items.length) break;
    }
    scanCache = { key, rows, truncated: total > rows.length };
    return scanCache;
  }
  async function fetchPage(offset, limit) {
    const filters = activeClientFilters();
    if (!filters.length) return api.features(dict.id, { ...apiParams(state, serverKeys), offset, limit });
    const scan = await scanAll();
    const rows = scan.rows.filter((it) => filters.every(([fn, v]) => fn(it, v)));
    return { total: rows.length, offset, limit, items: rows.slice(offset, offset + limit), scanned: scan.rows.length, truncated: scan.truncated };
  }

  function sortBy(key) {
    if (state.sort === key) state.order = state.order === 'asc' ? 'desc' : 'asc';
    else { state.sort = key; state.order = SORTABLE[key]; }
    commit();
  }

  function drawTable() {
    const head = h('tr', {}, COLUMNS.map((c) => {
      if (!c.sort) return h('th', { class: c.cls, title: c.title }, c.label);
      const active = state.sort === c.sort;
      return h('th', {
        class: `${c.cls} sortable${active ? ' sorted' : ''}`,
        title: c.title ? `${c.title} — click to sort` : 'Click to sort',
        'aria-sort': active ? (state.order === 'asc' ? 'ascending' : 'descending') : 'none',
        dataset: { sort: c.sort },
      }, h('button', { type: 'button', class: 'th-button', on: { click: () => sortBy(c.sort) } },
        c.label, h('span', { class: 'sort-arrow' }, active ? (state.order === 'asc' ? ' ▲' : ' ▼') : ' ↕')));
    }));
    const rows = page.items.map((item, i) => h('tr', {
      class: `${i === selected ? 'selected' : ''}${item.dead ? ' is-dead' : ''}`,
      dataset: { index: String(item.index), row: String(i) },
      on: { click: (e) => { if (e.target.closest('a')) return; selected = i; markSelected(); } },
    },
    h('td', {}, h('a', { href: featureHash(dict.id, item.index), class: 'feature-link' }, featureName(dict, item))),
    h('td', { class: 'wide' }, item.label || h('span', { class: 'muted' }, '—')),
    h('td', { class: 'num' }, fmtDensity(item.density)),
    h('td', { class: 'num' }, fmt(item.max_activation)),
    h('td', { class: 'num' }, fmt(item.mean_activation)),
    h('td', { class: 'num' }, fmt(item.score)),
    h('td', { class: 'tokens-col' }, topTokenChips(item.top_tokens)),
    h('td', {}, flagBadges(item))));
    setContent(tableHost, h('table', { class: 'data features-table', 'aria-label': `Features of ${dict.id}` },
      h('thead', {}, head), h('tbody', {}, rows)));
    drawPager();
  }

  function drawPager() {
    const { total, offset, limit } = { total: page.total, offset: state.offset, limit: state.limit };
    const pages = Math.max(1, Math.ceil(total / limit));
    const current = Math.floor(offset / limit) + 1;
    const go = (p) => { state.offset = (p - 1) * limit; selected = 0; commit({ resetOffset: false }); };
    const sizeSelect = h('select', { 'aria-label': 'Rows per page', on: { change: (e) => { state.limit = Number(e.target.value); commit(); } } },
      PAGE_SIZES.map((n) => h('option', { value: n, selected: n === limit }, `${n} / page`)));
    setContent(pager,
      h('button', { type: 'button', disabled: current <= 1, on: { click: () => go(1) }, title: 'First page' }, '«'),
      h('button', { type: 'button', disabled: current <= 1, on: { click: () => go(current - 1) }, class: 'prev-page' }, '‹ Prev'),
      h('span', {}, ` page ${current} of ${pages} `),
      h('button', { type: 'button', disabled: current >= pages, on: { click: () => go(current + 1) }, class: 'next-page' }, 'Next ›'),
      h('button', { type: 'button', disabled: current >= pages, on: { click: () => go(pages) }, title: 'Last page' }, '»'),
      sizeSelect);
    pager.goPage = (delta) => { const p = current + delta; if (p >= 1 && p <= pages) go(p); };
  }

  function markSelected() {
    for (const tr of tableHost.querySelectorAll('tbody tr')) tr.classList.toggle('selected', Number(tr.dataset.row) === selected);
    const row = tableHost.querySelector('tbody tr.selected');
    if (row) row.scrollIntoView({ block: 'nearest' });
  }

  async function exportCsv() {
    exportButton.disabled = true;
    const rows = [['dictionary_id', 'index', 'name', 'label', 'density', 'max_activation', 'mean_activation', 'score', 'dead', 'pruned', 'top_tokens']];
    try {
      let offset = 0;
      let total = Infinity;
      while (offset < total && offset < EXPORT_CAP) {
        exportButton.textContent = `Exporting ${fmt(offset)}…`;
        const result = await fetchPage(offset, Math.min(EXPORT_PAGE, EXPORT_CAP - offset));
        total = result.total;
        for (const it of result.items) {
          rows.push([it.dictionary_id, it.index, featureName(dict, it), it.label, it.density, it.max_activation, it.mean_activation, it.score, it.dead, it.pruned, it.top_tokens]);
        }
        if (!result.items.length) break;
        offset += result.items.length;
      }
      download(`${dict.id}-features.csv`, csv(rows));
      status.textContent = `Exported ${fmt(rows.length - 1)} features${total > EXPORT_CAP ? ` (capped at ${fmt(EXPORT_CAP)} of ${fmt(total)})` : ''}.`;
    } catch (err) {
      tableHost.before(errorBox(err, 'CSV export'));
    } finally {
      exportButton.disabled = false;
      exportButton.textContent = 'Export CSV';
    }
  }

  // --- events ---------------------------------------------------------------------------------
  const onSearch = debounce(() => { state.q = search.value.trim(); commit(); }, 250);
  search.addEventListener('input', onSearch);
  // One debounced commit reads every filter box, so quick edits to two boxes both take effect.
  const onFilter = debounce(() => {
    for (const [key, input] of Object.entries(inputs)) {
      let value = input.value.trim();
      // Densities are shown as percentages: accept "0.5%" as well as the fraction 0.005.
      if (key.endsWith('_density') && value.endsWith('%') && Number.isFinite(Number(value.slice(0, -1)))) {
        value = String(Number(value.slice(0, -1)) / 100);
      }
      state[key] = value;
    }
    commit();
  }, 400);
  for (const input of Object.values(inputs)) input.addEventListener('input', onFilter);
  for (const sel of [deadSelect, prunedSelect]) sel.addEventListener('change', () => { state[sel.dataset.key] = sel.value; commit(); });
  resetButton.addEventListener('click', () => { ctx.navigate(featuresHash(dict.id)); });
  exportButton.addEventListener('click', exportCsv);

  function onKey(e) {
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    const tag = (e.target.tagName || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || tag === 'select') {
      if (e.key === 'Escape') e.target.blur();
      if (e.key === 'Enter' && e.target === search) { e.preventDefault(); search.blur(); }
      return;
    }
    if (!page) return;
    const n = page.items.length;
    if (e.key === 'ArrowDown' || e.key === 'j') { selected = Math.min(n - 1, selected + 1); markSelected(); e.preventDefault(); }
    else if (e.key === 'ArrowUp' || e.key === 'k') { selected = Math.max(0, selected - 1); markSelected(); e.preventDefault(); }
    else if (e.key === 'Enter' && n && tag !== 'a' && tag !== 'button') { e.preventDefault(); ctx.navigate(featureHash(dict.id, page.items[selected].index)); }
    else if (e.key === 'ArrowRight' || e.key === 'n') { pager.goPage?.(1); e.preventDefault(); }
    else if (e.key === 'ArrowLeft' || e.key === 'p') { pager.goPage?.(-1); e.preventDefault(); }
    else if (e.key === '/') { e.preventDefault(); search.focus(); search.select(); }
  }
  document.addEventListener('keydown', onKey);
  ctx.onCleanup(() => document.removeEventListener('keydown', onKey));

  tableHost.append(loading('Loading features…'));
  await load();
}
