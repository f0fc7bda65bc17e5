// The JSON API, sending the key the user typed (kept in sessionStorage, this tab only) as a bearer token. A 401
// opens the key prompt and retries with the key entered; without server keys (loopback) no key is ever asked for.

const KEY = 'contextfold.apiKey';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function currentKey() {
  return sessionStorage.getItem(KEY) || '';
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

let asking = null; // one prompt for every request waiting on a key

function askKey(message) {
  if (asking) return asking;
  const dialog = document.getElementById('key-dialog');
  const form = document.getElementById('key-form');
  const input = document.getElementById('key-input');
  const cancel = document.getElementById('key-cancel');
  document.getElementById('key-message').textContent = message;
  asking = new Promise((resolve, reject) => {
    const done = (key) => {
      form.removeEventListener('submit', onSubmit);
      cancel.removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      asking = null;
      if (key) resolve(key);
      else reject(new ApiError(401, 'an API key is needed to read this server'));
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY, key);
      input.value = '';
      done(key);
    };
    const onCancel = (event) => {
      event.preventDefault();
      done('');
    };
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/** Open the key prompt now (the header's button); resolves once a key was entered. */
export function promptKey() {
  return askKey('Enter an API key for this server (create one with `contextfold keys create`).');
}

/** GET a JSON endpoint; `params` become the query string. Throws ApiError for an error answer. */
export async function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== '') query.set(name, String(value));
  }
  const url = query.size ? `${path}?${query}` : path;
  for (;;) {
    const headers = {Accept: 'application/json'};
    const key = currentKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    const reply = await fetch(url, {headers, cache: 'no-store', credentials: 'omit'});
    const body = await reply.json().catch(() => null);
    if (reply.status === 401) {
      const why = body?.error?.message || 'an API key is needed';
      await askKey(
        key ? `That key was refused (${why}). Enter another one.` : `This server needs an API key (${why}).`,
      );
      continue;
    }
    if (!reply.ok) throw new ApiError(reply.status, body?.error?.message || `HTTP ${reply.status}`);
    return body;
  }
}
