// CSV export of the feature table: every row that matches the current filters, in the current
// order, fetched from the server page by page (at most EXPORT_CAP rows), saved as one file.

import { api } from '../../api.js';
import { fmt, errorBox, download, csv } from '../../dom.js';
import { apiParams } from './query.js';
import { featureName } from './table.js';
import { EXPORT_CAP } from './controls.js';

const EXPORT_PAGE = 500; // the API's largest page
const HEADER = ['dictionary_id', 'index', 'name', 'label', 'density', 'max_activation', 'mean_activation', 'score', 'dead', 'pruned', 'top_tokens'];

/** Every feature matching `state` (up to EXPORT_CAP) and the server's total; onProgress(offset) per page. */
async function fetchMatching(dict, state, onProgress) {
  const items = [];
  let total = Infinity;
  while (items.length < total && items.length < EXPORT_CAP) {
    onProgress(items.length);
    const limit = Math.min(EXPORT_PAGE, EXPORT_CAP - items.length);
    const page = await api.features(dict.id, apiParams(state, { offset: items.length, limit }));
    total = page.total;
    if (!page.items.length) break;
    items.push(...page.items);
  }
  return { items, total };
}

function csvRow(dict, it) {
  return [it.dictionary_id, it.index, featureName(dict, it), it.label, it.density, it.max_activation, it.mean_activation, it.score, it.dead, it.pruned, it.top_tokens];
}

/** Download the features matching `state` as CSV; controls: {exportButton, status, tableHost}. */
export async function exportCsv(dict, state, { exportButton, status, tableHost }) {
  exportButton.disabled = true;
  try {
    const { items, total } = await fetchMatching(dict, state, (offset) => { exportButton.textContent = `Exporting ${fmt(offset)}…`; });
    download(`${dict.id}-features.csv`, csv([HEADER, ...items.map((it) => csvRow(dict, it))]));
    status.textContent = `Exported ${fmt(items.length)} features${total > EXPORT_CAP ? ` (capped at ${fmt(EXPORT_CAP)} of ${fmt(total)})` : ''}.`;
  } catch (err) {
    tableHost.before(errorBox(err, 'CSV export'));
  } finally {
    exportButton.disabled = false;
    exportButton.textContent = 'Export CSV';
  }
}
