/**
 * The Metabase-compatible management API on the admin listener, driven with
 * real HTTP against a real `keygate serve` child process and a real upstream:
 * every endpoint and status code, keys made at run time admitted through the
 * proxy at once, regeneration and deletion revoking at once, group deletion
 * moving keys to all-users, 409 for config-owned rows, survival across
 * reloads and restarts, adoption by a later config entry, audit lines and
 * metrics, Metabase's documented examples, and raw keys that appear nowhere
 * but in the one response that minted them.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { REPO, runCli, shown } from './helpers/cli.ts';
import { databaseFiles } from './helpers/db.ts';
import { eventually, startServe, startUpstream, type Served, type Upstream } from './helpers/serve.ts';
import { tempDir, tempConfig, type ConfigDir } from './helpers/tmp.ts';

const ADMIN_KEY = 'kg_mgmt_admin_key_0123456789abcdef';
const ANALYST_KEY = 'kg_mgmt_analyst_key_0123456789abcdef';
const DISABLED_ADMIN_KEY = 'kg_mgmt_disabled_admin_0123456789abcdef';
const LATE_KEY = 'kg_mgmt_late_config_key_0123456789abcdef';
const CONFIG_KEYS = [ADMIN_KEY, ANALYST_KEY, DISABLED_ADMIN_KEY, LATE_KEY];
/** Keys minted by the API (create and regenerate responses), in the order they were shown. */
const MINTED: string[] = [];

const ALL_USERS_ID = 1;
const ADMIN_ID = 2;
const UNKNOWN_ID = 999_999_999;

// ---------------------------------------------------------------------------
// Config files

interface ConfigParts {
  /** Declare the config group `temps` (only /temps/**). */
  temps?: boolean;
  /** Extra `groups` entries, as YAML lines at entry indentation. */
  groups?: string[];
  /** Extra `api-keys` entries, as YAML lines at entry indentation. */
  keys?: string[];
}

/** all-users may only GET /open/**; analysts only GET /api/card/**. */
function render(upstream: string, parts: ConfigParts = {}): string {
  return [
    'version: 1',
    'config:',
    '  keygate:',
    `    upstream: ${upstream}`,
    '    failed_auth_per_minute: 1000000',
    '    last_used_flush_ms: 200',
    '  groups:',
    '    - name: all-users',
    '      description: Everyone',
    '      allow:',
    '        - methods: [GET]',
    '          paths: ["/open/**"]',
    '    - name: analysts',
    '      description: Read-only cards',
    '      allow:',
    '        - methods: [GET]',
    '          paths: ["/api/card/**"]',
    ...(parts.temps === true ? ['    - name: temps', '      allow:', '        - paths: ["/temps/**"]'] : []),
    ...(parts.groups ?? []),
    '  api-keys:',
    '    - name: Admin API key',
    '      group: admin',
    `      key: ${ADMIN_KEY}`,
    '    - name: Analyst key',
    '      group: analysts',
    `      key: ${ANALYST_KEY}`,
    '    - name: Disabled admin key',
    '      group: admin',
    `      key: ${DISABLED_ADMIN_KEY}`,
    '      disabled: true',
    ...(parts.keys ?? []),
    '',
  ].join('\n');
}

const sha256 = (text: string | Buffer): string => createHash('sha256').update(text).digest('hex');

// ---------------------------------------------------------------------------
// HTTP

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

function send(base: string, method: string, urlPath: string, headers: Record<string, string>, body?: string): Promise<Answer> {
  const u = new URL(base);
  const h: Record<string, string> = { ...headers };
  if (body !== undefined) {
    h['content-type'] = 'application/json';
    h['content-length'] = String(Buffer.byteLength(body));
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: urlPath, method, headers: h, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

function json<T = Record<string, unknown>>(a: Answer): T {
  try {
    return JSON.parse(a.text) as T;
  } catch {
    return assert.fail(`not JSON (status ${a.status}): ${a.text}`);
  }
}

interface GroupRef {
  id: number;
  name: string;
}

interface ApiKeyJson {
  id: number;
  name: string;
  group: GroupRef;
  masked_key: string;
  created_at: string;
  updated_at: string;
  updated_by: { id: number | null; common_name: string } | null;
  source: string;
  description: string | null;
  expires_at: string | null;
  last_used_at: string | null;
  unmasked_key?: string;
}

interface GroupJson {
  id: number;
  name: string;
  member_count: number;
  source: string;
}

/** A change made through the API that answered 200/204: what the audit log and /metrics must show. */
interface Change {
  action: string;
  id: number;
}

/** The state shared by the subtests: one serve process (replaced once, by the restart). */
interface World {
  t: TestContext;
  dir: ConfigDir;
  up: Upstream;
  kg: Served;
  /** Earlier serve processes (the one before the restart), for the output checks. */
  previous: Served[];
  /** Every admin-listener answer, to count where each minted key was shown. */
  answers: Array<{ what: string; text: string }>;
  changes: Change[];
  adminKeyId: number;
}

/** A management API call with the admin key (or `key`); a string body is sent as is. */
async function api(w: World, method: string, urlPath: string, body?: unknown, key: string | null = ADMIN_KEY): Promise<Answer> {
  const raw = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  const a = await send(w.kg.admin, method, urlPath, key === null ? {} : { 'x-api-key': key }, raw);
  w.answers.push({ what: `${method} ${urlPath} → ${a.status}`, text: a.text });
  if (key === ADMIN_KEY && (a.status === 200 || a.status === 204) && method !== 'GET') {
    w.changes.push({ action: actionOf(method, urlPath), id: Number(/\/(\d+)(?:\/regenerate)?$/.exec(urlPath)?.[1] ?? json<{ id: number }>(a).id) });
  }
  return a;
}

/** The audit action each write endpoint reports (and labels keygate_management_changes_total with). */
function actionOf(method: string, urlPath: string): string {
  if (urlPath.startsWith('/api/permissions/group')) return method === 'POST' ? 'group.create' : method === 'PUT' ? 'group.update' : 'group.delete';
  if (method === 'POST') return 'api_key.create';
  if (method === 'DELETE') return 'api_key.delete';
  return urlPath.endsWith('/regenerate') ? 'api_key.regenerate' : 'api_key.update';
}

/** Status of a request through the proxy. */
async function through(w: World, key: string, method = 'GET', urlPath = '/open/x'): Promise<number> {
  return (await send(w.kg.proxy, method, urlPath, { 'x-api-key': key })).status;
}

async function listKeys(w: World): Promise<ApiKeyJson[]> {
  const a = await api(w, 'GET', '/api/api-key');
  assert.equal(a.status, 200, a.text);
  return json<ApiKeyJson[]>(a);
}

async function count(w: World): Promise<number> {
  const a = await api(w, 'GET', '/api/api-key/count');
  assert.equal(a.status, 200, a.text);
  assert.match(a.text, /^\d+$/, 'the count is a bare integer');
  return Number(a.text);
}

async function listGroups(w: World): Promise<GroupJson[]> {
  const a = await api(w, 'GET', '/api/permissions/group');
  assert.equal(a.status, 200, a.text);
  return json<GroupJson[]>(a);
}

async function keyNamed(w: World, name: string): Promise<ApiKeyJson> {
  const k = (await listKeys(w)).find((x) => x.name === name);
  assert.ok(k !== undefined, `no key named "${name}" in the list`);
  return k;
}

async function groupNamed(w: World, name: string): Promise<GroupJson | undefined> {
  return (await listGroups(w)).find((g) => g.name === name);
}

/** Creates a key through the API; returns its JSON and the raw key shown once. */
async function createKey(w: World, name: string, groupId: number): Promise<{ row: ApiKeyJson; key: string }> {
  const a = await api(w, 'POST', '/api/api-key', { name, group_id: groupId });
  assert.equal(a.status, 200, `create "${name}": ${a.text}`);
  const row = json<ApiKeyJson>(a);
  assert.equal(typeof row.unmasked_key, 'string', 'the create response shows the key');
  const key = row.unmasked_key as string;
  MINTED.push(key);
  return { row, key };
}

async function createGroup(w: World, name: string): Promise<GroupJson> {
  const a = await api(w, 'POST', '/api/permissions/group', { name });
  assert.equal(a.status, 200, `create group "${name}": ${a.text}`);
  return json<GroupJson>(a);
}

async function groupId(w: World, name: string): Promise<number> {
  const g = await groupNamed(w, name);
  assert.ok(g !== undefined, `no group named "${name}"`);
  return g.id;
}

/** Metabase's masked form: the first 7 characters, then stars. */
function assertMasked(masked: string, key: string | null, what: string): void {
  assert.match(masked, /^[^*]{7}\*{8,}$/, `${what}: masked_key "${masked}" is not a 7-character prefix padded with *`);
  if (key !== null) assert.equal(masked.slice(0, 7), key.slice(0, 7), `${what}: masked_key does not start with the key's prefix`);
}

function assertKeyShape(k: ApiKeyJson, what: string): void {
  for (const field of ['id', 'name', 'group', 'masked_key', 'created_at', 'updated_at', 'updated_by', 'source', 'description', 'expires_at', 'last_used_at']) {
    assert.ok(Object.hasOwn(k, field), `${what}: no "${field}" field in ${JSON.stringify(k)}`);
  }
  assert.ok(Number.isSafeInteger(k.id), `${what}: id`);
  assert.ok(Number.isSafeInteger(k.group.id) && typeof k.group.name === 'string', `${what}: group is {id, name}`);
  assert.ok(!Number.isNaN(Date.parse(k.created_at)) && !Number.isNaN(Date.parse(k.updated_at)), `${what}: created_at/updated_at are times`);
  assert.ok(k.source === 'config' || k.source === 'api', `${what}: source ${k.source}`);
  assertMasked(k.masked_key, null, what);
}

function assertError(a: Answer, status: number, field: string, what: string): void {
  assert.equal(a.status, status, `${what}: ${a.text}`);
  const errors = json<{ errors?: Record<string, unknown> }>(a).errors;
  assert.ok(errors !== undefined && typeof errors[field] === 'string' && errors[field] !== '', `${what}: want {"errors":{"${field}":…}}, got ${a.text}`);
}

/** The daemon's JSON log lines of component "audit", from every serve process so far. */
function auditLines(w: World): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const s of [...w.previous, w.kg]) {
    for (const line of s.stderr().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const o = JSON.parse(line) as Record<string, unknown>;
        if (o.component === 'audit') out.push(o);
      } catch {
        // a line still being written
      }
    }
  }
  return out;
}

/** Every string a leak check looks for: the whole key, and the part of it that is never displayed. */
function secretParts(): string[] {
  return [...CONFIG_KEYS, ...MINTED].flatMap((k) => [k, k.slice(7)]);
}

function assertNoSecrets(text: string | Buffer, what: string): void {
  const s = typeof text === 'string' ? text : text.toString('latin1');
  for (const part of secretParts()) assert.ok(!s.includes(part), `${what} contains (part of) a raw key: ${part.slice(0, 10)}…`);
}

function sample(metrics: string, series: string): number {
  const escaped = series.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`^${escaped} (\\S+)$`, 'm').exec(metrics);
  return m === null ? 0 : Number(m[1]);
}

function run(file: string, args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: REPO, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: 15_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------

test('the Metabase-compatible management API on a running keygate serve', async (t) => {
  const up = await startUpstream(t);
  const dir = tempConfig(t, render(up.url, { temps: true }));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
  const w: World = { t, dir, up, kg, previous: [], answers: [], changes: [], adminKeyId: 0 };
  const configKeyIds = new Map<string, number>();
  /** API keys that must keep working: name → [key, method, path that answers 200]. */
  const alive = new Map<string, [string, string, string]>();
  /** Keys that must stay refused: regenerated or deleted. */
  const revoked = new Map<string, string>();

  await t.test('lists keys in Metabase\'s shape with masked keys, and counts them as a bare integer', async () => {
    const keys = await listKeys(w);
    for (const k of keys) {
      assertKeyShape(k, k.name);
      configKeyIds.set(k.name, k.id);
    }
    assert.deepEqual(keys.map((k) => k.name).sort(), ['Admin API key', 'Analyst key', 'Disabled admin key']);
    const admin = keys.find((k) => k.name === 'Admin API key') as ApiKeyJson;
    w.adminKeyId = admin.id;
    assert.deepEqual(admin.group, { id: ADMIN_ID, name: 'Administrators' }, 'Metabase\'s name of the admin group');
    assert.equal(admin.source, 'config');
    assertMasked(admin.masked_key, ADMIN_KEY, 'Admin API key');
    const analyst = keys.find((k) => k.name === 'Analyst key') as ApiKeyJson;
    assert.equal(analyst.group.name, 'analysts');
    assert.equal(await count(w), keys.length);
    const c = await api(w, 'GET', '/api/api-key/count');
    assert.match(String(c.headers['content-type']), /json/);
  });

  await t.test('refuses every endpoint with 401 without a key or with a bad key, and 403 with a non-admin key', async () => {
    const target = configKeyIds.get('Analyst key') as number;
    const analystsId = await groupId(w, 'analysts');
    const endpoints: Array<[string, string, unknown?]> = [
      ['GET', '/api/api-key'],
      ['GET', '/api/api-key/count'],
      ['POST', '/api/api-key', { name: 'Intruder', group_id: ADMIN_ID }],
      ['PUT', `/api/api-key/${target}`, { name: 'Renamed by intruder', group_id: ADMIN_ID }],
      ['PUT', `/api/api-key/${target}/regenerate`],
      ['DELETE', `/api/api-key/${target}`],
      ['GET', '/api/permissions/group'],
      ['POST', '/api/permissions/group', { name: 'Intruders' }],
      ['DELETE', `/api/permissions/group/${analystsId}`],
    ];
    const before = { count: await count(w), groups: (await listGroups(w)).length };
    for (const [method, urlPath, body] of endpoints) {
      const what = `${method} ${urlPath}`;
      const none = await api(w, method, urlPath, body, null);
      assert.equal(none.status, 401, `${what} without a key: ${none.text}`);
      assert.equal(json(none).error, 'missing_api_key', what);
      assert.match(String(none.headers['www-authenticate']), /ApiKey/, `${what}: WWW-Authenticate`);
      for (const bad of ['kg_not_a_key_anyone_has_0123456789', DISABLED_ADMIN_KEY]) {
        const a = await api(w, method, urlPath, body, bad);
        assert.equal(a.status, 401, `${what} with a bad key: ${a.text}`);
        assert.equal(json(a).error, 'invalid_api_key', what);
      }
      const analyst = await api(w, method, urlPath, body, ANALYST_KEY);
      assert.equal(analyst.status, 403, `${what} with a non-admin key: ${analyst.text}`);
      assert.equal(json(analyst).error, 'forbidden', what);
    }
    assert.deepEqual({ count: await count(w), groups: (await listGroups(w)).length }, before, 'a refused call changed something');
    assert.equal((await keyNamed(w, 'Analyst key')).name, 'Analyst key');
    assert.equal(await through(w, ANALYST_KEY, 'GET', '/api/card/1'), 200, 'the analyst key was revoked by a refused call');
  });

  await t.test('creates a key that admits requests through the proxy at once, under its group\'s rules', async () => {
    const analystsId = await groupId(w, 'analysts');
    const n = await count(w);
    const { row, key } = await createKey(w, 'Reporting bot', analystsId);
    assertKeyShape(row, 'create response');
    assert.equal(row.name, 'Reporting bot');
    assert.deepEqual(row.group, { id: analystsId, name: 'analysts' });
    assert.equal(row.source, 'api');
    assertMasked(row.masked_key, key, 'create response');
    assert.equal(row.updated_by?.common_name, 'Admin API key', 'updated_by names the calling key');
    assert.equal(row.updated_by?.id, w.adminKeyId);

    const seen = up.seen.length;
    assert.equal(await through(w, key, 'GET', '/api/card/1'), 200, 'a created key is not admitted at once');
    assert.equal(up.seen.at(-1)?.headers['x-api-key-name'], 'Reporting bot');
    assert.equal(up.seen.at(-1)?.headers['x-api-key-group'], 'analysts');
    assert.equal(await through(w, key, 'POST', '/api/card/1'), 403, 'the key gets more than its group allows');
    assert.equal(up.seen.length, seen + 1);
    assert.equal((await api(w, 'GET', '/api/api-key', undefined, key)).status, 403, 'a non-admin key reached the management API');

    assert.equal(await count(w), n + 1);
    const listed = await keyNamed(w, 'Reporting bot');
    assert.equal(listed.id, row.id);
    assert.equal(listed.unmasked_key, undefined, 'the list shows unmasked_key');
    assertMasked(listed.masked_key, key, 'list');
    assert.ok(await eventually(async () => (await keyNamed(w, 'Reporting bot')).last_used_at !== null), 'last_used_at stays null after use');
    alive.set('Reporting bot', [key, 'GET', '/api/card/1']);
  });

  await t.test('updates a key\'s name and group, and the proxy enforces the new group from the next request', async () => {
    const analystsId = await groupId(w, 'analysts');
    const { row, key } = await createKey(w, 'Mover', analystsId);
    assert.equal(await through(w, key, 'POST', '/anything'), 403);

    const a = await api(w, 'PUT', `/api/api-key/${row.id}`, { name: 'Mover (admin)', group_id: ADMIN_ID });
    assert.equal(a.status, 200, a.text);
    const updated = json<ApiKeyJson>(a);
    assertKeyShape(updated, 'update response');
    assert.equal(updated.name, 'Mover (admin)');
    assert.deepEqual(updated.group, { id: ADMIN_ID, name: 'Administrators' });
    assert.equal(updated.unmasked_key, undefined, 'an update shows the key');
    assert.equal(updated.masked_key, row.masked_key, 'an update changed the key');
    assert.equal(await through(w, key, 'POST', '/anything'), 200, 'the new group is not enforced at once');
    assert.equal(up.seen.at(-1)?.headers['x-api-key-name'], 'Mover (admin)');
    assert.equal(up.seen.at(-1)?.headers['x-api-key-group'], 'admin');

    const b = await api(w, 'PUT', `/api/api-key/${row.id}`, { group_id: ALL_USERS_ID });
    assert.equal(b.status, 200, b.text);
    assert.equal(json<ApiKeyJson>(b).name, 'Mover (admin)', 'a group-only update changed the name');
    assert.equal(await through(w, key, 'POST', '/anything'), 403);
    assert.equal(await through(w, key, 'GET', '/open/x'), 200);
    const c = await api(w, 'PUT', `/api/api-key/${row.id}`, { name: 'Mover' });
    assert.equal(c.status, 200, c.text);
    assert.deepEqual(json<ApiKeyJson>(c).group, { id: ALL_USERS_ID, name: 'All Users' }, 'a name-only update changed the group');
    alive.set('Mover', [key, 'GET', '/open/x']);
  });

  await t.test('regenerate shows a new key once and refuses the old one from the next request', async () => {
    const { row, key: old } = await createKey(w, 'Rotated', ADMIN_ID);
    assert.equal(await through(w, old), 200);
    const a = await api(w, 'PUT', `/api/api-key/${row.id}/regenerate`);
    assert.equal(a.status, 200, a.text);
    const body = json<{ id: number; unmasked_key: string; masked_key: string }>(a);
    assert.equal(typeof body.unmasked_key, 'string');
    MINTED.push(body.unmasked_key);
    assert.notEqual(body.unmasked_key, old);
    assertMasked(body.masked_key, body.unmasked_key, 'regenerate response');

    const refused = await send(w.kg.proxy, 'GET', '/open/x', { 'x-api-key': old });
    assert.equal(refused.status, 401, 'the old key still passes the proxy');
    assert.equal(json(refused).error, 'invalid_api_key');
    assert.equal((await api(w, 'GET', '/api/api-key', undefined, old)).status, 401, 'the old key still calls the management API');
    assert.equal(await through(w, body.unmasked_key), 200, 'the new key is not admitted at once');
    assert.equal((await api(w, 'GET', '/api/api-key/count', undefined, body.unmasked_key)).status, 200);
    const listed = await keyNamed(w, 'Rotated');
    assert.equal(listed.masked_key, body.masked_key);
    assert.equal(listed.id, row.id, 'regenerate changed the id');
    alive.set('Rotated', [body.unmasked_key, 'POST', '/anything']);
    revoked.set('Rotated (before regenerate)', old);
  });

  await t.test('deletes a key with 204 and refuses it from the next request', async () => {
    const { row, key } = await createKey(w, 'Doomed', ALL_USERS_ID);
    assert.equal(await through(w, key), 200);
    const n = await count(w);
    const a = await api(w, 'DELETE', `/api/api-key/${row.id}`);
    assert.equal(a.status, 204, a.text);
    assert.equal(a.text, '', 'a 204 has no body');
    assert.equal(await through(w, key), 401, 'a deleted key still passes the proxy');
    assert.equal(await count(w), n - 1);
    assert.ok(!(await listKeys(w)).some((k) => k.id === row.id), 'the deleted key is still listed');
    assert.equal((await api(w, 'DELETE', `/api/api-key/${row.id}`)).status, 404, 'deleting twice');
    revoked.set('Doomed (deleted)', key);
  });

  await t.test('answers 404 for unknown ids', async () => {
    for (const [method, urlPath, body] of [
      ['PUT', `/api/api-key/${UNKNOWN_ID}`, { name: 'Nobody' }],
      ['PUT', `/api/api-key/${UNKNOWN_ID}/regenerate`, undefined],
      ['DELETE', `/api/api-key/${UNKNOWN_ID}`, undefined],
      ['DELETE', `/api/permissions/group/${UNKNOWN_ID}`, undefined],
    ] as const) {
      const a = await api(w, method, urlPath, body);
      assert.equal(a.status, 404, `${method} ${urlPath}: ${a.text}`);
      json(a);
    }
  });

  await t.test('refuses a duplicate name with 400 {"errors":{"name":…}} and creates nothing', async () => {
    const n = await count(w);
    const groups = (await listGroups(w)).length;
    assertError(await api(w, 'POST', '/api/api-key', { name: 'Admin API key', group_id: ALL_USERS_ID }), 400, 'name', 'a config key\'s name');
    assertError(await api(w, 'POST', '/api/api-key', { name: 'Reporting bot', group_id: ALL_USERS_ID }), 400, 'name', 'an api key\'s name');
    const mover = await keyNamed(w, 'Mover');
    assertError(await api(w, 'PUT', `/api/api-key/${mover.id}`, { name: 'Reporting bot' }), 400, 'name', 'renaming onto another key');
    assertError(await api(w, 'POST', '/api/permissions/group', { name: 'analysts' }), 400, 'name', 'a config group\'s name');
    assertError(await api(w, 'POST', '/api/permissions/group', { name: 'admin' }), 400, 'name', 'a built-in group\'s name');
    assert.equal(await count(w), n);
    assert.equal((await listGroups(w)).length, groups);
    assert.equal((await keyNamed(w, 'Mover')).name, 'Mover');
  });

  await t.test('refuses an invalid body with 400 naming the field', async () => {
    const n = await count(w);
    const mover = await keyNamed(w, 'Mover');
    const cases: Array<[string, string, unknown, string]> = [
      ['POST', '/api/api-key', {}, 'name'],
      ['POST', '/api/api-key', { name: '', group_id: ALL_USERS_ID }, 'name'],
      ['POST', '/api/api-key', { name: '   ', group_id: ALL_USERS_ID }, 'name'],
      ['POST', '/api/api-key', { name: 42, group_id: ALL_USERS_ID }, 'name'],
      ['POST', '/api/api-key', { name: 'x'.repeat(255), group_id: ALL_USERS_ID }, 'name'],
      ['POST', '/api/api-key', { name: 'No group' }, 'group_id'],
      ['POST', '/api/api-key', { name: 'String group', group_id: '1' }, 'group_id'],
      ['POST', '/api/api-key', { name: 'Zero group', group_id: 0 }, 'group_id'],
      ['POST', '/api/api-key', { name: 'Unknown group', group_id: UNKNOWN_ID }, 'group_id'],
      ['PUT', `/api/api-key/${mover.id}`, { group_id: 'admin' }, 'group_id'],
      ['PUT', `/api/api-key/${mover.id}`, { group_id: UNKNOWN_ID }, 'group_id'],
      ['PUT', `/api/api-key/${mover.id}`, { name: '' }, 'name'],
      ['POST', '/api/permissions/group', {}, 'name'],
      ['POST', '/api/permissions/group', { name: 7 }, 'name'],
    ];
    for (const [method, urlPath, body, field] of cases) assertError(await api(w, method, urlPath, body), 400, field, `${method} ${urlPath} ${JSON.stringify(body).slice(0, 60)}`);
    for (const raw of ['{not json', '[1,2]', '"a string"']) {
      const a = await api(w, 'POST', '/api/api-key', raw);
      assert.equal(a.status, 400, `body ${raw}: ${a.text}`);
      assert.ok(Object.keys(json<{ errors?: object }>(a).errors ?? {}).length > 0, `body ${raw}: the answer names no field: ${a.text}`);
    }
    assert.equal(await count(w), n, 'an invalid body created a key');
    const after = await keyNamed(w, 'Mover');
    assert.deepEqual([after.name, after.group], [mover.name, mover.group], 'an invalid body changed a key');
  });

  await t.test('lists groups with member counts and creates groups that keys can join', async () => {
    const groups = await listGroups(w);
    const keys = await listKeys(w);
    for (const name of ['Administrators', 'All Users', 'analysts', 'temps']) assert.ok(groups.some((g) => g.name === name), `group ${name} is not listed`);
    for (const g of groups) {
      assert.ok(Number.isSafeInteger(g.id), `${g.name}: id`);
      assert.equal(g.member_count, keys.filter((k) => k.group.id === g.id).length, `${g.name}: member_count`);
    }
    const created = await createGroup(w, 'Partners');
    assert.equal(created.name, 'Partners');
    assert.equal(created.member_count, 0);
    assert.equal(created.source, 'api');
    const { key } = await createKey(w, 'Partner bot', created.id);
    assert.equal((await groupNamed(w, 'Partners'))?.member_count, 1);
    assert.equal(await through(w, key, 'DELETE', '/anything/at/all'), 200, 'a group without rules allows every route');
    alive.set('Partner bot', [key, 'POST', '/anything']);
  });

  await t.test('deleting a group moves its keys to all-users, where they pass the proxy under all-users\' rules', async () => {
    const g = await createGroup(w, 'Contractors');
    const { row, key } = await createKey(w, 'Contractor bot', g.id);
    assert.equal(await through(w, key, 'POST', '/anything'), 200);
    const allUsersBefore = (await groupNamed(w, 'All Users'))?.member_count ?? -1;

    const a = await api(w, 'DELETE', `/api/permissions/group/${g.id}`);
    assert.equal(a.status, 204, a.text);
    assert.equal(a.text, '');
    assert.equal(await through(w, key, 'GET', '/open/x'), 200, 'a key of a deleted group stopped working');
    assert.equal(up.seen.at(-1)?.headers['x-api-key-group'], 'all-users');
    assert.equal(await through(w, key, 'POST', '/anything'), 403, 'a moved key kept its deleted group\'s rules');
    assert.equal(await through(w, key, 'GET', '/api/card/1'), 403);
    const moved = (await listKeys(w)).find((k) => k.id === row.id);
    assert.deepEqual(moved?.group, { id: ALL_USERS_ID, name: 'All Users' });
    assert.equal(await groupNamed(w, 'Contractors'), undefined, 'the deleted group is still listed');
    assert.equal((await groupNamed(w, 'All Users'))?.member_count, allUsersBefore + 1);
    assert.equal((await api(w, 'DELETE', `/api/permissions/group/${g.id}`)).status, 404, 'deleting twice');
    alive.set('Contractor bot', [key, 'GET', '/open/x']);
  });

  await t.test('refuses to delete the built-in admin and all-users groups', async () => {
    for (const id of [ADMIN_ID, ALL_USERS_ID]) {
      const a = await api(w, 'DELETE', `/api/permissions/group/${id}`);
      assert.equal(a.status, 400, `DELETE group ${id}: ${a.text}`);
    }
    const names = (await listGroups(w)).map((g) => g.name);
    assert.ok(names.includes('Administrators') && names.includes('All Users'), names.join(', '));
    assert.equal(await through(w, ADMIN_KEY, 'POST', '/anything'), 200);
  });

  await t.test('refuses to change a config-owned key or group with 409 managed_by_config naming the config file', async () => {
    const analyst = configKeyIds.get('Analyst key') as number;
    const analystsId = await groupId(w, 'analysts');
    for (const [method, urlPath, body] of [
      ['PUT', `/api/api-key/${analyst}`, { name: 'Analyst key (renamed)' }],
      ['PUT', `/api/api-key/${analyst}`, { group_id: ADMIN_ID }],
      ['PUT', `/api/api-key/${analyst}/regenerate`, undefined],
      ['DELETE', `/api/api-key/${analyst}`, undefined],
      ['PUT', `/api/api-key/${w.adminKeyId}`, { name: 'Root' }],
      ['DELETE', `/api/permissions/group/${analystsId}`, undefined],
    ] as const) {
      const a = await api(w, method, urlPath, body);
      assert.equal(a.status, 409, `${method} ${urlPath}: ${a.text}`);
      const b = json<{ error: string; message: string }>(a);
      assert.equal(b.error, 'managed_by_config');
      assert.ok(b.message.includes(dir.config), `the message does not name ${dir.config}: ${b.message}`);
    }
    const k = await keyNamed(w, 'Analyst key');
    assert.equal(k.group.name, 'analysts');
    assert.equal(await through(w, ANALYST_KEY, 'GET', '/api/card/1'), 200, 'a 409 changed the config key');
    assert.equal(await through(w, ANALYST_KEY, 'POST', '/anything'), 403);
    assert.ok((await groupNamed(w, 'analysts')) !== undefined);
  });

  await t.test('logs every change as an audit line naming the calling key, with keys masked, and counts it in /metrics', async () => {
    const want = w.changes;
    let lines: Array<Record<string, unknown>> = [];
    const ok = await eventually(() => (lines = auditLines(w)).length >= want.length);
    assert.ok(ok, `${lines.length} audit lines for ${want.length} changes`);
    assert.deepEqual(
      lines.map((l) => [l.action, (l.target as { id?: number } | undefined)?.id]),
      want.map((c) => [c.action, c.id]),
      'one audit line per change, in order, and none for refused calls',
    );
    for (const l of lines) {
      const text = JSON.stringify(l);
      assert.deepEqual(l.actor, { id: w.adminKeyId, name: 'Admin API key' }, `who: ${text}`);
      assert.ok('before' in l && 'after' in l, `before/after: ${text}`);
      for (const m of text.matchAll(/"masked_key":"([^"]*)"/g)) assertMasked(m[1] as string, null, `audit ${String(l.action)}`);
      assert.ok(!text.includes('unmasked_key'), `an audit line carries unmasked_key: ${text}`);
      assertNoSecrets(text, 'an audit line');
    }
    const rotate = lines.find((l) => l.action === 'api_key.regenerate') as { before: { masked_key: string }; after: { masked_key: string } };
    assert.notEqual(rotate.before.masked_key, rotate.after.masked_key, 'the regenerate audit line shows no change of key');
    const update = lines.find((l) => l.action === 'api_key.update') as { before: { name: string; group: string }; after: { name: string; group: string } };
    assert.deepEqual([update.before.name, update.after.name], ['Mover', 'Mover (admin)']);

    const metrics = (await send(w.kg.admin, 'GET', '/metrics', {})).text;
    const byAction = new Map<string, number>();
    for (const c of want) byAction.set(c.action, (byAction.get(c.action) ?? 0) + 1);
    assert.equal(byAction.size, 6, 'every kind of change was made');
    for (const [action, n] of byAction) {
      assert.equal(sample(metrics, `keygate_management_changes_total{action="${action}"}`), n, `keygate_management_changes_total{action="${action}"}`);
    }
  });

  await t.test('Metabase\'s documented curl and fetch examples list the groups with a key created through the API', async () => {
    const { key } = await createKey(w, 'Examples', ADMIN_ID);
    const env = { METABASE_API_KEY: key, METABASE_HOST: w.kg.admin };
    const curl = await run('sh', ['examples/metabase-api/curl.sh'], env);
    assert.equal(curl.code, 0, curl.stderr);
    const groups = JSON.parse(curl.stdout) as GroupJson[];
    assert.deepEqual(groups.map((g) => g.name).sort(), (await listGroups(w)).map((g) => g.name).sort());
    assert.ok(groups.every((g) => typeof g.member_count === 'number'));

    const node = await run(process.execPath, ['examples/metabase-api/api-test.js'], env);
    assert.equal(node.code, 0, node.stderr);
    assert.match(node.stdout, /^Groups in your Metabase: \[/);
    for (const name of ['Administrators', 'All Users', 'analysts', 'Partners']) assert.ok(node.stdout.includes(`'${name}'`), `${name} is not printed:\n${node.stdout}`);

    const refused = await run('sh', ['examples/metabase-api/curl.sh'], { ...env, METABASE_API_KEY: ANALYST_KEY });
    assert.equal(json({ status: 0, headers: {}, text: refused.stdout }).error, 'forbidden');
    const unset = await run('sh', ['examples/metabase-api/curl.sh'], { METABASE_HOST: w.kg.admin });
    assert.notEqual(unset.code, 0, 'curl.sh ran without METABASE_API_KEY');
    assert.match(unset.stderr, /METABASE_API_KEY/);
    alive.set('Examples', [key, 'POST', '/anything']);
  });

  await t.test('api-owned keys survive a config reload, and keys of a group the file drops move to all-users without gaining a route', async () => {
    const { key: tempKey } = await createKey(w, 'Temp bot', await groupId(w, 'temps'));
    assert.equal(await through(w, tempKey, 'GET', '/temps/1'), 200);
    const apiBefore = (await listKeys(w)).filter((k) => k.source === 'api').map((k) => k.name).sort();

    const next = render(up.url, { keys: ['    - name: Late config key', '      group: all-users', `      key: ${LATE_KEY}`] });
    dir.rewrite(next);
    const applied = await eventually(async () => json<{ applied: { sha256: string } }>(await send(w.kg.admin, 'GET', '/status', {})).applied.sha256 === sha256(next), 5000);
    assert.ok(applied, 'the edited config was never applied');
    assert.equal(await through(w, LATE_KEY), 200);

    const keys = await listKeys(w);
    assert.deepEqual(keys.filter((k) => k.source === 'api').map((k) => k.name).sort(), apiBefore, 'a reload removed api-owned keys');
    for (const [name, [key, method, urlPath]] of alive) assert.equal(await through(w, key, method, urlPath), 200, `${name} stopped working after a reload`);
    for (const [name, k] of revoked) assert.equal(await through(w, k), 401, `${name} came back after a reload`);
    assert.ok((await groupNamed(w, 'Partners')) !== undefined, 'a reload removed an api-owned group');
    assert.equal(await groupNamed(w, 'temps'), undefined);
    assert.deepEqual(keys.find((k) => k.name === 'Temp bot')?.group, { id: ALL_USERS_ID, name: 'All Users' });
    // It keeps the dropped group's rules as its own: all-users allows /open/**, temps allowed /temps/**, so it gains
    // no route from the move (and here keeps none, since the two share none).
    assert.equal(await through(w, tempKey, 'GET', '/open/x'), 403, 'a key of a group the file dropped gained a route');
    assert.equal(await through(w, tempKey, 'GET', '/temps/1'), 403);
    const status = json<{ keys: { api: number } }>(await send(w.kg.admin, 'GET', '/status', {}));
    assert.equal(status.keys.api, apiBefore.length);
  });

  await t.test('a later config entry with the same name adopts an api key and group, and the plan says "adopt"', async () => {
    const { key } = await createKey(w, 'Adoptee', await groupId(w, 'Partners'));
    const text = render(up.url, {
      groups: ['    - name: Partners', '      description: Now in the file'],
      keys: [
        '    - name: Late config key',
        '      group: all-users',
        `      key: ${LATE_KEY}`,
        '    - name: Adoptee',
        '      group: Partners',
        `      key_hash: "sha256:${sha256(key)}"`,
      ],
    });
    const elsewhere = tempDir(t).write('config.yml', text);
    const plan = await runCli(['plan', '-c', elsewhere, '--db', dir.db]);
    assert.equal(plan.code, 2, shown(plan));
    assert.match(plan.stdout, /^~ adopt key "Adoptee"/m, shown(plan));
    assert.match(plan.stdout, /^~ adopt group "Partners"/m, shown(plan));
    assertNoSecrets(plan.stdout + plan.stderr, 'keygate plan');

    dir.rewrite(text);
    const adopted = await eventually(async () => (await keyNamed(w, 'Adoptee')).source === 'config', 5000);
    assert.ok(adopted, 'the config entry never adopted the api key');
    assert.equal((await groupNamed(w, 'Partners'))?.source, 'config');
    assert.equal(await through(w, key, 'POST', '/anything'), 200, 'the adopted key stopped working');
    const id = (await keyNamed(w, 'Adoptee')).id;
    assert.equal((await api(w, 'PUT', `/api/api-key/${id}`, { name: 'Escapee' })).status, 409, 'an adopted key can still be changed through the API');
    assert.equal((await api(w, 'DELETE', `/api/permissions/group/${await groupId(w, 'Partners')}`)).status, 409);
    assert.equal(await through(w, alive.get('Partner bot')?.[0] as string, 'POST', '/anything'), 200, 'an api key of the adopted group stopped working');
  });

  await t.test('api-owned keys and groups survive a restart on the same database', async () => {
    await createGroup(w, 'Vendors');
    const { key } = await createKey(w, 'Vendor bot', await groupId(w, 'Vendors'));
    alive.set('Vendor bot', [key, 'POST', '/anything']);
    for (const f of databaseFiles(dir.db)) assertNoSecrets(f.bytes, `${f.file} (while serving)`);

    const first = w.kg;
    w.previous.push(first);
    assert.equal(await first.stop(), 0, `serve did not stop cleanly:\n${first.stderr().split('\n').slice(-8).join('\n')}`);
    w.kg = await startServe(t, dir.config, { args: ['--db', dir.db] });
    for (const [name, [k, method, urlPath]] of alive) assert.equal(await through(w, k, method, urlPath), 200, `${name} stopped working after a restart`);
    const vendors = await groupNamed(w, 'Vendors');
    assert.equal(vendors?.source, 'api');
    assert.equal(vendors?.member_count, 1);
    const keys = await listKeys(w);
    assert.equal(keys.find((k) => k.name === 'Vendor bot')?.source, 'api');
    assert.equal(keys.find((k) => k.name === 'Adoptee')?.source, 'config');
    for (const [name, k] of revoked) assert.equal(await through(w, k), 401, `${name} came back after a restart`);
  });

  await t.test('a raw key appears only in the one response that minted it: never in lists, logs, audit lines or the database files', async () => {
    const second = w.kg;
    w.previous.push(second);
    assert.equal(await second.stop(), 0, `serve did not stop cleanly:\n${second.stderr().split('\n').slice(-8).join('\n')}`);
    for (const key of MINTED) {
      const shownIn = w.answers.filter((a) => a.text.includes(key)).map((a) => a.what);
      assert.equal(shownIn.length, 1, `${key.slice(0, 7)}… was shown in ${shownIn.length} answers: ${shownIn.join('; ')}`);
      assert.match(shownIn[0] as string, /^(POST \/api\/api-key|PUT \/api\/api-key\/\d+\/regenerate) → 200$/);
      const rest = key.slice(7);
      assert.equal(w.answers.filter((a) => a.text.includes(rest)).length, 1, 'part of a key was shown elsewhere');
    }
    for (const a of w.answers) {
      for (const k of CONFIG_KEYS) assert.ok(!a.text.includes(k.slice(7)), `${a.what} shows a config key`);
    }
    w.previous.forEach((s, i) => {
      assertNoSecrets(s.stdout(), `serve #${i + 1} stdout`);
      assertNoSecrets(s.stderr(), `serve #${i + 1} stderr`);
    });
    const files = databaseFiles(dir.db);
    assert.ok(files.length >= 1);
    for (const f of files) assertNoSecrets(f.bytes, f.file);
  });
});
