// The steering feature picker: a dictionary select and a search box; a whole number picks that
// index, other text searches the server's feature list (labels, explanations, top tokens; live
// features, highest max activation first) and lists the matches as buttons.

import { api } from '../../api.js';
import { h, loading, errorBox, setContent, debounce } from '../../dom.js';

const BY_INDEX = '(by index)';

/** The strength a new intervention starts at: twice the feature's max activation, else 5. */
function startStrength(max) {
  return max ? Number((2 * max).toPrecision(2)) : 5;
}

async function searchFeatures(dictId, term) {
  const page = await api.features(dictId, { q: term, limit: 8, sort: 'max_activation', order: 'desc', dead: 'false' });
  return page.items.map((f) => ({ index: f.index, label: f.label, max: f.max_activation }));
}

function optionButton(dictId, option, prefixes, onPick) {
  const iv = { dictionary: dictId, index: option.index, mode: 'add', strength: startStrength(option.max), label: option.label === BY_INDEX ? '' : option.label };
  return h('button', { type: 'button', class: 'pick-option', on: { click: () => onPick(iv) } },
    h('strong', {}, `${prefixes.get(dictId)}${option.index}`), ' ', option.label || '');
}

/**
 * The picker's elements: `controls` (select and search box, for one row) and `results`.
 * onPick(intervention) is called with a new intervention when an option is clicked.
 */
export function featurePicker(dicts, prefixes, initialDictId, onPick) {
  const select = h('select', { 'aria-label': 'Dictionary to pick from' },
    dicts.map((d) => h('option', { value: d.id, selected: d.id === initialDictId }, d.id)));
  const search = h('input', { type: 'search', placeholder: 'Search features by label or token, or type an index', 'aria-label': 'Search features to steer with', class: 'search' });
  const results = h('div', { class: 'pick-results' });
  const pick = (iv) => { onPick(iv); search.value = ''; results.replaceChildren(); };

  async function update() {
    const dictId = select.value;
    const term = search.value.trim();
    if (!term) { results.replaceChildren(); return; }
    let options = [];
    if (/^\d+$/.test(term)) options = [{ index: Number(term), label: BY_INDEX }];
    else {
      setContent(results, loading('Searching…'));
      try { options = await searchFeatures(dictId, term); } catch (err) { setContent(results, errorBox(err)); return; }
    }
    setContent(results, options.length ? options.map((o) => optionButton(dictId, o, prefixes, pick)) : h('p', { class: 'muted small' }, 'No feature matches.'));
  }
  search.addEventListener('input', debounce(update, 250));
  return { controls: [select, search], results };
}
