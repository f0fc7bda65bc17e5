// One conversation: its numbers, the chart of context use per request, the window by category, search over
// folded history, and the timeline of its log, kept live by polling for events after the last one seen.

import {get} from './api.js';
import {h, num, pct, clock, clear, plural} from './dom.js';
import {usageChart} from './chart.js';
import {breakdown} from './breakdown.js';
import {Timeline, STATES} from './timeline.js';

const PAGE = 500;
const POLL_MS = 1000;
// events that change how earlier events stand in the view: the timeline is read again when one arrives
const RESTATING = new Set(['compaction', 'deletion', 'pin']);

function restates(event) {
  return (
    RESTATING.has(event.type) ||
    (event.type === 'turn' && (event.status === 'failed' || event.status === 'interrupted' || event.status === 'blocked'))
  );
}

export function conversationPage(main, id) {
  const base = `/v1/conversations/${encodeURIComponent(id)}`;
  let stopped = false;
  let timer = null;
  let polling = false;

  const stats = h('p', {class: 'stats', id: 'stats'});
  const live = h('p', {class: 'live', id: 'live', 'aria-live': 'polite'});
  const checked = h('span', {class: 'muted', id: 'checked'});
  const chartBox = h('div', {id: 'chart'}, h('p', {class: 'muted loading'}, 'Loading…'));
  const breakdownBox = h('div', {id: 'breakdown'}, h('p', {class: 'muted loading'}, 'Loading…'));
  const summaryBox = h('div', {id: 'active-summary'});
  const timeline = new Timeline();
  const counts = h('p', {class: 'muted', id: 'timeline-counts'});
  const filters = h(
    'fieldset',
    {class: 'filters'},
    h('legend', {}, 'Show'),
    STATES.map(([state, label, help]) =>
      h(
        'label',
        {title: help},
        h('input', {
          type: 'checkbox',
          checked: true,
          'data-state': state,
          onchange: (e) => toggle(state, e.target.checked),
        }),
        ' ',
        h('span', {class: `badge badge-${state}`}, label),
      ),
    ),
  );
  const query = h('input', {
    id: 'search-input',
    type: 'search',
    name: 'q',
    required: true,
    autocomplete: 'off',
    placeholder: 'words from folded history',
  });
  const hits = h('div', {id: 'search-results', 'aria-live': 'polite'});
  const searchForm = h(
    'form',
    {
      class: 'toolbar',
      role: 'search',
      onsubmit: (e) => {
        e.preventDefault();
        search();
      },
    },
    h('label', {for: 'search-input'}, 'Search folded history'),
    query,
    h('button', {type: 'submit'}, 'Search'),
  );

  const root = h('div', {class: 'page'});
  main.append(root);
  root.append(
    h('nav', {class: 'crumbs', 'aria-label': 'Breadcrumb'}, h('a', {href: '#/'}, '← All conversations')),
    h('h1', {class: 'conversation-id'}, id),
    stats,
    h('div', {class: 'live-row'}, live, checked),
    h(
      'div',
      {class: 'panels'},
      h(
        'section',
        {class: 'panel chart-panel', 'aria-labelledby': 'chart-heading'},
        h('h2', {id: 'chart-heading'}, 'Context use per request'),
        chartBox,
      ),
      h(
        'section',
        {class: 'panel', 'aria-labelledby': 'breakdown-heading'},
        h('h2', {id: 'breakdown-heading'}, 'The window now'),
        breakdownBox,
        summaryBox,
      ),
    ),
    h(
      'section',
      {class: 'panel', 'aria-labelledby': 'search-heading'},
      h('h2', {id: 'search-heading'}, 'Search'),
      searchForm,
      hits,
    ),
    h(
      'section',
      {class: 'panel', 'aria-labelledby': 'timeline-heading'},
      h('h2', {id: 'timeline-heading'}, 'Timeline'),
      h('p', {class: 'muted'}, 'Every event of the log, oldest first, drawn by how it stands in the view now.'),
      filters,
      counts,
      timeline.list,
    ),
  );

  function toggle(state, shown) {
    timeline.list.classList.toggle(`hide-${state}`, !shown);
  }

  function focusEvent(seq) {
    const row = timeline.rows.get(Number(seq));
    if (!row) return;
    const state = row.dataset.type === 'compaction' ? 'compaction' : row.dataset.state;
    const box = filters.querySelector(`input[data-state="${state}"]`);
    if (box && !box.checked) {
      box.checked = true;
      toggle(state, true);
    }
    for (const old of timeline.list.querySelectorAll('.highlight')) old.classList.remove('highlight');
    row.classList.add('highlight');
    row.scrollIntoView({block: 'center'});
    row.focus({preventScroll: true});
  }

  root.addEventListener('click', (event) => {
    const jump = event.target.closest('button.jump');
    if (jump) focusEvent(jump.dataset.target);
  });

  async function refreshContext() {
    const context = await get(`${base}/context`);
    if (stopped) return;
    clear(stats).append(
      `${plural(context.events, 'event')} · ${plural(context.items_in_view, 'item')} in view · `,
      h('strong', {}, `${num(context.tokens.total)} of ${num(context.budget)} tokens`),
      ` (${pct(context.tokens.total, context.budget)} of the budget, window ${num(context.context_window)}) · `,
      `${plural(context.totals.compactions, 'compaction')} · ` +
        `${plural(context.totals.requests, 'model request')} · model ${context.model}`,
    );
    clear(breakdownBox).append(breakdown(context));
    clear(summaryBox);
    if (context.summary) {
      summaryBox.append(
        h(
          'details',
          {class: 'summary'},
          h('summary', {}, `The summary in the view (from compaction event #${context.summary.seq})`),
          h('div', {class: 'text summary-text'}, context.summary.text),
        ),
      );
    }
    timeline.activeSummary = context.summary ? context.summary.seq : null;
  }

  async function refreshUsage() {
    const usage = await get(`${base}/usage`);
    if (stopped) return;
    clear(chartBox).append(
      usage.requests.length || usage.compactions.length
        ? usageChart(usage)
        : h('p', {class: 'muted'}, 'No model requests yet.'),
    );
  }

  async function readEvents(after) {
    const events = [];
    let pinned = null;
    for (;;) {
      const page = await get(`${base}/events`, {after, limit: PAGE});
      events.push(...page.data);
      pinned = page.pinned ?? pinned;
      after = page.last_seq;
      if (!page.has_more || page.data.length === 0) return {events, pinned};
    }
  }

  function showCounts() {
    const c = timeline.counts();
    counts.textContent = STATES.filter(([state]) => c[state])
      .map(([state, label]) => `${label}: ${num(c[state])}`)
      .join(' · ');
  }

  async function loadTimeline() {
    const {events, pinned} = await readEvents(0);
    if (stopped) return;
    const classes = timeline.list.className;
    timeline.reset();
    timeline.list.className = classes;
    timeline.add(events, pinned);
    showCounts();
  }

  async function poll() {
    if (stopped || polling || document.visibilityState !== 'visible') return;
    polling = true;
    try {
      const {events, pinned} = await readEvents(timeline.lastSeq);
      if (stopped) return;
      checked.textContent = `checked ${clock(Date.now() / 1000)}`;
      if (events.length === 0) return;
      await refreshContext(); // the summary shown as active may change with these events
      if (events.some(restates)) await loadTimeline();
      else {
        timeline.add(events, pinned);
        showCounts();
      }
      if (events.some((e) => e.type === 'usage' || e.type === 'compaction')) await refreshUsage();
      live.textContent = `${plural(events.length, 'new event')} at ${clock(Date.now() / 1000)}`;
    } catch (error) {
      checked.textContent = `update failed: ${error.message || error}`;
    } finally {
      polling = false;
    }
  }

  async function search() {
    const q = query.value.trim();
    if (!q) return;
    clear(hits).append(h('p', {class: 'muted'}, 'Searching…'));
    const found = await get(`${base}/search`, {q, limit: 20});
    clear(hits);
    if (found.data.length === 0) {
      hits.append(h('p', {}, `Nothing folded matches “${q}”.`));
      return;
    }
    hits.append(
      h('p', {}, `${plural(found.data.length, 'folded event')} match “${q}”:`),
      h(
        'ol',
        {class: 'hits'},
        found.data.map((hit) =>
          h(
            'li',
            {'data-seq': hit.seq},
            h(
              'button',
              {type: 'button', class: 'jump', 'data-target': hit.seq},
              `#${hit.seq} ${hit.type.replace('_', ' ')}`,
            ),
            ' ',
            h('span', {class: 'snippet'}, hit.snippet),
          ),
        ),
      ),
    );
  }

  const onVisible = () => {
    if (document.visibilityState === 'visible') poll();
  };
  document.addEventListener('visibilitychange', onVisible);

  const ready = (async () => {
    await refreshUsage();
    await refreshContext(); // before the timeline, which marks the summary in the view now
    await loadTimeline();
    live.textContent = 'Live: new events appear as they are logged.';
    timer = setInterval(poll, POLL_MS);
  })().catch((error) => {
    // the conversation could not be read (missing, or the server failed): the error, the way back and the id,
    // not empty panels waiting for data that will not come
    for (const part of root.querySelectorAll('.live-row, .panels, section.panel')) part.remove();
    throw error;
  });

  return {
    ready,
    stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      document.removeEventListener('visibilitychange', onVisible);
    },
  };
}
