// keygate's admin page: a client of the management API on the same origin.
// No dependencies, no network beyond this origin; DOM is built with
// createElement/textContent only (never innerHTML).
'use strict';

(() => {
  const STORAGE_KEY = 'keygate.adminKey';
  const STATUS_EVERY_MS = 2000;
  const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

  /** Builds an element: h('button', {class: 'x', onclick: f}, 'text', child…). */
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const state = { key: null, keys: [], groups: [], status: null, statusText: null, statusTimer: null };

  // ---------------------------------------------------------------------------
  // API

  class ApiError extends Error {
    constructor(status, body) {
      super(describeError(status, body));
      this.status = status;
      this.body = body;
    }
  }

  function describeError(status, body) {
    if (body && typeof body === 'object') {
      if (body.errors && typeof body.errors === 'object') {
        return Object.entries(body.errors).map(([f, m]) => `${f}: ${m}`).join(' ');
      }
      if (body.error === 'managed_by_config') return `${body.message} (the config file owns it).`;
      if (typeof body.message === 'string') return body.message;
    }
    return `keygate answered ${status}.`;
  }

  async function api(method, path, body, key = state.key) {
    let res;
    try {
      res = await fetch(path, {
        method,
        headers: { 'x-api-key': key ?? '', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch {
      throw new ApiError(0, { message: 'Cannot reach keygate: is it still running?' });
    }
    const text = await res.text();
    let value = null;
    if (text !== '') {
      try {
        value = JSON.parse(text);
      } catch {
        value = { message: text };
      }
    }
    if (!res.ok) {
      const err = new ApiError(res.status, value);
      err.retryAfter = res.headers.get('retry-after');
      throw err;
    }
    return value;
  }

  /** A failure of a call made while signed in: a lost key signs out, anything else is shown. */
  function failed(err, where = $('app-error')) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      signOut(err.status === 401 ? 'Your admin key is no longer accepted (deleted, regenerated, expired or disabled). Sign in again.' : loginMessage(err));
      return;
    }
    where.textContent = err instanceof Error ? err.message : String(err);
  }

  // ---------------------------------------------------------------------------
  // Formatting

  const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  const exact = (iso) => new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'long' });

  function relative(iso) {
    const diff = (new Date(iso).getTime() - Date.now()) / 1000;
    const abs = Math.abs(diff);
    const steps = [
      [60, 'second', 1],
      [3600, 'minute', 60],
      [86400, 'hour', 3600],
      [86400 * 30, 'day', 86400],
      [86400 * 365, 'month', 86400 * 30],
      [Infinity, 'year', 86400 * 365],
    ];
    for (const [limit, unit, size] of steps) {
      if (abs < limit) return unit === 'second' && abs < 10 ? 'just now' : rtf.format(Math.round(diff / size), unit);
    }
    return iso;
  }

  function timeCell(iso, empty = '—') {
    if (!iso) return h('span', { class: 'muted' }, empty);
    return h('time', { datetime: iso, title: exact(iso) }, relative(iso));
  }

  // The management API names groups as Metabase does: the built-in ones are "Administrators" and "All Users".
  const groupLabel = (g) => g.name;
  const ALL_USERS_ID = 1;
  const byName = (a, b) => a.name.localeCompare(b.name, undefined, { sensitivity: 'base' }) || a.id - b.id;

  function sourceBadge(source) {
    const text = source === 'builtin' ? 'built in' : source;
    return h('span', { class: `badge badge-${source}` }, text);
  }

  function toast(text) {
    const t = $('toast');
    t.textContent = text;
    t.classList.add('show');
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => t.classList.remove('show'), 4000);
  }

  // ---------------------------------------------------------------------------
  // Sign-in

  function loginMessage(err) {
    if (!(err instanceof ApiError)) return String(err);
    switch (err.status) {
      case 401:
        return 'keygate does not accept this key: it is unknown, expired or disabled. Check it and try again.';
      case 403:
        return 'This key is valid, but it is not in the admin group. The admin page needs a key of the admin group.';
      case 429:
        return `Too many failed attempts from this address. Try again in ${err.retryAfter ?? 'a few'} seconds.`;
      case 400:
        return 'keygate refused the key: ' + err.message;
      default:
        return err.message;
    }
  }

  async function signIn(key) {
    const [keys, groups] = await Promise.all([api('GET', '/api/api-key', undefined, key), api('GET', '/api/permissions/group', undefined, key)]);
    state.key = key;
    sessionStorage.setItem(STORAGE_KEY, key);
    state.keys = keys;
    state.groups = groups;
    $('login').hidden = true;
    $('app').hidden = false;
    $('sign-out').hidden = false;
    $('app-error').textContent = '';
    render();
  }

  function signOut(message = '') {
    closeModal();
    state.key = null;
    state.keys = [];
    state.groups = [];
    sessionStorage.removeItem(STORAGE_KEY);
    $('app').hidden = true;
    $('sign-out').hidden = true;
    $('keys-body').replaceChildren();
    $('groups-body').replaceChildren();
    $('login').hidden = false;
    $('login-error').textContent = message;
    const input = /** @type {HTMLInputElement} */ ($('login-key'));
    input.value = '';
    input.setAttribute('aria-invalid', message ? 'true' : 'false');
    input.focus();
  }

  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = /** @type {HTMLInputElement} */ ($('login-key'));
    const key = input.value.trim();
    const error = $('login-error');
    if (key === '') {
      error.textContent = 'Enter an admin API key.';
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    error.textContent = 'Checking…';
    try {
      await signIn(key);
      input.value = '';
      input.setAttribute('aria-invalid', 'false');
      $('main').focus();
    } catch (err) {
      error.textContent = loginMessage(err);
      input.setAttribute('aria-invalid', 'true');
      input.select();
      input.focus();
    }
  });
  $('sign-out').addEventListener('click', () => signOut());

  async function refresh() {
    try {
      const [keys, groups] = await Promise.all([api('GET', '/api/api-key'), api('GET', '/api/permissions/group')]);
      state.keys = keys;
      state.groups = groups;
      render();
    } catch (err) {
      failed(err);
    }
  }

  // ---------------------------------------------------------------------------
  // Status banner (GET /status needs no key)

  async function loadStatus() {
    try {
      const res = await fetch('/status', { cache: 'no-store', credentials: 'omit' });
      if (!res.ok) throw new Error(`status ${res.status}`);
      const text = await res.text();
      // Re-render (and so re-announce) only when something changed.
      if (text === state.statusText) return;
      state.statusText = text;
      state.status = JSON.parse(text);
      renderStatus();
    } catch {
      state.statusText = null;
      const b = $('status-banner');
      b.hidden = false;
      b.className = 'banner banner-error';
      b.replaceChildren(h('strong', {}, 'Cannot reach keygate\'s /status.'));
    }
  }

  function renderStatus() {
    const s = state.status;
    const b = $('status-banner');
    if (!s) return;
    const applied = s.applied ?? {};
    const last = s.last_reload;
    const failedReload = (last && last.result === 'failure') || s.file_in_sync === false;
    const parts = [];
    if (failedReload && last) {
      b.className = 'banner banner-error';
      b.setAttribute('role', 'alert');
      parts.push(
        h('strong', {}, 'The last reload of the config file failed. '),
        'The previous configuration keeps serving until the file is fixed. ',
        h('span', { class: 'muted-inline' }, 'Attempt ', timeCell(last.at), ` (${last.trigger}).`),
      );
      const errors = Array.isArray(last.errors) && last.errors.length > 0 ? last.errors : [last.error ?? 'unknown error'];
      parts.push(h('ul', { class: 'reload-errors', id: 'reload-errors' }, errors.slice(0, 20).map((e) => h('li', {}, h('code', {}, e)))));
    } else {
      b.className = 'banner banner-ok';
      b.setAttribute('role', 'status');
    }
    parts.push(
      h(
        'p',
        { class: 'applied' },
        'Config ',
        h('code', {}, s.config_file ?? '?'),
        applied.revision !== undefined && applied.revision !== null ? ` — revision ${applied.revision} applied ` : ' applied ',
        applied.at ? timeCell(applied.at) : '—',
        applied.sha256 ? h('span', { class: 'muted-inline', title: `SHA-256 ${applied.sha256}` }, ` · sha256 ${applied.sha256.slice(0, 12)}`) : null,
      ),
    );
    b.replaceChildren(...parts);
    b.hidden = false;
    renderConfigNote();
  }

  function renderConfigNote() {
    const file = state.status?.config_file;
    const note = $('config-note');
    note.replaceChildren(
      h('span', { class: 'badge badge-config' }, 'config'),
      ' Keys and groups marked config are declared in ',
      file ? h('code', {}, file) : 'the config file',
      ' and are read-only here: they change through the file.',
    );
  }

  // ---------------------------------------------------------------------------
  // Rendering

  function render() {
    renderGroupFilter();
    renderKeys();
    renderGroups();
    renderConfigNote();
  }

  function renderGroupFilter() {
    const select = /** @type {HTMLSelectElement} */ ($('filter-group'));
    const current = select.value;
    const groups = [...state.groups].sort(byName);
    select.replaceChildren(h('option', { value: '' }, 'All groups'), ...groups.map((g) => h('option', { value: String(g.id) }, groupLabel(g))));
    select.value = groups.some((g) => String(g.id) === current) ? current : '';
  }

  function renderKeys() {
    const text = /** @type {HTMLInputElement} */ ($('filter-text')).value.trim().toLowerCase();
    const group = /** @type {HTMLSelectElement} */ ($('filter-group')).value;
    const now = Date.now();
    const rows = [...state.keys]
      .sort(byName)
      .filter((k) => group === '' || String(k.group_id) === group)
      .filter((k) => text === '' || [k.name, k.masked_key, k.description ?? '', k.group?.name ?? '', k.source].some((v) => v.toLowerCase().includes(text)));
    $('keys-count').textContent = `(${rows.length === state.keys.length ? rows.length : `${rows.length} of ${state.keys.length}`})`;
    $('keys-empty').hidden = rows.length > 0;
    $('keys-body').replaceChildren(
      ...rows.map((k) => {
        const expired = k.expires_at && new Date(k.expires_at).getTime() <= now;
        const readOnly = k.source === 'config';
        return h(
          'tr',
          { 'data-key-id': String(k.id), 'data-name': k.name, class: [expired ? 'expired' : '', k.disabled ? 'disabled' : ''].join(' ').trim() || undefined },
          h('th', { scope: 'row', 'data-label': 'Name' }, h('span', {}, k.name, k.disabled ? h('span', { class: 'badge badge-warn' }, 'disabled') : null)),
          h('td', { 'data-label': 'Key' }, h('code', { class: 'masked' }, k.masked_key)),
          h('td', { 'data-label': 'Group' }, k.group?.name ?? String(k.group_id)),
          h('td', { 'data-label': 'Source' }, sourceBadge(k.source)),
          h('td', { 'data-label': 'Created' }, timeCell(k.created_at)),
          h('td', { 'data-label': 'Last used' }, timeCell(k.last_used_at, 'never')),
          h(
            'td',
            { 'data-label': 'Expires' },
            k.expires_at
              ? h('span', {}, expired ? h('span', { class: 'badge badge-danger' }, 'expired') : null, ' ', timeCell(k.expires_at))
              : h('span', { class: 'muted' }, 'never'),
          ),
          h('td', { 'data-label': 'Description' }, k.description ?? ''),
          h(
            'td',
            { class: 'actions', 'data-label': 'Actions' },
            readOnly
              ? h('span', { class: 'readonly', title: `Declared in ${state.status?.config_file ?? 'the config file'}: change it there.` }, 'Read-only (config file)')
              : [
                  h('button', { type: 'button', class: 'secondary', 'aria-label': `Edit ${k.name}`, onclick: (e) => editKey(k, e.currentTarget) }, 'Edit'),
                  h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${k.name}`, onclick: (e) => deleteKey(k, e.currentTarget) }, 'Delete'),
                ],
          ),
        );
      }),
    );
  }

  function renderGroups() {
    const groups = [...state.groups].sort(byName);
    $('groups-body').replaceChildren(
      ...groups.map((g) =>
        h(
          'tr',
          { 'data-group-id': String(g.id), 'data-name': g.name },
          h('th', { scope: 'row', 'data-label': 'Name' }, g.name),
          h('td', { 'data-label': 'Members', class: 'members' }, String(g.member_count)),
          h('td', { 'data-label': 'Source' }, sourceBadge(g.source)),
          h('td', { 'data-label': 'Description' }, g.description ?? ''),
          h(
            'td',
            { class: 'actions', 'data-label': 'Actions' },
            g.source === 'api'
              ? [
                  h('button', { type: 'button', class: 'secondary', 'aria-label': `Edit group ${g.name}`, onclick: (e) => editGroup(g, e.currentTarget) }, 'Edit'),
                  h('button', { type: 'button', class: 'danger', 'aria-label': `Delete group ${g.name}`, onclick: (e) => deleteGroup(g, e.currentTarget) }, 'Delete'),
                ]
              : h(
                  'span',
                  { class: 'readonly', title: g.source === 'builtin' ? 'Built-in groups cannot be deleted.' : `Declared in ${state.status?.config_file ?? 'the config file'}: change it there.` },
                  g.source === 'builtin' ? 'Built in' : 'Read-only (config file)',
                ),
          ),
        ),
      ),
    );
  }

  $('filter-text').addEventListener('input', renderKeys);
  $('filter-group').addEventListener('change', renderKeys);

  // ---------------------------------------------------------------------------
  // Modals: focus is trapped inside and returned to the opener on close.

  const modal = { opener: null, onClose: null };
  const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

  function focusables() {
    return [...$('modal').querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null || el === document.activeElement);
  }

  /** Opens a modal titled `title` with `body` (nodes); `focus` is the element focused first. */
  function openModal(title, body, opener, { focus, onClose, danger } = {}) {
    const box = $('modal');
    if (!$('modal-backdrop').hidden) closeModal(false);
    modal.opener = opener ?? document.activeElement;
    modal.onClose = onClose ?? null;
    box.className = danger ? 'modal modal-danger' : 'modal';
    box.replaceChildren(
      h('div', { class: 'modal-head' }, h('h2', { id: 'modal-title' }, title), h('button', { type: 'button', class: 'icon', 'aria-label': 'Close', onclick: () => closeModal() }, '×')),
      h('div', { class: 'modal-body' }, body),
    );
    $('modal-backdrop').hidden = false;
    $('main').setAttribute('inert', '');
    document.querySelector('header.top').setAttribute('inert', '');
    $('status-banner').setAttribute('inert', '');
    (focus ?? focusables()[1] ?? focusables()[0])?.focus();
  }

  /** Replaces the open modal's title and body (e.g. with the new key). */
  function replaceModal(title, body, focus) {
    $('modal-title').textContent = title;
    $('modal').querySelector('.modal-body').replaceChildren(body);
    (focus ?? focusables()[0])?.focus();
  }

  function closeModal(restore = true) {
    if ($('modal-backdrop').hidden) return;
    // The body goes with it: a key shown once is not left in the DOM.
    $('modal').replaceChildren();
    $('modal-backdrop').hidden = true;
    for (const el of [$('main'), document.querySelector('header.top'), $('status-banner')]) el.removeAttribute('inert');
    const onClose = modal.onClose;
    modal.onClose = null;
    const opener = modal.opener;
    modal.opener = null;
    if (onClose) onClose();
    if (restore && opener && opener.isConnected) opener.focus();
    else if (restore) $('main').focus();
  }

  document.addEventListener('keydown', (e) => {
    if ($('modal-backdrop').hidden) return;
    if (e.key === 'Escape') {
      e.preventDefault();
      closeModal();
      return;
    }
    if (e.key !== 'Tab') return;
    const items = focusables();
    if (items.length === 0) {
      e.preventDefault();
      return;
    }
    const first = items[0];
    const last = items[items.length - 1];
    const inside = $('modal').contains(document.activeElement);
    if (e.shiftKey && (document.activeElement === first || !inside)) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (document.activeElement === last || !inside)) {
      e.preventDefault();
      first.focus();
    }
  });
  $('modal-backdrop').addEventListener('mousedown', (e) => {
    if (e.target === $('modal-backdrop')) closeModal();
  });

  let fieldSeq = 0;
  function field(label, control, hint) {
    const id = `f${++fieldSeq}`;
    control.id = id;
    const hintId = hint ? `${id}-hint` : undefined;
    if (hintId) control.setAttribute('aria-describedby', hintId);
    return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
  }

  function groupSelect(selectedId) {
    const groups = [...state.groups].sort(byName);
    const select = h('select', { name: 'group' }, ...groups.map((g) => h('option', { value: String(g.id) }, groupLabel(g))));
    const fallback = groups.find((g) => g.id === ALL_USERS_ID) ?? groups[0];
    select.value = String(selectedId ?? fallback?.id ?? '');
    return select;
  }

  const formError = () => h('p', { class: 'error', role: 'alert' });

  function buttons(...items) {
    return h('div', { class: 'modal-actions' }, ...items);
  }

  /** The "shown once" view of a fresh key. */
  function revealKey(name, key) {
    const input = h('input', { type: 'text', readonly: true, value: key, id: 'new-key', class: 'secret', spellcheck: 'false', 'aria-describedby': 'new-key-warning' });
    const copied = h('span', { class: 'copied', role: 'status', 'aria-live': 'polite' });
    const copy = h(
      'button',
      {
        type: 'button',
        class: 'primary',
        id: 'copy-key',
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(key);
          } catch {
            input.select();
            document.execCommand('copy');
          }
          copied.textContent = 'Copied to the clipboard.';
        },
      },
      'Copy',
    );
    const done = h('button', { type: 'button', class: 'secondary', onclick: () => closeModal() }, 'Done');
    const body = h(
      'div',
      { class: 'reveal' },
      h('p', { class: 'warning', id: 'new-key-warning' }, h('strong', {}, 'Copy this key now. '), `It cannot be shown again: keygate keeps only its SHA-256. It is the key of “${name}”.`),
      h('label', { for: 'new-key' }, 'API key'),
      h('div', { class: 'copy-row' }, input, copy),
      copied,
      buttons(done),
    );
    return { body, focus: copy };
  }

  const cancelButton = () => h('button', { type: 'button', class: 'secondary', onclick: () => closeModal() }, 'Cancel');

  /**
   * A form whose first field is a required name: the empty-name check, the busy submit button and
   * the error line are here once. `send()` makes the call and shows its result; an expired or
   * non-admin key (401/403) signs out, any other error is shown in the form.
   */
  function nameForm({ name, nameLabel, missing, submitLabel, fields, leading = [], send }) {
    const err = formError();
    const submit = h('button', { type: 'submit', class: 'primary' }, submitLabel);
    return h(
      'form',
      {
        novalidate: true,
        onsubmit: async (e) => {
          e.preventDefault();
          if (name.value.trim() === '') {
            err.textContent = missing;
            name.focus();
            return;
          }
          submit.disabled = true;
          try {
            await send();
          } catch (e2) {
            submit.disabled = false;
            if (e2 instanceof ApiError && (e2.status === 401 || e2.status === 403)) return failed(e2);
            err.textContent = e2.message;
            name.focus();
          }
        },
      },
      field(nameLabel, name),
      ...fields,
      err,
      buttons(...leading, cancelButton(), submit),
    );
  }

  /** The trimmed description, or undefined when left empty. */
  const described = (input) => (input.value.trim() === '' ? undefined : input.value.trim());

  // ---------------------------------------------------------------------------
  // Keys

  function createKey(opener) {
    const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '254', autocomplete: 'off' });
    const group = groupSelect();
    const description = h('input', { type: 'text', name: 'description', autocomplete: 'off' });
    const form = nameForm({
      name,
      nameLabel: 'Key name',
      missing: 'Enter a name for the key.',
      submitLabel: 'Create',
      fields: [field('Group', group, 'Its allow rules decide what the key may call.'), field('Description (optional)', description)],
      send: async () => {
        const body = { name: name.value.trim(), group_id: Number(group.value), description: described(description) };
        const created = await api('POST', '/api/api-key', body);
        const shown = revealKey(created.name, created.unmasked_key);
        replaceModal('API key created', shown.body, shown.focus);
        void refresh();
      },
    });
    openModal('Create API key', form, opener, { focus: name });
  }

  function editKey(k, opener) {
    const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '254', autocomplete: 'off', value: k.name });
    const group = groupSelect(k.group_id);
    const description = h('input', { type: 'text', name: 'description', autocomplete: 'off', value: k.description ?? '' });
    const regenerate = h('button', { type: 'button', class: 'warn', onclick: () => confirmRegenerate(k, opener) }, 'Regenerate key…');
    const form = nameForm({
      name,
      nameLabel: 'Key name',
      missing: 'Enter a name for the key.',
      submitLabel: 'Save',
      fields: [
        field('Group', group),
        field('Description', description),
        h('p', { class: 'hint' }, 'Key ', h('code', {}, k.masked_key), '. Regenerating replaces it: the current key stops working at once.'),
      ],
      leading: [regenerate, h('span', { class: 'spacer' })],
      send: async () => {
        const body = { name: name.value.trim(), group_id: Number(group.value), description: described(description) ?? null };
        await api('PUT', `/api/api-key/${k.id}`, body);
        closeModal();
        toast(`Saved “${body.name}”.`);
        void refresh();
      },
    });
    openModal(`Edit API key “${k.name}”`, form, opener, { focus: name });
  }

  /**
   * A confirmation dialog for an action that cannot be undone: Cancel has the focus; `act()` runs
   * on confirm, with the button disabled meanwhile; its error is shown in the dialog.
   */
  function confirmAction({ title, text, yesLabel, yesClass, act }, opener) {
    const err = formError();
    const yes = h('button', { type: 'button', class: yesClass }, yesLabel);
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      try {
        await act();
      } catch (e2) {
        yes.disabled = false;
        if (e2 instanceof ApiError && (e2.status === 401 || e2.status === 403)) return failed(e2);
        err.textContent = e2.message;
      }
    });
    const cancel = cancelButton();
    openModal(title, h('div', {}, ...text, err, buttons(cancel, yes)), opener, { focus: cancel, danger: true });
  }

  function confirmRegenerate(k, opener) {
    confirmAction(
      {
        title: `Regenerate “${k.name}”?`,
        text: [h('p', {}, 'A new key replaces ', h('code', {}, k.masked_key), '. Anything still using the current key is refused from the next request on.')],
        yesLabel: 'Regenerate',
        yesClass: 'warn',
        act: async () => {
          const r = await api('PUT', `/api/api-key/${k.id}/regenerate`);
          const shown = revealKey(k.name, r.unmasked_key);
          replaceModal('API key regenerated', shown.body, shown.focus);
          void refresh();
        },
      },
      opener,
    );
  }

  function deleteKey(k, opener) {
    confirmAction(
      {
        title: `Delete API key “${k.name}”?`,
        text: [h('p', {}, 'The key ', h('strong', {}, k.name), ' (', h('code', {}, k.masked_key), ') is refused from the next request on. This cannot be undone.')],
        yesLabel: 'Delete key',
        yesClass: 'danger',
        act: async () => {
          await api('DELETE', `/api/api-key/${k.id}`);
          closeModal(false);
          $('create-key').focus();
          toast(`Deleted “${k.name}”.`);
          void refresh();
        },
      },
      opener,
    );
  }

  // ---------------------------------------------------------------------------
  // Groups

  function createGroup(opener) {
    const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '254', autocomplete: 'off' });
    const description = h('input', { type: 'text', name: 'description', autocomplete: 'off' });
    const form = nameForm({
      name,
      nameLabel: 'Group name',
      missing: 'Enter a name for the group.',
      submitLabel: 'Create',
      fields: [
        field('Description (optional)', description),
        h('p', { class: 'hint' }, 'A group made here has no allow rules: its keys may call every route of the upstream. To restrict it, declare it in the config file.'),
      ],
      send: async () => {
        const body = { name: name.value.trim(), description: described(description) };
        await api('POST', '/api/permissions/group', body);
        closeModal();
        toast(`Created group “${body.name}”.`);
        void refresh();
      },
    });
    openModal('Create group', form, opener, { focus: name });
  }

  function editGroup(g, opener) {
    const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '254', autocomplete: 'off', value: g.name });
    const description = h('input', { type: 'text', name: 'description', autocomplete: 'off', value: g.description ?? '' });
    const form = nameForm({
      name,
      nameLabel: 'Group name',
      missing: 'Enter a name for the group.',
      submitLabel: 'Save',
      fields: [
        field('Description', description),
        h('p', { class: 'hint' }, 'Renaming changes the group name that its keys carry to the upstream (the x-api-key-group header). Names are unique ignoring case.'),
      ],
      send: async () => {
        const body = { name: name.value.trim(), description: described(description) ?? null };
        await api('PUT', `/api/permissions/group/${g.id}`, body);
        closeModal();
        toast(`Saved group “${body.name}”.`);
        void refresh();
      },
    });
    openModal(`Edit group “${g.name}”`, form, opener, { focus: name });
  }

  function deleteGroup(g, opener) {
    const n = g.member_count;
    confirmAction(
      {
        title: `Delete group “${g.name}”?`,
        text: [
          h('p', {}, `Its keys move to All Users (all-users) and keep working, under All Users' rules: ${n === 1 ? '1 key' : `${n} keys`}.`),
          h('p', { class: 'hint' }, 'This cannot be undone.'),
        ],
        yesLabel: 'Delete group',
        yesClass: 'danger',
        act: async () => {
          await api('DELETE', `/api/permissions/group/${g.id}`);
          closeModal(false);
          $('create-group').focus();
          toast(`Deleted group “${g.name}”.`);
          void refresh();
        },
      },
      opener,
    );
  }

  $('create-key').addEventListener('click', (e) => createKey(e.currentTarget));
  $('create-group').addEventListener('click', (e) => createGroup(e.currentTarget));

  // ---------------------------------------------------------------------------
  // Start

  async function start() {
    void loadStatus();
    state.statusTimer = setInterval(() => {
      void loadStatus();
    }, STATUS_EVERY_MS);
    // Relative times drift: re-render them now and then.
    setInterval(() => {
      if (state.key && $('modal-backdrop').hidden) renderKeys();
    }, 30_000);
    const saved = sessionStorage.getItem(STORAGE_KEY);
    if (saved) {
      try {
        await signIn(saved);
        return;
      } catch (err) {
        signOut(loginMessage(err));
        return;
      }
    }
    signOut();
  }

  void start();
})();
