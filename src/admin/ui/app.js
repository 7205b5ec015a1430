// keygate's admin page: a client of the management API on the same origin.
// No dependencies, no network beyond this origin; DOM is built with
// createElement/textContent only (never innerHTML).
'use strict';

(() => {
  const STORAGE_KEY = 'keygate.adminKey';
  /** How often /status is asked: a new revision or change there reloads the lists. */
  const STATUS_EVERY_MS = 2000;
  /** How often relative times ("2 minutes ago") are brought up to date. */
  const TICK_EVERY_MS = 10_000;
  const DEFAULT_KEY_HEADER = 'x-api-key';
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
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // Icons: inline SVG (nothing fetched), drawn with the text colour, hidden from screen readers
  // (the button that holds one carries the accessible name).
  const SVG = 'http://www.w3.org/2000/svg';
  const ICONS = {
    edit: ['M4 20h4L19 9l-4-4L4 16z', 'M13.5 6.5l4 4'],
    delete: ['M4 7h16', 'M9 7V4h6v3', 'M6 7l1 13h10l1-13', 'M10 11v6', 'M14 11v6'],
    copy: ['M9 9h11v11H9z', 'M15 9V4H4v11h5'],
    lock: ['M6 11h12v9H6z', 'M8.5 11V8a3.5 3.5 0 0 1 7 0v3'],
  };
  function icon(name) {
    const svg = document.createElementNS(SVG, 'svg');
    for (const [k, v] of Object.entries({ viewBox: '0 0 24 24', width: '18', height: '18', 'aria-hidden': 'true', focusable: 'false', class: 'icon' })) svg.setAttribute(k, v);
    for (const d of ICONS[name]) {
      const path = document.createElementNS(SVG, 'path');
      for (const [k, v] of Object.entries({ d, fill: 'none', stroke: 'currentColor', 'stroke-width': '2', 'stroke-linecap': 'round', 'stroke-linejoin': 'round' })) path.setAttribute(k, v);
      svg.append(path);
    }
    return svg;
  }

  /** A button showing only an icon; `label` is its accessible name, `tip` its tooltip. */
  function iconButton(name, label, tip, { class: extra = '', ...attrs }) {
    return h('button', { type: 'button', ...attrs, class: `icon-button ${extra}`.trim(), 'aria-label': label, title: tip }, icon(name));
  }

  const state = {
    key: null,
    keyHeader: DEFAULT_KEY_HEADER,
    keys: [],
    groups: [],
    status: null,
    statusText: null,
    /** The /status mark (revision, SHA-256, changes) the lists were last loaded at. */
    listsMark: null,
    /** Ids of the keys shown as expired (a key that expires while the page is open is re-rendered). */
    expiredShown: new Set(),
    refreshing: null,
    refreshAgain: false,
  };

  // ---------------------------------------------------------------------------
  // Words

  const pluralRules = new Intl.PluralRules('en');
  /** `1 second`, `2 seconds`; `many` for words whose plural is not word + s. */
  const plural = (n, one, many = `${one}s`) => `${n} ${pluralRules.select(n) === 'one' ? one : many}`;

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
        // The header keygate reads keys from (keygate.key_header), as /status names it.
        headers: { [state.keyHeader]: key ?? '', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
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
      const message = err.status === 401 ? 'Your admin key is no longer accepted (deleted, regenerated, expired or disabled). Sign in again.' : loginMessage(err);
      // A key shown once (perhaps this very admin key, regenerated) is not taken away: sign out when it is closed.
      if (modal.guard !== null) modal.afterClose = () => signOut(message);
      else signOut(message);
      return;
    }
    where.textContent = err instanceof Error ? err.message : String(err);
  }

  // ---------------------------------------------------------------------------
  // Formatting

  const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });
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

  /** A relative time that keeps itself current (see tick()), with the exact time on hover. */
  function timeCell(iso, empty = '—') {
    if (!iso) return h('span', { class: 'muted' }, empty);
    return h('time', { datetime: iso, title: exact(iso) }, relative(iso));
  }

  /** Brings every relative time on the page up to date; a key that has just expired is shown so. */
  function tick() {
    for (const t of document.querySelectorAll('time[datetime]')) {
      const text = relative(t.getAttribute('datetime'));
      if (t.textContent !== text) t.textContent = text;
    }
    if (state.keys.some((k) => isExpired(k) && !state.expiredShown.has(k.id))) renderKeys();
  }

  const isExpired = (k, now = Date.now()) => Boolean(k.expires_at) && new Date(k.expires_at).getTime() <= now;

  // The management API names groups as Metabase does: the built-in ones are "Administrators" and "All Users".
  const ALL_USERS_ID = 1;
  const ADMIN_ID = 2;
  const byName = (a, b) => a.name.localeCompare(b.name, undefined, { sensitivity: 'base' }) || a.id - b.id;

  /** The key as the CLI shows it: its first characters and an ellipsis; a key known only by its hash says so. */
  function shownKey(k) {
    const prefix = (k.masked_key ?? '').replace(/\*+$/, '');
    return prefix === '' ? null : `${prefix}…`;
  }

  function keyView(k) {
    const shown = shownKey(k);
    if (shown === null) {
      return h('span', { class: 'hash-only', title: 'Declared by its key_hash in the config file: keygate has never seen the key, so it has no first characters to show.' }, 'hash only');
    }
    return h('code', { class: 'masked', title: 'The first characters of the key: keygate keeps only its SHA-256.' }, shown);
  }

  /** The key in running text (dialogs). */
  const keyText = (k) => shownKey(k) ?? 'known only by its hash';

  function sourceBadge(source) {
    const text = source === 'builtin' ? 'built in' : source;
    return h('span', { class: `badge badge-${source}` }, text);
  }

  /** A group's allow rules, one line per rule: methods, then paths. */
  function rulesView(g) {
    if (g.allow === null || g.allow === undefined) {
      return h('span', { class: 'muted' }, g.id === ADMIN_ID ? 'Every route and the management API' : 'Every route');
    }
    if (g.allow.length === 0) return h('span', { class: 'muted' }, 'Nothing (no rules)');
    return h(
      'ul',
      { class: 'rules' },
      g.allow.map((r) =>
        h('li', {}, h('span', { class: 'methods' }, r.methods && r.methods.length > 0 ? r.methods.join(', ') : 'Any method'), ' ', r.paths.map((p, i) => [i > 0 ? ' ' : null, h('code', {}, p)])),
      ),
    );
  }

  /** The same rules as one sentence (for hints). */
  function rulesText(g) {
    if (!g) return '';
    if (g.allow === null || g.allow === undefined) return g.id === ADMIN_ID ? `${g.name} may call every route and the management API.` : `${g.name} may call every route of the upstream.`;
    if (g.allow.length === 0) return `${g.name} allows nothing.`;
    return `${g.name} allows ${g.allow.map((r) => `${r.methods && r.methods.length > 0 ? r.methods.join(', ') : 'any method'} on ${r.paths.join(', ')}`).join('; ')}.`;
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
      case 429: {
        const seconds = Number.parseInt(err.retryAfter ?? '', 10);
        return `Too many failed attempts from this address. Try again in ${Number.isFinite(seconds) ? plural(seconds, 'second') : 'a few seconds'}.`;
      }
      case 400:
        return 'keygate refused the key: ' + err.message;
      default:
        return err.message;
    }
  }

  /**
   * One request checks the key (a wrong key spends one failed-authentication token, not two);
   * the groups are asked for only once it is accepted.
   */
  async function signIn(key) {
    if (state.status === null) await loadStatus();
    const mark = statusMark();
    const keys = await api('GET', '/api/api-key', undefined, key);
    state.key = key;
    sessionStorage.setItem(STORAGE_KEY, key);
    state.keys = keys;
    state.listsMark = mark;
    $('login').hidden = true;
    $('app').hidden = false;
    $('sign-out').hidden = false;
    $('app-error').textContent = '';
    render();
    try {
      state.groups = await api('GET', '/api/permissions/group');
      render();
    } catch (err) {
      failed(err);
    }
  }

  function signOut(message = '') {
    closeModal(false, true);
    state.key = null;
    state.keys = [];
    state.groups = [];
    state.listsMark = null;
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
    input.focus({ preventScroll: true });
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
      // To the content, without moving the page: the header and the reload banner stay in view.
      $('main').focus({ preventScroll: true });
    } catch (err) {
      error.textContent = loginMessage(err);
      input.setAttribute('aria-invalid', 'true');
      input.select();
      input.focus();
    }
  });
  $('sign-out').addEventListener('click', () => signOut());

  /** Reloads both lists; calls that come while one runs are folded into one more. */
  function refresh() {
    if (state.refreshing !== null) {
      state.refreshAgain = true;
      return state.refreshing;
    }
    state.refreshing = (async () => {
      do {
        state.refreshAgain = false;
        // Not while a sign-out waits for the dialog of a key shown once: the key is refused anyway.
        if (state.key === null || modal.afterClose !== null) break;
        const mark = statusMark();
        try {
          const keys = await api('GET', '/api/api-key');
          const groups = await api('GET', '/api/permissions/group');
          if (state.key === null) break;
          state.keys = keys;
          state.groups = groups;
          state.listsMark = mark;
          $('app-error').textContent = '';
          render();
        } catch (err) {
          failed(err);
          break;
        }
      } while (state.refreshAgain);
    })().finally(() => {
      state.refreshing = null;
    });
    return state.refreshing;
  }

  // ---------------------------------------------------------------------------
  // Status banner (GET /status needs no key)

  /** What moves when keys or groups change: a new revision or file, or any write (`changes`). */
  function statusMark() {
    const s = state.status;
    if (!s) return null;
    return JSON.stringify([s.applied?.revision ?? null, s.applied?.sha256 ?? null, s.changes ?? null]);
  }

  async function loadStatus() {
    try {
      const res = await fetch('/status', { cache: 'no-store', credentials: 'omit' });
      if (!res.ok) throw new Error(`status ${res.status}`);
      const text = await res.text();
      // Re-render (and so re-announce) only when something changed.
      if (text === state.statusText) return;
      state.statusText = text;
      state.status = JSON.parse(text);
      if (typeof state.status.key_header === 'string' && state.status.key_header !== '') state.keyHeader = state.status.key_header;
      renderStatus();
      // The file or another admin changed something: the lists follow.
      if (state.key !== null && state.listsMark !== null && statusMark() !== state.listsMark) void refresh();
    } catch {
      state.statusText = null;
      const b = $('status-banner');
      b.hidden = false;
      b.className = 'banner banner-error';
      b.replaceChildren(h('p', {}, h('strong', {}, 'Cannot reach keygate\'s /status.'), ' Is keygate still running?'));
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
        h(
          'p',
          {},
          h('strong', {}, 'The last reload of the config file failed. '),
          'The previous configuration keeps serving until the file is fixed. ',
          h('span', { class: 'muted-inline' }, 'Attempt ', timeCell(last.at), ` (${last.trigger}).`),
        ),
      );
      const errors = Array.isArray(last.errors) && last.errors.length > 0 ? last.errors : [last.error ?? 'unknown error'];
      parts.push(h('ul', { class: 'reload-errors', id: 'reload-errors' }, errors.slice(0, 20).map((e) => h('li', {}, h('code', {}, e)))));
      if (errors.length > 20) parts.push(h('p', { class: 'muted-inline' }, `and ${plural(errors.length - 20, 'more problem')}.`));
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
    if (s.store && s.store.reachable === false) {
      parts.push(h('p', {}, h('strong', {}, 'The database cannot be reached: '), s.store.error ?? '', ' Keys keep working; changes are refused until it is back.'));
    }
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

  /**
   * Replaces a table body's rows; the row button that had the focus keeps it (matched by its
   * data-focus name), so a refresh in the background never throws a keyboard user out.
   */
  function replaceRows(body, rows) {
    const active = document.activeElement;
    const focusName = active && body.contains(active) ? active.getAttribute('data-focus') : null;
    body.replaceChildren(...rows);
    if (focusName) body.querySelector(`[data-focus="${CSS.escape(focusName)}"]`)?.focus({ preventScroll: true });
  }

  function renderGroupFilter() {
    const select = /** @type {HTMLSelectElement} */ ($('filter-group'));
    const current = select.value;
    const groups = [...state.groups].sort(byName);
    select.replaceChildren(h('option', { value: '' }, 'All groups'), ...groups.map((g) => h('option', { value: String(g.id) }, g.name)));
    select.value = groups.some((g) => String(g.id) === current) ? current : '';
  }

  function readOnlyMark(label) {
    return h('span', { class: 'readonly', title: label }, icon('lock'), h('span', { class: 'visually-hidden' }, label));
  }

  function renderKeys() {
    const text = /** @type {HTMLInputElement} */ ($('filter-text')).value.trim().toLowerCase();
    const group = /** @type {HTMLSelectElement} */ ($('filter-group')).value;
    const now = Date.now();
    const rows = [...state.keys]
      .sort(byName)
      .filter((k) => group === '' || String(k.group_id) === group)
      .filter((k) => text === '' || [k.name, shownKey(k) ?? 'hash only', k.description ?? '', k.group?.name ?? '', k.source].some((v) => v.toLowerCase().includes(text)));
    $('keys-count').textContent = `(${rows.length === state.keys.length ? rows.length : `${rows.length} of ${state.keys.length}`})`;
    $('keys-empty').hidden = rows.length > 0;
    state.expiredShown = new Set(state.keys.filter((k) => isExpired(k, now)).map((k) => k.id));
    const file = state.status?.config_file ?? 'the config file';
    replaceRows(
      $('keys-body'),
      rows.map((k) => {
        const expired = isExpired(k, now);
        const readOnly = k.source === 'config';
        return h(
          'tr',
          { 'data-key-id': String(k.id), 'data-name': k.name, class: [expired ? 'expired' : '', k.disabled ? 'disabled' : ''].join(' ').trim() || undefined },
          // One element per cell: the narrow layout sets it beside its label.
          h('th', { scope: 'row', 'data-label': 'Name', class: 'col-name' }, h('span', { class: 'text' }, k.name, k.disabled ? [' ', h('span', { class: 'badge badge-warn' }, 'disabled')] : null)),
          h('td', { 'data-label': 'Key', class: 'col-key' }, keyView(k)),
          h('td', { 'data-label': 'Group', class: 'col-group' }, k.group?.name ?? String(k.group_id)),
          h('td', { 'data-label': 'Source', class: 'col-source' }, sourceBadge(k.source)),
          h('td', { 'data-label': 'Created', class: 'col-time' }, timeCell(k.created_at)),
          h('td', { 'data-label': 'Last used', class: 'col-time' }, timeCell(k.last_used_at, 'never')),
          h(
            'td',
            { 'data-label': 'Expires', class: 'col-time' },
            k.expires_at ? h('span', {}, expired ? [h('span', { class: 'badge badge-danger' }, 'expired'), ' '] : null, timeCell(k.expires_at)) : h('span', { class: 'muted' }, 'never'),
          ),
          h('td', { 'data-label': 'Description', class: 'col-description' }, k.description ? h('span', { class: 'text' }, k.description) : null),
          h(
            'td',
            { class: 'actions col-actions', 'data-label': 'Actions' },
            readOnly
              ? readOnlyMark(`Read-only (config file): declared in ${file}, change it there.`)
              : [
                  iconButton('edit', `Edit ${k.name}`, 'Edit', { 'data-focus': `edit-key-${k.id}`, onclick: (e) => editKey(k, e.currentTarget) }),
                  iconButton('delete', `Delete ${k.name}`, 'Delete', { class: 'danger', 'data-focus': `delete-key-${k.id}`, onclick: (e) => deleteKey(k, e.currentTarget) }),
                ],
          ),
        );
      }),
    );
  }

  function renderGroups() {
    const groups = [...state.groups].sort(byName);
    const file = state.status?.config_file ?? 'the config file';
    replaceRows(
      $('groups-body'),
      groups.map((g) =>
        h(
          'tr',
          { 'data-group-id': String(g.id), 'data-name': g.name },
          h('th', { scope: 'row', 'data-label': 'Name', class: 'col-name' }, h('span', { class: 'text' }, g.name)),
          h('td', { 'data-label': 'Members', class: 'members col-members' }, String(g.member_count)),
          h('td', { 'data-label': 'Source', class: 'col-source' }, sourceBadge(g.source)),
          h('td', { 'data-label': 'Allows', class: 'allows col-allows' }, rulesView(g)),
          h('td', { 'data-label': 'Description', class: 'col-description' }, g.description ? h('span', { class: 'text' }, g.description) : null),
          h(
            'td',
            { class: 'actions col-actions', 'data-label': 'Actions' },
            g.source === 'api'
              ? [
                  iconButton('edit', `Edit group ${g.name}`, 'Edit', { 'data-focus': `edit-group-${g.id}`, onclick: (e) => editGroup(g, e.currentTarget) }),
                  iconButton('delete', `Delete group ${g.name}`, 'Delete', { class: 'danger', 'data-focus': `delete-group-${g.id}`, onclick: (e) => deleteGroup(g, e.currentTarget) }),
                ]
              : readOnlyMark(g.source === 'builtin' ? 'Built in: cannot be renamed or deleted.' : `Read-only (config file): declared in ${file}, change it there.`),
          ),
        ),
      ),
    );
  }

  $('filter-text').addEventListener('input', renderKeys);
  $('filter-group').addEventListener('change', renderKeys);

  // ---------------------------------------------------------------------------
  // Modals: focus is trapped inside and returned to the opener on close.

  const modal = {
    opener: null,
    /** The opener's data-focus name: found again when a refresh has replaced the opener. */
    openerFocus: null,
    onClose: null,
    /** Asked before a close that the user asked for; returns false to keep the dialog open. */
    guard: null,
    afterClose: null,
  };
  const FOCUSABLE = 'a[href], button:not([disabled]), input:not([disabled]):not([type="hidden"]), select:not([disabled]), textarea:not([disabled]), [tabindex]:not([tabindex="-1"])';

  function focusables() {
    return [...$('modal').querySelectorAll(FOCUSABLE)].filter((el) => el.offsetParent !== null || el === document.activeElement);
  }

  /** Opens a modal titled `title` with `body` (nodes); `focus` is the element focused first. */
  function openModal(title, body, opener, { focus, onClose, danger } = {}) {
    const box = $('modal');
    const keepOpener = !$('modal-backdrop').hidden ? { opener: modal.opener, openerFocus: modal.openerFocus } : null;
    if (keepOpener !== null) closeModal(false, true);
    modal.opener = keepOpener?.opener ?? opener ?? document.activeElement;
    modal.openerFocus = keepOpener?.openerFocus ?? modal.opener?.getAttribute?.('data-focus') ?? null;
    modal.onClose = onClose ?? null;
    modal.guard = null;
    box.className = danger ? 'modal modal-danger' : 'modal';
    box.replaceChildren(
      h('div', { class: 'modal-head' }, h('h2', { id: 'modal-title' }, title), h('button', { type: 'button', class: 'close', 'aria-label': 'Close', onclick: () => requestClose() }, '×')),
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

  /** A close the user asked for (Escape, the backdrop, ×, Done): the dialog may ask first. */
  function requestClose() {
    if ($('modal-backdrop').hidden) return;
    if (modal.guard !== null && !modal.guard()) return;
    closeModal();
  }

  function closeModal(restore = true, quiet = false) {
    if ($('modal-backdrop').hidden) return;
    // The body goes with it: a key shown once is not left in the DOM.
    $('modal').replaceChildren();
    $('modal-backdrop').hidden = true;
    for (const el of [$('main'), document.querySelector('header.top'), $('status-banner')]) el.removeAttribute('inert');
    const { onClose, opener, openerFocus, afterClose } = modal;
    Object.assign(modal, { onClose: null, opener: null, openerFocus: null, guard: null, afterClose: null });
    if (onClose) onClose();
    if (restore) {
      // The opener itself, or the button that replaced it when the lists were refreshed meanwhile.
      const target = opener && opener.isConnected ? opener : openerFocus ? document.querySelector(`[data-focus="${CSS.escape(openerFocus)}"]`) : null;
      if (target) target.focus();
      else $('main').focus({ preventScroll: true });
    }
    if (afterClose && !quiet) afterClose();
  }

  document.addEventListener('keydown', (e) => {
    if ($('modal-backdrop').hidden) return;
    if (e.key === 'Escape') {
      e.preventDefault();
      requestClose();
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
  // A click that starts and ends on the backdrop (not a text selection dragged out of the dialog).
  let backdropDown = false;
  $('modal-backdrop').addEventListener('mousedown', (e) => {
    backdropDown = e.target === $('modal-backdrop');
  });
  $('modal-backdrop').addEventListener('click', (e) => {
    if (backdropDown && e.target === $('modal-backdrop')) requestClose();
    backdropDown = false;
  });

  let fieldSeq = 0;
  function field(label, control, hint) {
    const id = `f${++fieldSeq}`;
    control.id = id;
    const hintNode = typeof hint === 'string' ? h('p', { class: 'hint' }, hint) : (hint ?? null);
    if (hintNode) {
      hintNode.id = `${id}-hint`;
      control.setAttribute('aria-describedby', hintNode.id);
    }
    return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintNode);
  }

  function groupSelect(selectedId) {
    const groups = [...state.groups].sort(byName);
    const select = h('select', { name: 'group' }, ...groups.map((g) => h('option', { value: String(g.id) }, g.name)));
    const fallback = groups.find((g) => g.id === ALL_USERS_ID) ?? groups[0];
    select.value = String(selectedId ?? fallback?.id ?? '');
    return select;
  }

  /** A group select with a hint that says what the chosen group allows. */
  function groupField(selectedId) {
    const select = groupSelect(selectedId);
    const hint = h('p', { class: 'hint' });
    const update = () => {
      hint.textContent = `Its allow rules decide what the key may call: ${rulesText(state.groups.find((g) => String(g.id) === select.value))}`;
    };
    select.addEventListener('change', update);
    update();
    return { select, field: field('Group', select, hint) };
  }

  const formError = () => h('p', { class: 'error', role: 'alert' });

  function buttons(...items) {
    return h('div', { class: 'modal-actions' }, ...items);
  }

  /**
   * The "shown once" view of a fresh key: the whole key, a Copy button, and a question before the
   * dialog closes with the key not copied (Escape, the backdrop, × and Done alike).
   */
  function revealKey(name, key) {
    let copied = false;
    const shown = h('code', { id: 'new-key', class: 'secret', tabindex: '0', 'aria-labelledby': 'new-key-label', 'aria-describedby': 'new-key-warning' }, key);
    const copiedNote = h('span', { class: 'copied', id: 'copy-status', role: 'status', 'aria-live': 'polite' });
    const markCopied = () => {
      copied = true;
      copiedNote.textContent = 'Copied to the clipboard.';
      ask.hidden = true;
      actions.hidden = false;
    };
    const copy = h('button', { type: 'button', class: 'primary', id: 'copy-key' }, icon('copy'), ' Copy key');
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(key);
        markCopied();
        return;
      } catch {
        // No asynchronous clipboard (a plain-HTTP address that is not localhost): select and copy.
      }
      const selection = getSelection();
      selection?.selectAllChildren(shown);
      let ok = false;
      try {
        ok = document.execCommand('copy');
      } catch {
        ok = false;
      }
      if (ok) markCopied();
      else copiedNote.textContent = 'This browser does not let the page copy: the key is selected, press Ctrl+C (⌘C).';
    });
    // A copy made by hand (select, Ctrl+C) counts too.
    shown.addEventListener('copy', () => {
      if (getSelection()?.toString().includes(key)) markCopied();
    });

    const done = h('button', { type: 'button', class: 'secondary', onclick: () => requestClose() }, 'Done');
    const actions = buttons(done);
    const back = h('button', { type: 'button', class: 'primary', id: 'keep-key' }, 'Back to the key');
    const leave = h('button', { type: 'button', class: 'danger', id: 'discard-key', onclick: () => closeModal() }, 'Close without copying');
    const ask = h(
      'div',
      { class: 'ask', id: 'close-question', role: 'alert', hidden: true },
      h('p', {}, h('strong', {}, 'The key has not been copied. '), 'Once this dialog closes, it cannot be shown again: close it anyway?'),
      buttons(leave, back),
    );
    const goBack = () => {
      ask.hidden = true;
      actions.hidden = false;
      copy.focus();
    };
    back.addEventListener('click', goBack);

    const body = h(
      'div',
      { class: 'reveal' },
      h('p', { class: 'warning', id: 'new-key-warning' }, h('strong', {}, 'Copy this key now. '), `It cannot be shown again: keygate keeps only its SHA-256. It is the key of “${name}”.`),
      h('p', { class: 'key-label', id: 'new-key-label' }, 'API key'),
      shown,
      h('div', { class: 'copy-row' }, copy, copiedNote),
      actions,
      ask,
    );
    const guard = () => {
      if (copied) return true;
      // Asked already: Escape or the backdrop again means "back to the key".
      if (!ask.hidden) {
        goBack();
        return false;
      }
      ask.hidden = false;
      actions.hidden = true;
      back.focus();
      return false;
    };
    return { body, focus: copy, guard };
  }

  /** Shows a fresh key in the open dialog, which then asks before closing with it not copied. */
  function showKey(title, name, key) {
    const shown = revealKey(name, key);
    replaceModal(title, shown.body, shown.focus);
    modal.guard = shown.guard;
  }

  const cancelButton = () => h('button', { type: 'button', class: 'secondary', onclick: () => requestClose() }, 'Cancel');

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
    const group = groupField();
    const description = h('input', { type: 'text', name: 'description', autocomplete: 'off' });
    const form = nameForm({
      name,
      nameLabel: 'Key name',
      missing: 'Enter a name for the key.',
      submitLabel: 'Create',
      fields: [group.field, field('Description (optional)', description)],
      send: async () => {
        const body = { name: name.value.trim(), group_id: Number(group.select.value), description: described(description) };
        const created = await api('POST', '/api/api-key', body);
        showKey('API key created', created.name, created.unmasked_key);
        void refresh();
      },
    });
    openModal('Create API key', form, opener, { focus: name });
  }

  function editKey(k, opener) {
    const name = h('input', { type: 'text', name: 'name', required: true, maxlength: '254', autocomplete: 'off', value: k.name });
    const group = groupField(k.group_id);
    const description = h('input', { type: 'text', name: 'description', autocomplete: 'off', value: k.description ?? '' });
    const regenerate = h('button', { type: 'button', class: 'warn', onclick: () => confirmRegenerate(k, opener) }, 'Regenerate key…');
    const form = nameForm({
      name,
      nameLabel: 'Key name',
      missing: 'Enter a name for the key.',
      submitLabel: 'Save',
      fields: [
        group.field,
        field('Description', description),
        h('p', { class: 'hint' }, 'Key ', h('code', {}, keyText(k)), '. Regenerating replaces it: the current key stops working at once.'),
      ],
      leading: [regenerate, h('span', { class: 'spacer' })],
      send: async () => {
        const body = { name: name.value.trim(), group_id: Number(group.select.value), description: described(description) ?? null };
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
        text: [h('p', {}, 'A new key replaces ', h('code', {}, keyText(k)), '. Anything still using the current key is refused from the next request on.')],
        yesLabel: 'Regenerate',
        yesClass: 'warn',
        act: async () => {
          const r = await api('PUT', `/api/api-key/${k.id}/regenerate`);
          showKey('API key regenerated', k.name, r.unmasked_key);
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
        text: [h('p', {}, 'The key ', h('strong', {}, k.name), ' (', h('code', {}, keyText(k)), ') is refused from the next request on. This cannot be undone.')],
        yesLabel: 'Delete key',
        yesClass: 'danger',
        act: async () => {
          await api('DELETE', `/api/api-key/${k.id}`);
          closeModal(false);
          $('create-key').focus({ preventScroll: true });
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
        h('p', { class: 'hint' }, `Renaming changes the group name that its keys carry to the upstream (the x-api-key-group header). Names are unique ignoring case.`),
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
    confirmAction(
      {
        title: `Delete group “${g.name}”?`,
        text: [
          h(
            'p',
            {},
            g.member_count === 0
              ? 'It has no keys.'
              : `Its ${plural(g.member_count, 'key')} ${g.member_count === 1 ? 'moves' : 'move'} to All Users (all-users) and keep${g.member_count === 1 ? 's' : ''} working, under All Users' rules.`,
          ),
          h('p', { class: 'hint' }, 'This cannot be undone.'),
        ],
        yesLabel: 'Delete group',
        yesClass: 'danger',
        act: async () => {
          await api('DELETE', `/api/permissions/group/${g.id}`);
          closeModal(false);
          $('create-group').focus({ preventScroll: true });
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
    // The status first: it names the header the admin key goes in.
    await loadStatus();
    setInterval(() => {
      void loadStatus();
    }, STATUS_EVERY_MS);
    setInterval(tick, TICK_EVERY_MS);
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
