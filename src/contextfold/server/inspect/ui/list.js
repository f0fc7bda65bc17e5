// The conversation list: newest first, filtered by id or metadata as you type, with each one's size (events in
// its log, tokens in its view now, compactions so far).

import {get} from './api.js';
import {h, num, pct, time, clear, plural} from './dom.js';

const PAGE = 50;
const PARALLEL = 4; // context reports fetched at once

export function listPage(main) {
  let stopped = false;
  const rows = [];
  const status = h('p', {class: 'muted', id: 'list-status', 'aria-live': 'polite'});
  const filter = h('input', {
    id: 'conversation-filter',
    type: 'search',
    placeholder: 'id, metadata key or value',
    autocomplete: 'off',
    'aria-describedby': 'list-status',
  });
  const body = h('tbody');
  const more = h('button', {type: 'button', hidden: true}, 'Load older conversations');
  const table = h(
    'table',
    {class: 'conversations'},
    h('caption', {class: 'visually-hidden'}, 'Conversations, newest first'),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        h('th', {scope: 'col'}, 'Conversation'),
        h('th', {scope: 'col'}, 'Created'),
        h('th', {scope: 'col'}, 'Metadata'),
        h('th', {scope: 'col', class: 'n'}, 'Events'),
        h('th', {scope: 'col', class: 'n'}, 'Tokens in view'),
        h('th', {scope: 'col', class: 'n'}, 'Use of budget'),
        h('th', {scope: 'col', class: 'n'}, 'Compactions'),
      ),
    ),
    body,
  );
  main.append(
    h('h1', {}, 'Conversations'),
    h(
      'div',
      {class: 'toolbar'},
      h('label', {for: 'conversation-filter'}, 'Filter'),
      filter,
      h('button', {type: 'button', onclick: () => reload()}, 'Refresh'),
    ),
    status,
    table,
    more,
  );

  let after = null;

  function matches(row, query) {
    if (!query) return true;
    const haystack = [row.item.id, ...Object.entries(row.item.metadata || {}).flat()].join('\n').toLowerCase();
    return haystack.includes(query);
  }

  function applyFilter() {
    const query = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      row.tr.hidden = !matches(row, query);
      if (!row.tr.hidden) shown += 1;
    }
    status.textContent =
      rows.length === 0
        ? 'No conversations yet.'
        : query
          ? `${num(shown)} of ${plural(rows.length, 'conversation')} ${shown === 1 ? 'matches' : 'match'} ` +
            `“${filter.value.trim()}”.`
          : `${plural(rows.length, 'conversation')}.`;
  }

  function addRow(item) {
    const cells = {
      tokens: h('td', {class: 'n'}, '…'),
      use: h('td', {class: 'n'}, '…'),
      compactions: h('td', {class: 'n'}, '…'),
    };
    const metadata = Object.entries(item.metadata || {});
    const tr = h(
      'tr',
      {'data-id': item.id},
      h('th', {scope: 'row'}, h('a', {href: `#/c/${encodeURIComponent(item.id)}`}, item.id)),
      h('td', {}, time(item.created_at)),
      h(
        'td',
        {class: 'metadata'},
        metadata.length ? metadata.map(([k, v]) => h('span', {class: 'tag'}, `${k}: ${v}`)) : '–',
      ),
      h('td', {class: 'n'}, num(item.events)),
      cells.tokens,
      cells.use,
      cells.compactions,
    );
    body.append(tr);
    const row = {item, tr, cells};
    rows.push(row);
    return row;
  }

  async function sizes(pending) {
    // a few at a time: each is a view load on the server
    const queue = [...pending];
    const worker = async () => {
      while (queue.length && !stopped) {
        const row = queue.shift();
        try {
          const context = await get(`/v1/conversations/${encodeURIComponent(row.item.id)}/context`);
          row.cells.tokens.textContent = num(context.tokens.total);
          row.cells.use.textContent = pct(context.tokens.total, context.budget);
          row.cells.compactions.textContent = num(context.totals.compactions);
        } catch (error) {
          row.cells.tokens.textContent = row.cells.use.textContent = row.cells.compactions.textContent = '?';
          row.cells.tokens.title = String(error.message || error);
        }
      }
    };
    await Promise.all(Array.from({length: PARALLEL}, worker));
  }

  async function load() {
    const page = await get('/v1/conversations', {limit: PAGE, order: 'desc', after});
    if (stopped) return;
    const added = page.data.map(addRow);
    after = page.last_id;
    more.hidden = !page.has_more;
    applyFilter();
    await sizes(added);
  }

  async function reload() {
    rows.length = 0;
    clear(body);
    after = null;
    await load();
  }

  filter.addEventListener('input', applyFilter);
  more.addEventListener('click', () => load());
  return {
    ready: load(),
    stop: () => {
      stopped = true;
    },
  };
}
