// The timeline: every event of the log in order, drawn by how it stands in the view now (in view, masked, folded,
// failed, erased, or a marker), compactions as cards with their summary and what they folded, and tool calls
// linked with their results.

import {h, num, pct, time, ranges, plural, longText, clear} from './dom.js';

export const STATES = [
  ['in_view', 'In view', 'sent to the model as it is'],
  ['masked', 'Masked', 'a tool output the model sees as a short placeholder'],
  ['folded', 'Folded', 'covered by the summary or dropped by a compaction'],
  ['failed', 'Failed', 'from a failed, interrupted or blocked turn, never sent again'],
  ['erased', 'Erased', 'deleted: only the tombstone is left'],
  ['marker', 'Markers', 'turns, requests, configuration, pins'],
  ['compaction', 'Compactions', 'compaction events with their summaries'],
];
const STATE_LABEL = Object.fromEntries(STATES.map(([state, label]) => [state, label.toLowerCase()]));
STATE_LABEL.in_view = 'in view';

function textOf(message) {
  return (message.content || [])
    .map((part) => {
      if (part.type === 'text') return part.text;
      if (part.type === 'image') return `[image ${part.url.startsWith('data:') ? '(inline data)' : part.url}]`;
      return `[file ${part.filename || part.file_id || part.media_type}]`;
    })
    .join('\n');
}

function rangeSeqs(list) {
  const seqs = [];
  for (const [a, b] of list || []) for (let seq = a; seq <= b; seq += 1) seqs.push(seq);
  return seqs;
}

export class Timeline {
  constructor() {
    this.list = h('ol', {class: 'timeline', id: 'timeline', 'aria-label': 'Events of the log, oldest first'});
    this.reset();
  }

  reset() {
    clear(this.list);
    this.events = [];
    this.rows = new Map(); // seq -> li
    this.calls = new Map(); // call_id -> tool_call event
    this.results = new Map(); // call_id -> tool_result event
    this.foldedBy = new Map(); // seq -> [compaction number, compaction seq]
    this.compactions = 0;
    this.pinned = new Set();
    this.activeSummary = null;
  }

  get lastSeq() {
    return this.events.length ? this.events[this.events.length - 1].seq : 0;
  }

  /** Render `events` after those shown (all of them on a fresh load). */
  add(events, pinned) {
    if (pinned) this.pinned = new Set(pinned);
    for (const event of events) {
      if (event.type === 'tool_call') this.calls.set(event.call_id, event);
      if (event.type === 'tool_result') this.results.set(event.call_id, event);
      if (event.type === 'compaction') {
        this.compactions += 1;
        for (const seq of [...rangeSeqs(event.folded), ...(event.strategy === 'mask' ? event.masked || [] : [])]) {
          if (!this.foldedBy.has(seq)) this.foldedBy.set(seq, [this.compactions, event.seq]);
        }
        event.number = this.compactions;
      }
    }
    const fresh = this.events.length === 0;
    this.events.push(...events);
    const rows = events.map((event) => this.row(event));
    this.list.append(...rows);
    if (!fresh) {
      for (const event of events) {
        if (event.type === 'tool_result') this.linkCall(event);
      }
    }
  }

  counts() {
    const counts = {};
    for (const event of this.events) {
      const key = event.type === 'compaction' ? 'compaction' : event.state;
      counts[key] = (counts[key] || 0) + 1;
    }
    return counts;
  }

  row(event) {
    const state = event.state;
    const classes = ['ev', `state-${state}`, `type-${event.type}`];
    if (event.type === 'compaction') classes.push('compaction-card');
    if (event.type === 'turn' && event.status !== 'started' && event.status !== 'completed') classes.push('turn-bad');
    const li = h('li', {
      class: classes.join(' '),
      id: `ev-${event.seq}`,
      'data-seq': event.seq,
      'data-state': state,
      'data-type': event.type,
      tabindex: '-1',
    });
    this.rows.set(event.seq, li);
    const head = h(
      'div',
      {class: 'ev-head'},
      h('span', {class: 'seq'}, `#${event.seq}`),
      h('span', {class: 'kind'}, this.kind(event)),
    );
    if (state !== 'marker') head.append(h('span', {class: `badge badge-${state}`}, STATE_LABEL[state]));
    if (this.pinned.has(event.seq)) head.append(h('span', {class: 'badge badge-pinned'}, 'pinned'));
    const folder = this.foldedBy.get(event.seq);
    if (folder && (state === 'folded' || state === 'masked')) {
      head.append(
        h(
          'span',
          {class: 'via'},
          state === 'masked' ? 'masked by ' : 'folded by ',
          this.jump(folder[1], `compaction ${folder[0]}`),
        ),
      );
    }
    const body = this.body(event);
    const inline = state === 'marker' && event.type !== 'compaction';
    if (body && inline) head.append(h('span', {class: 'detail'}, body));
    head.append(h('time', {datetime: new Date(event.created_at * 1000).toISOString()}, time(event.created_at)));
    li.append(head);
    if (body && !inline) li.append(body);
    return li;
  }

  kind(event) {
    switch (event.type) {
      case 'message':
        return `${event.role} message`;
      case 'tool_call':
        return `tool call ${event.name}`;
      case 'tool_result': {
        const call = this.calls.get(event.call_id);
        return `tool result${call ? ` of ${call.name}` : ''}${event.is_error ? ' (error)' : ''}`;
      }
      case 'reasoning':
        return `reasoning (${event.provider})`;
      case 'turn':
        return `turn ${event.status}`;
      case 'config':
        return 'configuration';
      case 'pin':
        return event.pinned === false ? 'unpin' : 'pin';
      case 'deletion':
        return 'deletion';
      case 'usage':
        return 'model request';
      case 'compaction':
        return `compaction ${event.number}`;
      default:
        return event.type;
    }
  }

  jump(seq, label) {
    return h('button', {type: 'button', class: 'jump', 'data-target': seq}, label || `#${seq}`);
  }

  body(event) {
    if (event.redacted)
      return h('p', {class: 'erased-note'}, 'Content erased (deleted); the event stays as a tombstone.');
    switch (event.type) {
      case 'message':
        return longText(textOf(event));
      case 'tool_call': {
        const result = this.results.get(event.call_id);
        return h(
          'div',
          {},
          h('code', {class: 'call'}, `${event.name}(${event.arguments})`),
          h(
            'p',
            {class: 'pairing', 'data-call': event.call_id},
            result ? ['Result: ', this.jump(result.seq)] : 'No result yet',
          ),
        );
      }
      case 'tool_result': {
        const call = this.calls.get(event.call_id);
        const parts = [];
        if (call)
          parts.push(
            h(
              'p',
              {class: 'pairing'},
              'Call: ',
              this.jump(call.seq),
              ' ',
              h('code', {}, `${call.name}(${call.arguments})`),
            ),
          );
        if (event.state === 'masked') {
          parts.push(
            h(
              'p',
              {class: 'masked-note'},
              event.summary
                ? ['The model sees the tool’s summary instead: ', h('q', {}, event.summary)]
                : 'The model sees a placeholder that points to recall; the full output is below.',
            ),
          );
        } else if (event.summary) {
          parts.push(h('p', {class: 'muted'}, 'Tool summary: ', h('q', {}, event.summary)));
        }
        parts.push(longText(event.output, 600, 'text output', 6));
        return h('div', {}, parts);
      }
      case 'reasoning':
        return event.text ? longText(event.text) : h('p', {class: 'muted'}, 'Opaque provider reasoning');
      case 'turn':
        return event.reason ? h('p', {class: 'reason'}, event.reason) : null;
      case 'config':
        return h('p', {}, configText(event));
      case 'pin':
        return h('p', {}, event.pinned === false ? 'Unpinned ' : 'Pinned ', this.jump(event.target));
      case 'deletion':
        return h(
          'p',
          {},
          'Erased ',
          event.targets.map((seq, n) => [n ? ', ' : '', this.jump(seq)]),
          event.erased_summaries?.length
            ? ` and the summaries of ${event.erased_summaries.map((s) => `#${s}`).join(', ')}`
            : '',
        );
      case 'usage':
        return h(
          'p',
          {class: 'usage'},
          `${event.model}: ${num(event.input_tokens)} input tokens`,
          event.estimated_input_tokens !== undefined && event.estimated_input_tokens !== null
            ? ` (estimated ${num(event.estimated_input_tokens)})`
            : '',
          `, ${num(event.output_tokens)} output`,
          event.cached_input_tokens ? `, ${num(event.cached_input_tokens)} cached` : '',
        );
      case 'compaction':
        return this.compaction(event);
      default:
        return null;
    }
  }

  compaction(event) {
    const before = event.tokens_before || 0;
    const after = event.tokens_after || 0;
    const facts = [
      ['Strategy', event.strategy],
      ['Trigger', event.trigger],
      ['Tokens', `${num(before)} → ${num(after)}${before ? ` (${pct(after, before)} of before)` : ''}`],
      ['Folded now', ranges(event.folded)],
      ['Summary covers', ranges(event.covers)],
      ['Masked', event.masked?.length ? plural(event.masked.length, 'tool output') : 'none'],
      ['Kept', plural((event.kept || []).length, 'event')],
    ];
    if (event.model) facts.push(['Summarised by', event.model]);
    if (event.duration_ms) facts.push(['Took', `${num(Math.round(event.duration_ms))} ms`]);
    if (event.instructions) facts.push(['Instructions', event.instructions]);
    if (event.error) facts.push(['Error', event.error]);
    const card = h(
      'div',
      {class: 'compaction-body'},
      h(
        'dl',
        {class: 'facts'},
        facts.map(([name, value]) =>
          h('div', {'data-fact': name.toLowerCase()}, h('dt', {}, name), h('dd', {}, value)),
        ),
      ),
    );
    if (event.summary) {
      const active = this.activeSummary === event.seq;
      card.append(
        h(
          'details',
          {class: 'summary', open: true},
          h('summary', {}, active ? 'Summary (the one in the view now)' : 'Summary'),
          longText(event.summary, 2000, 'text summary-text', 40),
        ),
      );
    } else if (event.strategy === 'mask') {
      card.append(h('p', {class: 'muted'}, 'Masking only: no new summary.'));
    }
    return card;
  }

  /** A result that arrived after its call was drawn: link the call to it. */
  linkCall(result) {
    const call = this.calls.get(result.call_id);
    const row = call && this.rows.get(call.seq);
    const slot = row && row.querySelector('.pairing');
    if (slot) {
      clear(slot);
      slot.append('Result: ', this.jump(result.seq));
    }
  }
}

function configText(event) {
  const parts = [];
  if ('system_prompt' in event) {
    parts.push(
      event.system_prompt === null
        ? 'instructions cleared'
        : `instructions set (${num(event.system_prompt.length)} characters)`,
    );
  }
  if ('tools' in event)
    parts.push(
      event.tools === null ? 'tools cleared' : `tools: ${event.tools.map((t) => t.name).join(', ') || 'none'}`,
    );
  if ('max_output_tokens' in event) parts.push(`max output tokens: ${event.max_output_tokens ?? 'default'}`);
  return parts.join('; ') || 'no change';
}
