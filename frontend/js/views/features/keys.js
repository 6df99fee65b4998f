// Keyboard navigation of the feature table: ↑/↓ or j/k move the selection, Enter opens the selected
// feature, ←/→ (or p/n) change page, / focuses the search box; in a text box Escape leaves it.

function inFormField(e, search) {
  const tag = (e.target.tagName || '').toLowerCase();
  if (tag !== 'input' && tag !== 'textarea' && tag !== 'select') return false;
  if (e.key === 'Escape') e.target.blur();
  if (e.key === 'Enter' && e.target === search) { e.preventDefault(); search.blur(); }
  return true;
}

/** The action a key stands for, or null. */
function keyAction(key) {
  if (key === 'ArrowDown' || key === 'j') return 'down';
  if (key === 'ArrowUp' || key === 'k') return 'up';
  if (key === 'Enter') return 'open';
  if (key === 'ArrowRight' || key === 'n') return 'next';
  if (key === 'ArrowLeft' || key === 'p') return 'prev';
  if (key === '/') return 'search';
  return null;
}

/**
 * A keydown listener for the table. table: {page, search, move(delta), open(), goPage(delta)};
 * `page` is null until the first page has loaded.
 */
export function tableKeyHandler(table) {
  return (e) => {
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    if (inFormField(e, table.search) || !table.page) return;
    const tag = (e.target.tagName || '').toLowerCase();
    const action = keyAction(e.key);
    if (action === 'open' && (!table.page.items.length || tag === 'a' || tag === 'button')) return;
    if (action === null) return;
    e.preventDefault();
    if (action === 'down') table.move(1);
    else if (action === 'up') table.move(-1);
    else if (action === 'open') table.open();
    else if (action === 'next') table.goPage(1);
    else if (action === 'prev') table.goPage(-1);
    else { table.search.focus(); table.search.select(); }
  };
}
