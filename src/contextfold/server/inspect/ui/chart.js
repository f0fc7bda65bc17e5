// The chart of context use per model request, hand-written SVG: the input tokens each request reported (and our
// estimate before sending it) against the window, the budget, the compaction trigger and target lines, and every
// compaction as a drop from its tokens before to its tokens after. A data table carries the same numbers.

import {h, s, num, plural, spread} from './dom.js';

const W = 760;
const H = 300;
const M = {left: 60, right: 104, top: 16, bottom: 38};
const PLOT_W = W - M.left - M.right;
const PLOT_H = H - M.top - M.bottom;

const LABEL_GAP = 16; // units between two line labels' baselines: a 12.5px label's box is about 15 tall

const LINES = [
  ['context_window', 'window', 'Context window'],
  ['budget', 'budget', 'Budget (window minus reserved output)'],
  ['trigger_tokens', 'trigger', 'Compaction trigger'],
  ['target_tokens', 'target', 'Compaction target'],
];

/** A round step that cuts 0..value into about `count` parts (1, 2, 2.5 or 5 times a power of ten). */
function niceStep(value, count) {
  const rough = Math.max(value, 1) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= rough) return m * power;
  return 10 * power;
}

export function usageChart(usage) {
  const requests = usage.requests;
  const n = requests.length;
  const top = Math.max(
    usage.context_window,
    ...requests.map((r) => r.input_tokens),
    ...usage.compactions.map((c) => c.tokens_before),
  );
  const yStep = niceStep(top * 1.04, 5);
  const yMax = Math.ceil((top * 1.04) / yStep) * yStep;
  const y = (tokens) => M.top + PLOT_H - (PLOT_H * tokens) / yMax;
  const x = (i) => M.left + (n <= 1 ? PLOT_W / 2 : (PLOT_W * i) / (n - 1));
  const between = (k) => {
    if (n === 0) return M.left + PLOT_W / 2;
    if (k <= 0) return x(0) - Math.min(8, PLOT_W / (2 * Math.max(n - 1, 1)));
    if (k >= n) return x(n - 1) + Math.min(8, PLOT_W / (2 * Math.max(n - 1, 1)));
    return (x(k - 1) + x(k)) / 2;
  };
  const title = s('title', {id: 'chart-title'}, 'Context use per model request');
  const desc = s(
    'desc',
    {id: 'chart-desc'},
    `${plural(n, 'model request')} and ${plural(usage.compactions.length, 'compaction')} of model ${usage.model}; ` +
      `window ${usage.context_window}, ` +
      `budget ${usage.budget}, trigger ${usage.trigger_tokens}, target ${usage.target_tokens} tokens.`,
  );
  const svg = s(
    'svg',
    {
      viewBox: `0 0 ${W} ${H}`,
      class: 'chart',
      role: 'img',
      'aria-labelledby': 'chart-title chart-desc',
      'data-requests': n,
      'data-compactions': usage.compactions.length,
    },
    title,
    desc,
  );

  const grid = s('g', {class: 'grid'});
  for (let value = 0; value <= yMax; value += yStep) {
    grid.append(
      s('line', {x1: M.left, x2: M.left + PLOT_W, y1: y(value), y2: y(value)}),
      s('text', {x: M.left - 8, y: y(value) + 4, 'text-anchor': 'end'}, num(value)),
    );
  }
  const step = Math.max(1, niceStep(n, 8));
  const labelled = n ? [1] : [];
  for (let number = step; number <= n; number += step) if (number > 1) labelled.push(number);
  for (const number of labelled) {
    grid.append(s('text', {x: x(number - 1), y: M.top + PLOT_H + 18, 'text-anchor': 'middle'}, String(number)));
  }
  grid.append(
    s('text', {x: M.left + PLOT_W / 2, y: H - 4, 'text-anchor': 'middle', class: 'axis-title'}, 'model request'),
    s(
      'text',
      {
        x: 14,
        y: M.top + PLOT_H / 2,
        'text-anchor': 'middle',
        class: 'axis-title',
        transform: `rotate(-90 14 ${M.top + PLOT_H / 2})`,
      },
      'input tokens',
    ),
  );
  svg.append(grid);

  const lines = s('g', {class: 'lines'});
  // lines close together (the window and the budget, when little is reserved) keep their labels apart
  const labelAt = spread(
    LINES.map(([field]) => y(usage[field])),
    LABEL_GAP,
    M.top,
    H - 4,
  );
  LINES.forEach(([field, name], i) => {
    const value = usage[field];
    lines.append(
      s(
        'g',
        {class: `ref ref-${name}`, 'data-line': name, 'data-tokens': value},
        s('line', {x1: M.left, x2: M.left + PLOT_W, y1: y(value), y2: y(value)}),
        s('text', {x: M.left + PLOT_W + 6, y: labelAt[i] + 4}, `${name} ${num(value)}`),
        s('title', {}, `${name}: ${num(value)} tokens`),
      ),
    );
  });
  svg.append(lines);

  const marks = s('g', {class: 'compactions'});
  usage.compactions.forEach((c, index) => {
    const cx = between(c.after_request);
    const label =
      `Compaction ${index + 1} (${c.strategy}, ${c.trigger}): ` +
      `${num(c.tokens_before)} → ${num(c.tokens_after)} tokens` +
      (c.error ? `; error: ${c.error}` : '');
    marks.append(
      s(
        'g',
        {class: 'compaction-mark', 'data-seq': c.seq},
        s('line', {class: 'rule', x1: cx, x2: cx, y1: M.top, y2: M.top + PLOT_H}),
        s('line', {class: 'drop', x1: cx, x2: cx, y1: y(c.tokens_before), y2: y(c.tokens_after)}),
        s('path', {
          class: 'head',
          d: `M${cx - 4},${y(c.tokens_after) - 6} L${cx + 4},${y(c.tokens_after) - 6} L${cx},${y(c.tokens_after)} Z`,
        }),
        s('title', {}, label),
      ),
    );
  });
  svg.append(marks);

  const estimated = requests
    .map((r, i) => [i, r.estimated_input_tokens])
    .filter(([, v]) => v !== null && v !== undefined);
  if (estimated.length > 1) {
    svg.append(
      s('polyline', {class: 'series-estimate', points: estimated.map(([i, v]) => `${x(i)},${y(v)}`).join(' ')}),
    );
  }
  if (n > 1) {
    svg.append(
      s('polyline', {
        class: 'series-reported',
        points: requests.map((r, i) => `${x(i)},${y(r.input_tokens)}`).join(' '),
      }),
    );
  }
  const points = s('g', {class: 'points'});
  requests.forEach((r, i) => {
    const over = r.input_tokens > usage.trigger_tokens;
    points.append(
      s(
        'circle',
        {
          class: over ? 'point over' : 'point',
          cx: x(i),
          cy: y(r.input_tokens),
          r: n > 150 ? 1.6 : 3,
          'data-seq': r.seq,
          'data-tokens': r.input_tokens,
        },
        s(
          'title',
          {},
          `Request ${i + 1} (event #${r.seq}): ${num(r.input_tokens)} input tokens reported` +
            (r.estimated_input_tokens !== null && r.estimated_input_tokens !== undefined
              ? `, ${num(r.estimated_input_tokens)} estimated`
              : '') +
            `, ${num(r.output_tokens)} output`,
        ),
      ),
    );
  });
  svg.append(points);

  return h('figure', {class: 'chart-figure'}, svg, h('figcaption', {}, legend()), dataTable(usage));
}

function swatch(name) {
  return s(
    'svg',
    {class: `swatch swatch-${name}`, viewBox: '0 0 24 10', width: 24, height: 10, 'aria-hidden': 'true'},
    s('line', {x1: 0, x2: 24, y1: 5, y2: 5}),
  );
}

function legend() {
  const entries = [
    ['reported', 'Input tokens reported by the model'],
    ['estimate', 'Our estimate before sending'],
    ...LINES.map(([, name, text]) => [name, text]),
    ['compaction', 'Compaction (tokens before → after)'],
  ];
  return h(
    'ul',
    {class: 'legend'},
    entries.map(([name, text]) => h('li', {}, swatch(name), ' ', text)),
  );
}

function dataTable(usage) {
  const rows = [];
  let next = 0;
  const compactionRow = (c) =>
    h(
      'tr',
      {class: 'compaction-row'},
      h('td', {}, 'compaction'),
      h('td', {}, `#${c.seq}`),
      h('td', {colspan: 4}, `${c.strategy}, ${c.trigger}: ${num(c.tokens_before)} → ${num(c.tokens_after)} tokens`),
    );
  usage.requests.forEach((r, i) => {
    while (next < usage.compactions.length && usage.compactions[next].after_request <= i)
      rows.push(compactionRow(usage.compactions[next++]));
    rows.push(
      h(
        'tr',
        {},
        h('td', {}, String(i + 1)),
        h('td', {}, `#${r.seq}`),
        h('td', {class: 'n'}, num(r.input_tokens)),
        h('td', {class: 'n'}, num(r.estimated_input_tokens)),
        h('td', {class: 'n'}, num(r.output_tokens)),
        h('td', {class: 'n'}, num(r.cached_input_tokens)),
      ),
    );
  });
  while (next < usage.compactions.length) rows.push(compactionRow(usage.compactions[next++]));
  return h(
    'details',
    {class: 'data'},
    h('summary', {}, 'The chart as a table'),
    h(
      'table',
      {},
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Request', 'Event', 'Input (reported)', 'Input (estimated)', 'Output', 'Cached input'].map((t) =>
            h('th', {scope: 'col'}, t),
          ),
        ),
      ),
      h('tbody', {}, rows),
    ),
  );
}
