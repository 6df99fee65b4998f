// Hash routing: every view has a URL (#/path/segments?query) so any page can be shared or reloaded.
// Owns parsing and building hashes and running one view at a time (with cleanup on leave).

import { ApiError } from './api.js';
import { errorBox } from './dom.js';

/** Parse location.hash into {segments: [..], query: URLSearchParams, path}. */
export function parseHash(hash = window.location.hash) {
  const raw = hash.replace(/^#\/?/, '');
  const qpos = raw.indexOf('?');
  const pathPart = qpos >= 0 ? raw.slice(0, qpos) : raw;
  const queryPart = qpos >= 0 ? raw.slice(qpos + 1) : '';
  const segments = pathPart.split('/').filter((s) => s !== '').map((s) => {
    try { return decodeURIComponent(s); } catch { return s; }
  });
  return { segments, query: new URLSearchParams(queryPart), path: pathPart };
}

/** Build a hash from path segments and a query object (empty values dropped). */
export function buildHash(segments, query = {}) {
  const path = segments.map((s) => encodeURIComponent(String(s))).join('/');
  const qs = new URLSearchParams();
  const entries = query instanceof URLSearchParams ? [...query.entries()] : Object.entries(query);
  for (const [key, value] of entries) {
    if (value === null || value === undefined || value === '' || value === false) continue;
    qs.set(key, String(value));
  }
  const q = qs.toString();
  return `#/${path}${q ? `?${q}` : ''}`;
}

export const featureHash = (dictionaryId, index) => buildHash(['feature', dictionaryId, index]);
export const featuresHash = (dictionaryId, query = {}) => buildHash(['features', dictionaryId], query);
export const mapHash = (hookName, query = {}) => buildHash(['map', hookName], query);

export class Router {
  /** routes: {name: {match(segments) -> params|null, render(root, route, ctx)}} */
  constructor(root, routes, { onRoute } = {}) {
    this.root = root;
    this.routes = routes;
    this.onRoute = onRoute;
    this.generation = 0;
    this.cleanups = [];
    window.addEventListener('hashchange', () => this.run());
  }

  /** Replace the query of the current URL without re-rendering (view state such as filters). */
  setQuery(query, { push = false } = {}) {
    const { segments } = parseHash();
    const hash = buildHash(segments, query);
    if (hash === window.location.hash) return;
    if (push) history.pushState(null, '', hash);
    else history.replaceState(null, '', hash);
  }

  navigate(hash) {
    if (hash === window.location.hash) this.run();
    else window.location.hash = hash;
  }

  async run() {
    for (const fn of this.cleanups.splice(0)) {
      try { fn(); } catch (err) { console.warn('cleanup failed', err); }
    }
    const generation = ++this.generation;
    const route = parseHash();
    let view = null;
    let params = null;
    for (const [name, candidate] of Object.entries(this.routes)) {
      params = candidate.match(route.segments);
      if (params) { view = { name, ...candidate }; break; }
    }
    if (!view) { view = { name: 'notfound', ...this.routes.notfound }; params = {}; }
    const ctx = {
      alive: () => generation === this.generation,
      onCleanup: (fn) => this.cleanups.push(fn),
      setQuery: (q, opts) => { if (generation === this.generation) this.setQuery(q, opts); },
      navigate: (hash) => this.navigate(hash),
      // Replace the current URL (no new history entry) and render it: for default redirects.
      redirect: (hash) => { if (generation === this.generation) { history.replaceState(null, '', hash); this.run(); } },
    };
    if (this.onRoute) this.onRoute(view.name);
    this.root.replaceChildren();
    window.scrollTo(0, 0);
    try {
      await view.render(this.root, { ...route, params }, ctx);
    } catch (err) {
      if (!ctx.alive()) return;
      if (!(err instanceof ApiError)) console.error(err);
      for (const el of this.root.querySelectorAll('.loading')) el.remove();
      this.root.append(errorBox(err));
    }
  }
}
