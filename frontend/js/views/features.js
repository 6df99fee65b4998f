// Feature table of one dictionary (#/features/<dictionary>?...): sortable columns, filters (density
// range, max activation, score, dead/pruned), text search over labels/explanations/top tokens,
// pagination, keyboard navigation and CSV export. The server sorts, filters and searches; every bit
// of state lives in the URL query so a filtered view can be shared. This module resolves the
// dictionary and keeps the table's state; the DOM, the state's URL/API form, the keys and the
// export live in views/features/.

import { api } from '../api.js';
import { h, loading, errorBox, setContent, debounce, fmt } from '../dom.js';
import { featureHash, featuresHash } from '../router.js';
import { readState, apiParams, urlQuery, toggleSort, filterValue } from './features/query.js';
import { buildControls } from './features/controls.js';
import { featureTable, pagerControls, pageNumbers } from './features/table.js';
import { tableKeyHandler } from './features/keys.js';
import { exportCsv } from './features/export.js';

/** The dictionary the route names; redirects to the first one or explains when there is none. */
function resolveDictionary(root, route, ctx, dicts) {
  if (!dicts.length) {
    root.append(h('h1', {}, 'Features'), h('p', { class: 'empty' }, 'No dictionary is ready in this store yet.'));
    return null;
  }
  const dictId = route.params.dictionary;
  if (!dictId) { ctx.redirect(featuresHash(dicts[0].id)); return null; }
  const dict = dicts.find((d) => d.id === dictId);
  if (!dict) {
    root.append(h('h1', {}, 'Features'), errorBox(new Error(`No dictionary named "${dictId}". Pick one from the list below.`)),
      h('ul', {}, dicts.map((d) => h('li', {}, h('a', { href: featuresHash(d.id) }, d.id)))));
  }
  return dict ?? null;
}

function statusText(page) {
  if (page.total === 0) return 'No feature matches these filters.';
  return `${fmt(page.offset + 1)}–${fmt(page.offset + page.items.length)} of ${fmt(page.total)} features`;
}

/** One dictionary's table: its state, the page shown, the selected row, and the requests. */
class FeatureTable {
  constructor(dict, state, controls, ctx) {
    Object.assign(this, { dict, state, controls, ctx, page: null, selected: 0, requestNo: 0 });
    this.search = controls.search;
  }

  /** Write the state to the URL and load the page it describes. */
  commit({ resetOffset = true } = {}) {
    if (resetOffset) this.state.offset = 0;
    this.ctx.setQuery(urlQuery(this.state));
    this.load();
  }

  async load() {
    const my = ++this.requestNo;
    const { status, tableHost, pager } = this.controls;
    status.textContent = 'Loading…';
    tableHost.classList.add('stale');
    try {
      const page = await api.features(this.dict.id, apiParams(this.state));
      if (!this.ctx.alive() || my !== this.requestNo) return;
      this.show(page);
    } catch (err) {
      if (!this.ctx.alive() || my !== this.requestNo) return;
      setContent(tableHost, errorBox(err));
      status.textContent = '';
      pager.replaceChildren();
    } finally {
      tableHost.classList.remove('stale');
    }
  }

  show(page) {
    this.page = page;
    this.selected = Math.min(this.selected, Math.max(0, page.items.length - 1));
    this.draw();
    this.controls.status.textContent = statusText(page);
  }

  draw() {
    const { tableHost, pager } = this.controls;
    setContent(tableHost, featureTable(this.dict, this.page, this.state, {
      selected: this.selected,
      onSort: (key) => { toggleSort(this.state, key); this.commit(); },
      onSelect: (i) => { this.selected = i; this.markSelected(); },
    }));
    setContent(pager, pagerControls(this.page.total, this.state.offset, this.state.limit, {
      onPage: (p) => this.showPage(p),
      onLimit: (limit) => { this.state.limit = limit; this.commit(); },
    }));
  }

  showPage(p) {
    this.state.offset = (p - 1) * this.state.limit;
    this.selected = 0;
    this.commit({ resetOffset: false });
  }

  /** Move `delta` pages from the current one, if that page exists. */
  goPage(delta) {
    const { pages, current } = pageNumbers(this.page.total, this.state.offset, this.state.limit);
    if (current + delta >= 1 && current + delta <= pages) this.showPage(current + delta);
  }

  move(delta) {
    const n = this.page.items.length;
    this.selected = delta > 0 ? Math.min(n - 1, this.selected + delta) : Math.max(0, this.selected + delta);
    this.markSelected();
  }

  open() {
    this.ctx.navigate(featureHash(this.dict.id, this.page.items[this.selected].index));
  }

  markSelected() {
    const { tableHost } = this.controls;
    for (const tr of tableHost.querySelectorAll('tbody tr')) tr.classList.toggle('selected', Number(tr.dataset.row) === this.selected);
    tableHost.querySelector('tbody tr.selected')?.scrollIntoView({ block: 'nearest' });
  }
}

/** Search box, filter boxes, selects and buttons change the state and reload the table. */
function wireControls(table, controls) {
  const { state, ctx, dict } = table;
  controls.search.addEventListener('input', debounce(() => { state.q = controls.search.value.trim(); table.commit(); }, 250));
  // One debounced commit reads every filter box, so quick edits to two boxes both take effect.
  const onFilter = debounce(() => {
    for (const [key, input] of Object.entries(controls.inputs)) state[key] = filterValue(key, input.value);
    table.commit();
  }, 400);
  for (const input of Object.values(controls.inputs)) input.addEventListener('input', onFilter);
  for (const sel of controls.selects) sel.addEventListener('change', () => { state[sel.dataset.key] = sel.value; table.commit(); });
  controls.resetButton.addEventListener('click', () => { ctx.navigate(featuresHash(dict.id)); });
  controls.exportButton.addEventListener('click', () => exportCsv(dict, state, controls));
  const onKey = tableKeyHandler(table);
  document.addEventListener('keydown', onKey);
  ctx.onCleanup(() => document.removeEventListener('keydown', onKey));
}

export async function render(root, route, ctx) {
  const dicts = await api.dictionaries();
  if (!ctx.alive()) return;
  const dict = resolveDictionary(root, route, ctx, dicts);
  if (!dict) return;
  const state = readState(route.query);
  const controls = buildControls(dicts, dict, state, ctx);
  root.append(...controls.nodes);
  const table = new FeatureTable(dict, state, controls, ctx);
  wireControls(table, controls);
  controls.tableHost.append(loading('Loading features…'));
  await table.load();
}
