// The inspector's entry point: a hash router between the conversation list (#/) and one conversation (#/c/ID).
// Each page returns a function that stops whatever it runs (polling) when another page replaces it.

import {ApiError, currentKey, forgetKey, promptKey} from './api.js';
import {h, clear} from './dom.js';
import {listPage} from './list.js';
import {conversationPage} from './conversation.js';

const main = document.getElementById('main');
let stop = () => {};

function route(event) {
  stop();
  stop = () => {};
  clear(main);
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
  const [kind, id] = hash.split('/');
  const page = kind === 'c' && id ? conversationPage(main, id) : listPage(main);
  stop = page.stop;
  page.ready.catch((error) => showError(error));
  if (event) main.focus({preventScroll: true}); // a page changed: start reading it (not on the first load)
}

function showError(error) {
  const message = error instanceof ApiError ? error.message : String(error?.message || error);
  // what was waiting for the data that failed will not come: no "Loading…" under the error
  for (const waiting of main.querySelectorAll('.loading')) waiting.remove();
  main.prepend(h('p', {class: 'error', role: 'alert'}, message));
  if (error instanceof ApiError && error.status === 401) {
    main.prepend(
      h('button', {type: 'button', class: 'primary', onclick: () => promptKey().then(() => route())}, 'Enter API key'),
    );
  }
}

function keyStatus() {
  document.getElementById('key-status').textContent = currentKey() ? 'Using the API key you entered' : '';
}

document.getElementById('key-button').addEventListener('click', () => {
  promptKey()
    .then(
      () => route(),
      () => {},
    )
    .finally(keyStatus);
});
document.getElementById('key-forget').addEventListener('click', () => {
  forgetKey();
  keyStatus();
  document.getElementById('key-input').value = '';
});
document.getElementById('key-form').addEventListener('submit', () => setTimeout(keyStatus));
window.addEventListener('hashchange', route);
// the skip link moves focus without touching the hash, which is the router's
document.querySelector('.skip').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener('unhandledrejection', (event) => {
  if (event.reason instanceof ApiError) {
    event.preventDefault();
    showError(event.reason);
  }
});
keyStatus();
route(null);
