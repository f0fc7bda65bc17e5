// The current window by category (from /context): a bar against the budget with the trigger and target marked,
// and a table of the same numbers.

import {h, s, num, pct, spread} from './dom.js';

export const CATEGORIES = [
  ['instructions', 'Instructions'],
  ['tools', 'Tool schemas'],
  ['summary', 'Summary'],
  ['messages', 'Messages'],
  ['tool_calls', 'Tool calls'],
  ['tool_outputs', 'Tool output'],
  ['masked_tool_outputs', 'Masked tool output'],
  ['reasoning', 'Reasoning'],
];

const W = 600;
const BAR = 28;
const TICK_LABEL_GAP = 56; // px between the centres of the two tick labels: "trigger" is about 45px wide

export function breakdown(context) {
  const budget = context.budget;
  const tokens = context.tokens;
  const scale = Math.max(budget, tokens.estimated, 1);
  const bar = s(
    'svg',
    {viewBox: `0 0 ${W} ${BAR + 22}`, class: 'breakdown-bar', role: 'img', 'aria-labelledby': 'breakdown-title'},
    s(
      'title',
      {id: 'breakdown-title'},
      `The window now: ${num(tokens.total)} of ${num(budget)} budget tokens (${pct(tokens.total, budget)})`,
    ),
    s('rect', {class: 'free', x: 0, y: 0, width: W, height: BAR}),
  );
  let at = 0;
  for (const [key, label] of CATEGORIES) {
    const value = tokens[key] || 0;
    if (!value) continue;
    const width = (W * value) / scale;
    bar.append(
      s(
        'rect',
        {class: `cat cat-${key}`, x: at, y: 0, width, height: BAR, 'data-category': key},
        s('title', {}, `${label}: ${num(value)} tokens`),
      ),
    );
    at += width;
  }
  const ticks = [
    ['target_tokens', 'target'],
    ['trigger_tokens', 'trigger'],
  ];
  const xs = ticks.map(([field]) => (W * context.compaction[field]) / scale);
  const labels = spread(xs, TICK_LABEL_GAP, TICK_LABEL_GAP / 2, W - TICK_LABEL_GAP / 2);
  ticks.forEach(([, name], i) => {
    const x = xs[i];
    bar.append(
      s(
        'g',
        {class: `tick tick-${name}`, 'data-tick': name},
        // a light halo under the mark, so it shows on every category's colour (the trigger's is tool output's)
        s('line', {class: 'halo', x1: x, x2: x, y1: -2, y2: BAR + 4}),
        s('line', {class: 'mark', x1: x, x2: x, y1: -2, y2: BAR + 4}),
        s('text', {x: labels[i], y: BAR + 18, 'text-anchor': 'middle'}, name),
      ),
    );
  });
  const rows = CATEGORIES.map(([key, label]) =>
    h(
      'tr',
      {'data-category': key, class: tokens[key] ? '' : 'zero'},
      h(
        'th',
        {scope: 'row'},
        s(
          'svg',
          {class: `key cat-${key}`, viewBox: '0 0 10 10', width: 10, height: 10, 'aria-hidden': 'true'},
          s('rect', {width: 10, height: 10}),
        ),
        ' ',
        label,
      ),
      h('td', {class: 'n'}, num(tokens[key] || 0)),
      h('td', {class: 'n'}, pct(tokens[key] || 0, budget)),
    ),
  );
  rows.push(
    h(
      'tr',
      {class: 'total'},
      h('th', {scope: 'row'}, 'Estimated total'),
      h('td', {class: 'n'}, num(tokens.estimated)),
      h('td', {class: 'n'}, pct(tokens.estimated, budget)),
    ),
  );
  if (tokens.total !== tokens.estimated) {
    rows.push(
      h(
        'tr',
        {class: 'total'},
        h('th', {scope: 'row'}, 'Corrected by the last report'),
        h('td', {class: 'n'}, num(tokens.total)),
        h('td', {class: 'n'}, pct(tokens.total, budget)),
      ),
    );
  }
  return h(
    'div',
    {class: 'breakdown'},
    bar,
    h(
      'p',
      {class: 'muted'},
      `Budget ${num(budget)} tokens (window ${num(context.context_window)} ` +
        `minus ${num(context.reserved_output_tokens)} reserved for output); ` +
        `compaction at ${num(context.compaction.trigger_tokens)}, down to ${num(context.compaction.target_tokens)}.`,
    ),
    h(
      'table',
      {class: 'categories'},
      h('caption', {class: 'visually-hidden'}, 'Tokens of the window by category'),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', {scope: 'col'}, 'Category'),
          h('th', {scope: 'col', class: 'n'}, 'Tokens'),
          h('th', {scope: 'col', class: 'n'}, 'Of budget'),
        ),
      ),
      h('tbody', {}, rows),
    ),
  );
}
