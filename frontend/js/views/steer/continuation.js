// The default and steered continuations side by side: prompt tokens in grey, generated tokens shaded
// by surprise (−log p) with the exact log-probability on hover.

import { h, fmt } from '../../dom.js';
import { displayToken } from '../../tokens.js';

export const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

function promptToken(t) {
  return h('span', { class: `tok tok-prompt${t.includes('\n') ? ' tok-nl' : ''}`, title: 'prompt' }, displayToken(t));
}

function generatedToken(t, i) {
  const surprise = Math.min(1, -t.logprob / 8);
  return h('span', {
    class: `tok tok-gen${t.token.includes('\n') ? ' tok-nl' : ''}`,
    title: `“${t.token}” (${i}) · logprob ${fmt(t.logprob, 3)} · p ${fmt(Math.exp(t.logprob), 3)}`,
    dataset: { logprob: String(t.logprob) },
    style: { backgroundColor: `rgba(148, 103, 189, ${(0.05 + 0.6 * surprise).toFixed(3)})` },
  }, displayToken(t.token));
}

/** Continuation tokens shaded by surprise (−log p), exact log-probability on hover. */
function continuationTokens(promptTokens, cont) {
  const row = h('div', { class: 'tokens continuation' });
  promptTokens.forEach((t, i) => {
    if (i === 0) return;
    row.append(promptToken(t));
    if (t.includes('\n')) row.append(h('br'));
  });
  for (const [i, t] of cont.tokens.entries()) {
    row.append(generatedToken(t, i));
    if (t.token.includes('\n')) row.append(h('br'));
  }
  return row;
}

function continuationCard(title, promptTokens, cont, cls) {
  return h('div', { class: `card continuation-card ${cls}` },
    h('h3', {}, title, h('span', { class: 'muted small' }, ` mean logprob ${fmt(mean(cont.tokens.map((t) => t.logprob)), 3)}`)),
    continuationTokens(promptTokens, cont));
}

/** The nodes showing a steer response: both continuations and a how-to-read line. */
export function continuations(res) {
  return [
    h('div', { class: 'side-by-side' },
      continuationCard('Default', res.prompt_tokens, res.default, 'default'),
      continuationCard('Steered', res.prompt_tokens, res.steered, 'steered')),
    h('p', { class: 'muted small' }, 'Prompt in grey; generated tokens shaded by surprise (−log p); hover a token for its log-probability.'),
  ];
}
