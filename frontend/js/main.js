// Entry point: wires the hash routes to the views and keeps the top bar (active link, server health).

import { api } from './api.js';
import { Router, parseHash, buildHash } from './router.js';
import { h, setContent } from './dom.js';
import * as home from './views/home.js';
import * as features from './views/features.js';
import * as feature from './views/feature.js';
import * as map from './views/map.js';
import * as analyse from './views/analyse.js';
import * as steer from './views/steer.js';
import * as scores from './views/scores.js';

const routes = {
  home: { match: (s) => (s.length === 0 ? {} : null), render: home.render },
  features: { match: (s) => (s[0] === 'features' && s.length <= 2 ? { dictionary: s[1] ?? null } : null), render: features.render },
  feature: { match: (s) => (s[0] === 'feature' && s.length === 3 ? { dictionary: s[1], index: s[2] } : null), render: feature.render },
  map: { match: (s) => (s[0] === 'map' && s.length <= 2 ? { hook: s[1] ?? null } : null), render: map.render },
  analyse: { match: (s) => (s[0] === 'analyse' && s.length === 1 ? {} : null), render: analyse.render },
  steer: { match: (s) => (s[0] === 'steer' && s.length === 1 ? {} : null), render: steer.render },
  scores: { match: (s) => (s[0] === 'scores' && s.length <= 2 ? { hook: s[1] ?? null } : null), render: scores.render },
  notfound: {
    match: () => null,
    render: (root) => {
      root.append(h('h1', {}, 'Page not found'),
        h('p', {}, 'No view at ', h('code', {}, window.location.hash), '. ', h('a', { href: '#/' }, 'Back to the atlas'), '.'));
    },
  },
};

// The Features link opens the dictionary last looked at.
function rememberDictionary() {
  const { segments } = parseHash();
  if ((segments[0] === 'features' || segments[0] === 'feature') && segments[1]) {
    document.querySelector('.mainnav a[data-nav=features]')?.setAttribute('href', buildHash(['features', segments[1]]));
  }
}

function markActive(name) {
  rememberDictionary();
  const navName = name === 'feature' ? 'features' : name;
  for (const a of document.querySelectorAll('.mainnav a')) {
    a.classList.toggle('active', a.dataset.nav === navName);
    if (a.dataset.nav === navName) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function showHealth() {
  const el = document.getElementById('health');
  try {
    const health = await api.health();
    setContent(el, h('span', { class: `dot ${health.status === 'ok' ? 'ok' : 'warn'}` }),
      [health.model_id ? `model ${health.model_id}` : null, health.device, `${health.dictionaries} dictionaries`,
        health.engine_loaded === false ? 'model loads on first live request' : null].filter(Boolean).join(' · '));
  } catch (err) {
    setContent(el, h('span', { class: 'dot bad' }), h('span', { title: err.message }, 'server unreachable'));
  }
}

const root = document.getElementById('app');
const router = new Router(root, routes, { onRoute: markActive });
window.saescope = { router };
showHealth();
router.run();
