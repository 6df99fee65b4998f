// Feature-table state: read from the URL query, written back to it (so a filtered view can be
// shared), and turned into the parameters of the server's feature list, which applies every sort,
// filter and search itself. Plain data in and out; no DOM and no requests here.

const SORTABLE = { index: 'asc', density: 'desc', max_activation: 'desc', score: 'desc' };
export const PAGE_SIZES = [25, 50, 100, 200];
const DEFAULT_LIMIT = 50;

// URL query keys, passed unchanged to the API as its filter parameters.
const FILTER_KEYS = ['q', 'min_density', 'max_density', 'min_max_activation', 'max_max_activation', 'min_score', 'dead', 'pruned'];

/** The table state ({sort, order, limit, offset, ...filters}) a URL query describes. */
export function readState(query) {
  const sort = SORTABLE[query.get('sort')] ? query.get('sort') : 'index';
  const order = query.get('order') === 'asc' || query.get('order') === 'desc' ? query.get('order') : SORTABLE[sort];
  const limit = PAGE_SIZES.includes(Number(query.get('limit'))) ? Number(query.get('limit')) : DEFAULT_LIMIT;
  const offset = Math.max(0, Math.floor(Number(query.get('offset')) || 0));
  const state = { sort, order, limit, offset };
  for (const key of FILTER_KEYS) state[key] = query.get(key) ?? '';
  return state;
}

/** Parameters of GET dictionaries/{id}/features for one page of this state (empty filters left out). */
export function apiParams(state, { offset = state.offset, limit = state.limit } = {}) {
  const params = { sort: state.sort, order: state.order, offset, limit };
  for (const key of FILTER_KEYS) if (state[key] !== '') params[key] = state[key];
  return params;
}

/** The URL query of this state, without the values that are the defaults. */
export function urlQuery(state) {
  const q = { ...state };
  if (q.offset === 0) delete q.offset;
  if (q.limit === DEFAULT_LIMIT) delete q.limit;
  if (q.sort === 'index' && q.order === 'asc') { delete q.sort; delete q.order; }
  return q;
}

/** Sort by `key`: a second click on the sorted column flips the order. */
export function toggleSort(state, key) {
  if (state.sort === key) state.order = state.order === 'asc' ? 'desc' : 'asc';
  else { state.sort = key; state.order = SORTABLE[key]; }
}

/** A filter box's text as the API expects it: densities typed as "0.5%" become the fraction 0.005. */
export function filterValue(key, text) {
  const value = text.trim();
  if (key.endsWith('_density') && value.endsWith('%') && Number.isFinite(Number(value.slice(0, -1)))) {
    return String(Number(value.slice(0, -1)) / 100);
  }
  return value;
}
