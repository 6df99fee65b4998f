// The feature table's DOM: the sortable header, one row per feature, and the pager. Builds
// elements from a page of the API's answer and calls back for sort, select and page changes; it
// holds no state and sends no request.

import { h, fmt, fmtDensity } from '../../dom.js';
import { featureHash } from '../../router.js';
import { displayToken } from '../../tokens.js';
import { PAGE_SIZES } from './query.js';

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

/** A feature's display name: its own name, else the dictionary's prefix and its index. */
export function featureName(dict, item) {
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

function sortArrow(active, order) {
  if (!active) return ' ↕';
  return order === 'asc' ? ' ▲' : ' ▼';
}

function headerCell(column, state, onSort) {
  if (!column.sort) return h('th', { class: column.cls, title: column.title }, column.label);
  const active = state.sort === column.sort;
  return h('th', {
    class: `${column.cls} sortable${active ? ' sorted' : ''}`,
    title: column.title ? `${column.title} — click to sort` : 'Click to sort',
    'aria-sort': active ? (state.order === 'asc' ? 'ascending' : 'descending') : 'none',
    dataset: { sort: column.sort },
  }, h('button', { type: 'button', class: 'th-button', on: { click: () => onSort(column.sort) } },
    column.label, h('span', { class: 'sort-arrow' }, sortArrow(active, state.order))));
}

function featureRow(dict, item, i, { selected, onSelect }) {
  return h('tr', {
    class: `${i === selected ? 'selected' : ''}${item.dead ? ' is-dead' : ''}`,
    dataset: { index: String(item.index), row: String(i) },
    on: { click: (e) => { if (!e.target.closest('a')) onSelect(i); } },
  },
  h('td', {}, h('a', { href: featureHash(dict.id, item.index), class: 'feature-link' }, featureName(dict, item))),
  h('td', { class: 'wide' }, item.label || h('span', { class: 'muted' }, '—')),
  h('td', { class: 'num' }, fmtDensity(item.density)),
  h('td', { class: 'num' }, fmt(item.max_activation)),
  h('td', { class: 'num' }, fmt(item.mean_activation)),
  h('td', { class: 'num' }, fmt(item.score)),
  h('td', { class: 'tokens-col' }, topTokenChips(item.top_tokens)),
  h('td', {}, flagBadges(item)));
}

/** The table of one page of features. handlers: {selected, onSort(key), onSelect(row)}. */
export function featureTable(dict, page, state, handlers) {
  const head = h('tr', {}, COLUMNS.map((c) => headerCell(c, state, handlers.onSort)));
  const rows = page.items.map((item, i) => featureRow(dict, item, i, handlers));
  return h('table', { class: 'data features-table', 'aria-label': `Features of ${dict.id}` },
    h('thead', {}, head), h('tbody', {}, rows));
}

/** Page count and the current page (1-based) of `total` rows shown `limit` at a time from `offset`. */
export function pageNumbers(total, offset, limit) {
  return { pages: Math.max(1, Math.ceil(total / limit)), current: Math.floor(offset / limit) + 1 };
}

/** Pager buttons and the rows-per-page select. handlers: {onPage(page), onLimit(limit)}. */
export function pagerControls(total, offset, limit, { onPage, onLimit }) {
  const { pages, current } = pageNumbers(total, offset, limit);
  const button = (label, page, enabled, attrs = {}) => h('button', { type: 'button', disabled: !enabled, on: { click: () => onPage(page) }, ...attrs }, label);
  const sizeSelect = h('select', { 'aria-label': 'Rows per page', on: { change: (e) => onLimit(Number(e.target.value)) } },
    PAGE_SIZES.map((n) => h('option', { value: n, selected: n === limit }, `${n} / page`)));
  return [
    button('«', 1, current > 1, { title: 'First page' }),
    button('‹ Prev', current - 1, current > 1, { class: 'prev-page' }),
    h('span', {}, ` page ${current} of ${pages} `),
    button('Next ›', current + 1, current < pages, { class: 'next-page' }),
    button('»', pages, current < pages, { title: 'Last page' }),
    sizeSelect,
  ];
}
