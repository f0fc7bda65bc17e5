// Small DOM helpers: elements built with textContent only (a log's text never becomes markup), and formatting.

const SVG_NS = 'http://www.w3.org/2000/svg';

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'text') el.textContent = String(value);
    else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** An HTML element: h('p', {class: 'x'}, 'text', h('b', {}, 'bold')). */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, same calling convention as h. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

const numbers = new Intl.NumberFormat('en-US');

export function num(value) {
  return value === null || value === undefined ? '–' : numbers.format(value);
}

export function pct(part, whole) {
  return whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : '–';
}

export function time(seconds) {
  if (!seconds) return '';
  return new Date(seconds * 1000).toLocaleString('en-GB', {
    year: 'numeric',
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  });
}

export function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString('en-GB');
}

/** Seq ranges [[a, b], ...] as "a–b, c". */
export function ranges(list) {
  if (!list || list.length === 0) return 'none';
  return list.map(([a, b]) => (a === b ? `#${a}` : `#${a}–#${b}`)).join(', ');
}

export function plural(n, word, many = `${word}s`) {
  return `${num(n)} ${n === 1 ? word : many}`;
}

/**
 * Positions for labels wanted at `wanted` (pixels along one axis), each at least `gap` from the next, as close to
 * where it is wanted as that allows, all within [low, high] when they fit. The order of the labels is kept.
 */
export function spread(wanted, gap, low, high) {
  const order = wanted.map((at, i) => [at, i]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const placed = order.map(([at]) => Math.min(Math.max(at, low), high));
  for (let k = 1; k < placed.length; k += 1) placed[k] = Math.max(placed[k], placed[k - 1] + gap);
  // pushed past the far end: slide back, keeping the gaps
  const over = placed.length ? placed[placed.length - 1] - high : 0;
  if (over > 0) {
    placed[placed.length - 1] -= over;
    for (let k = placed.length - 2; k >= 0; k -= 1) placed[k] = Math.min(placed[k], placed[k + 1] - gap);
  }
  const result = new Array(wanted.length);
  order.forEach(([, i], k) => {
    result[i] = placed[k];
  });
  return result;
}

/** Long text: the first `lines` lines (at most `limit` characters), the rest behind a disclosure. */
export function longText(text, limit = 600, className = 'text', lines = 8) {
  let cut = Math.min(text.length, limit);
  let at = -1;
  for (let n = 0; n < lines; n += 1) {
    at = text.indexOf('\n', at + 1);
    if (at < 0) break;
  }
  if (at >= 0) cut = Math.min(cut, at);
  if (cut >= text.length) return h('div', {class: className, text});
  return h(
    'div',
    {class: className},
    h('span', {text: text.slice(0, cut)}),
    h(
      'details',
      {class: 'more'},
      h('summary', {}, `Show all ${num(text.length)} characters`),
      h('span', {text: text.slice(cut)}),
    ),
  );
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}
