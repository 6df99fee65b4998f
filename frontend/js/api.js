// The only module that talks to the server: JSON over /api/v1. Errors become ApiError carrying the
// server's {"error", "field"} message so views can show exactly what to change.

export const API_BASE = '/api/v1';

export class ApiError extends Error {
  constructor(message, { status = null, field = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.field = field;
  }
}

function buildUrl(path, params) {
  const url = new URL(API_BASE + path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === '') continue;
    url.searchParams.set(key, String(value));
  }
  return url.pathname + url.search;
}

async function parseError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    return new ApiError(`${response.status} ${response.statusText || 'error'}`, { status: response.status });
  }
  if (body && typeof body.error === 'string') {
    return new ApiError(body.error, { status: response.status, field: body.field ?? null });
  }
  // FastAPI's default shape, in case a route bypasses the project's error handler.
  if (body && body.detail) {
    const detail = Array.isArray(body.detail)
      ? body.detail.map((d) => `${(d.loc || []).join('.')}: ${d.msg}`).join('; ')
      : String(body.detail);
    return new ApiError(detail, { status: response.status });
  }
  return new ApiError(`${response.status} ${JSON.stringify(body)}`, { status: response.status });
}

async function request(method, path, { params, body, signal } = {}) {
  let response;
  try {
    response = await fetch(buildUrl(path, params), {
      method,
      signal,
      headers: body !== undefined ? { 'Content-Type': 'application/json', Accept: 'application/json' } : { Accept: 'application/json' },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(`Cannot reach the saescope server (${err.message}). Is it running?`);
  }
  if (!response.ok) throw await parseError(response);
  return response.json();
}

export const apiGet = (path, params, opts = {}) => request('GET', path, { params, ...opts });
export const apiPost = (path, body, opts = {}) => request('POST', path, { body, ...opts });

const enc = encodeURIComponent;

// Small cache for data that does not change while the page is open.
const cache = new Map();
function cached(key, fn) {
  if (!cache.has(key)) {
    const p = fn().catch((err) => { cache.delete(key); throw err; });
    cache.set(key, p);
  }
  return cache.get(key);
}

export const api = {
  health: () => apiGet('/health'),
  models: () => cached('models', () => apiGet('/models')),
  dictionaries: () => cached('dictionaries', () => apiGet('/dictionaries')),
  dictionary: (id) => cached(`dict:${id}`, () => apiGet(`/dictionaries/${enc(id)}`)),
  densityHistogram: (id) => cached(`dens:${id}`, () => apiGet(`/dictionaries/${enc(id)}/density_histogram`)),
  features: (id, params, opts) => apiGet(`/dictionaries/${enc(id)}/features`, params, opts),
  feature: (id, index) => apiGet(`/dictionaries/${enc(id)}/features/${enc(index)}`),
  featurePage: (id, index) => apiGet(`/dictionaries/${enc(id)}/features/${enc(index)}/page`),
  examples: (id, index, group) => apiGet(`/dictionaries/${enc(id)}/features/${enc(index)}/examples`, { group }),
  map: (hookName) => apiGet('/map', { hook_name: hookName }),
  interpretability: (hookName) => apiGet('/interpretability', { hook_name: hookName }),
  search: (q, params = {}) => apiGet('/search', { q, ...params }),
  activations: (body) => apiPost('/inference/activations', body),
  featureOnText: (body) => apiPost('/inference/feature', body),
  steer: (body) => apiPost('/steer', body),
  ablate: (body) => apiPost('/ablate', body),
};
