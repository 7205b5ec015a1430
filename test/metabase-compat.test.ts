/**
 * keygate checked against Metabase's own tests (repository metabase/metabase).
 * Each check below is derived from a Metabase test and names it (file and
 * `deftest`), or, where Metabase has no test for a rule, the source that
 * states it. All run against a real `keygate serve` child process over real
 * HTTP (or the real CLI, for config files that must be refused), with a real
 * upstream behind the proxy.
 *
 * Where keygate differs from Metabase on purpose (the 409 for config-owned
 * rows, an error for a missing variable or an unknown field), the check says
 * so; docs/migrating-from-metabase.md lists those differences and why.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { REPO, runCli, shown } from './helpers/cli.ts';
import { startServe, startUpstream, type Served, type Upstream } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';

const API_TEST = 'test/metabase/api_keys/api_test.clj';
const PERMS_TEST = 'test/metabase/permissions_rest/api_test.clj';
const GROUP_MODEL_TEST = 'test/metabase/permissions/models/permissions_group_test.clj';
const FILE_TEST = 'enterprise/backend/test/metabase_enterprise/advanced_config/file_test.clj';
const FILE_KEYS_TEST = 'enterprise/backend/test/metabase_enterprise/advanced_config/file/api_keys_test.clj';

// Metabase's own example keys (api_keys_test.clj, api-keys-config-test).
const ADMIN_KEY = 'mb_testapikey123';
const ALL_USERS_KEY = 'mb_differentapikey456';
const ENV_KEY = 'mb_envvariablekey123';
const READER_KEY = 'kg_compat_reader_key_0123456789abcdef';
const OPTIONAL_KEY = 'kg_compat_optional_key_0123456789abcdef';
const SECRETS = [ADMIN_KEY, ALL_USERS_KEY, ENV_KEY, READER_KEY, OPTIONAL_KEY];

const ALL_USERS_ID = 1;
const ADMIN_ID = 2;

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');
/** A key_hash entry for a key nobody uses: these keys exist to carry a templated description. */
const hashEntry = (name: string, description: string): string[] => [
  `    - name: ${name}`,
  '      group: readers',
  `      description: "${description}"`,
  `      key_hash: "sha256:${sha256(`unused key of ${name}`)}"`,
];

/** The environment of the serve process: every variable is one of Metabase's test fixtures, renamed where a test needs it. */
const ENV = {
  MB_API_KEY_FROM_ENV: ENV_KEY,
  CONFIG_FILE_BIRD_NAME: 'Parrot Hilton',
  KG_COMPAT_READER_KEY: READER_KEY,
  KG_COMPAT_OPTIONAL_KEY: OPTIONAL_KEY,
  MY_SHOWN_PASSWORD: '~~~NotSecret123~~~',
  CONFIG_FILE_RECURSIVE: '{{env CONFIG_FILE_BIRD_NAME}}',
};

function config(upstream: string): string {
  return [
    'version: 1',
    'config:',
    '  settings:',
    '    my-setting: abc123',
    '  unknown-section: {}',
    '  keygate:',
    `    upstream: ${upstream}`,
    '    failed_auth_per_minute: 1000000',
    '  users:',
    '    - email: admin@test.com',
    '      first_name: Admin',
    '  groups:',
    '    - name: readers',
    '      allow:',
    '        - methods: [GET]',
    '          paths: ["/api/card/**"]',
    '  api-keys:',
    // api_keys_test.clj, api-keys-config-test: "should create API keys from config".
    '    - name: Test API Key',
    `      key: ${ADMIN_KEY}`,
    '      creator: admin@test.com',
    '      group: admin',
    '    - name: All Users API Key',
    `      key: ${ALL_USERS_KEY}`,
    '      creator: admin@test.com',
    '      group: all-users',
    // "should accept API key from environment variable".
    '    - name: ENV API Key',
    '      key: "{{env MB_API_KEY_FROM_ENV}}"',
    '      creator: admin@test.com',
    '      group: admin',
    // file_test.clj: names are case- and -/_-insensitive; [[optional]] blocks.
    '    - name: Reader key',
    '      group: readers',
    '      key: "{{env kg-compat-reader-key}}"',
    '    - name: Optional key',
    '      group: readers',
    '      key: "[[{{env KG_COMPAT_OPTIONAL_KEY}}]]"',
    ...hashEntry('Bird plain', '{{env CONFIG_FILE_BIRD_NAME}}'),
    ...hashEntry('Bird twice', '{{env CONFIG_FILE_BIRD_NAME}}-{{env CONFIG_FILE_BIRD_NAME}}'),
    ...hashEntry('Bird spaced', '{{  env CONFIG_FILE_BIRD_NAME  }}'),
    ...hashEntry('Bird brace before', '{{{env CONFIG_FILE_BIRD_NAME}}'),
    ...hashEntry('Bird brace after', '{{env CONFIG_FILE_BIRD_NAME}}}'),
    ...hashEntry('Bird kebab', '{{env config-file-bird-name}}'),
    ...hashEntry('Bird single braces', '{ {}}'),
    ...hashEntry('Recursive', '{{env CONFIG_FILE_RECURSIVE}}'),
    ...hashEntry('Optional set', '[[{{env MY_SHOWN_PASSWORD}}]]'),
    ...hashEntry('Optional set after text', 'password__[[{{env MY_SHOWN_PASSWORD}}]]'),
    ...hashEntry('Optional set with text', '[[before__{{env MY_SHOWN_PASSWORD}}__after]]'),
    ...hashEntry('Optional unset', '[[{{env MY_OTHER_SENSITIVE_PASSWORD}}]]'),
    ...hashEntry('Optional unset after text', 'password__[[{{env MY_OTHER_SENSITIVE_PASSWORD}}]]'),
    ...hashEntry('Optional unset with text', '[[before__{{env MY_OTHER_SENSITIVE_PASSWORD}}__after]]'),
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------
// HTTP

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  body: unknown;
}

function send(base: string, method: string, urlPath: string, key: string | null, body?: unknown): Promise<Answer> {
  const u = new URL(base);
  const headers: Record<string, string> = key === null ? {} : { 'x-api-key': key };
  const raw = body === undefined ? undefined : JSON.stringify(body);
  if (raw !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(raw));
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, path: urlPath, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = null;
        try {
          parsed = text === '' ? null : (JSON.parse(text) as unknown);
        } catch {
          parsed = text;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: parsed });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(raw);
  });
}

interface GroupRef {
  id: number;
  name: string;
}
interface KeyJson {
  id: number;
  name: string;
  group: GroupRef;
  masked_key: string;
  description: string | null;
  unmasked_key?: string;
  updated_by: { id: number | null; common_name: string } | null;
  [field: string]: unknown;
}
interface GroupJson {
  id: number;
  name: string;
  member_count: number;
  source: string;
  members?: Array<Record<string, unknown>>;
}

interface World {
  kg: Served;
  up: Upstream;
  /** Keys minted by the API: they must show only in the answer that minted them. */
  minted: string[];
}

/** A management call with Metabase's admin key ("Test API Key", group admin). */
async function mb(w: World, method: string, urlPath: string, body?: unknown, key: string | null = ADMIN_KEY): Promise<Answer> {
  return send(w.kg.admin, method, urlPath, key, body);
}

async function ok<T>(w: World, method: string, urlPath: string, body?: unknown, status = 200): Promise<T> {
  const a = await mb(w, method, urlPath, body);
  assert.equal(a.status, status, `${method} ${urlPath}: ${a.text}`);
  return a.body as T;
}

async function through(w: World, key: string, method = 'GET', urlPath = '/api/card/1'): Promise<number> {
  return (await send(w.kg.proxy, method, urlPath, key)).status;
}

async function createKey(w: World, name: string, groupId: number): Promise<KeyJson> {
  const k = await ok<KeyJson>(w, 'POST', '/api/api-key', { name, group_id: groupId });
  assert.equal(typeof k.unmasked_key, 'string');
  w.minted.push(k.unmasked_key as string);
  return k;
}

async function createGroup(w: World, name: string): Promise<GroupJson> {
  return ok<GroupJson>(w, 'POST', '/api/permissions/group', { name });
}

async function groups(w: World, query = ''): Promise<GroupJson[]> {
  return ok<GroupJson[]>(w, 'GET', `/api/permissions/group${query}`);
}

async function keys(w: World): Promise<KeyJson[]> {
  return ok<KeyJson[]>(w, 'GET', '/api/api-key');
}

const keySet = (o: object): string[] => Object.keys(o).sort();

function assertIncludesKeys(o: object, want: string[], what: string): void {
  for (const k of want) assert.ok(Object.hasOwn(o, k), `${what}: no "${k}" in ${JSON.stringify(keySet(o))}`);
}

/** Metabase's error for an invalid or taken field: 400 {"errors": {field: message}}. */
function assertFieldError(a: Answer, field: string, message: string, what: string): void {
  assert.equal(a.status, 400, `${what}: ${a.text}`);
  assert.equal((a.body as { errors?: Record<string, string> }).errors?.[field], message, `${what}: ${a.text}`);
}

function auditLines(w: World): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of w.kg.stderr().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o.component === 'audit') out.push(o);
    } catch {
      // a line still being written
    }
  }
  return out;
}

function runScript(file: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [file], { cwd: REPO, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------

test('keygate against the checks of Metabase\'s own tests, on a running keygate serve', async (t: TestContext) => {
  const up = await startUpstream(t);
  const dir = tempConfig(t, config(up.url));
  const kg = await startServe(t, dir.config, { args: ['--db', dir.db], env: ENV });
  const w: World = { kg, up, minted: [] };

  // ------------------------------------------------------------------ config file

  await t.test(`the config file's keys are created with Metabase's groups (${FILE_KEYS_TEST}, api-keys-config-test)`, async () => {
    const list = await keys(w);
    const byName = new Map(list.map((k) => [k.name, k]));
    assert.deepEqual(byName.get('Test API Key')?.group, { id: ADMIN_ID, name: 'Administrators' });
    assert.deepEqual(byName.get('All Users API Key')?.group, { id: ALL_USERS_ID, name: 'All Users' });
    // "should accept API key from environment variable"
    assert.deepEqual(byName.get('ENV API Key')?.group, { id: ADMIN_ID, name: 'Administrators' });
    assert.equal(await through(w, ENV_KEY, 'DELETE', '/anything'), 200, 'the key from {{env MB_API_KEY_FROM_ENV}} does not work');
    assert.equal(up.seen.at(-1)?.headers['x-api-key-group'], 'admin', 'the identity header keeps the config name');
    assert.equal(await through(w, ALL_USERS_KEY, 'POST', '/anything'), 200);
    assert.equal(up.seen.at(-1)?.headers['x-api-key-group'], 'all-users');
    // initialize-section-test (file_test.clj): unknown sections are passed over, with a warning.
    assert.match(kg.stderr(), /unknown-section/, 'no warning about the unknown section');
  });

  await t.test(`{{env NAME}} is case- and lisp-case/snake_case-insensitive (${FILE_TEST}, expand-template-env-var-values-test)`, async () => {
    assert.equal(await through(w, READER_KEY), 200, 'the key of {{env kg-compat-reader-key}} (KG_COMPAT_READER_KEY) does not work');
    assert.equal(up.seen.at(-1)?.headers['x-api-key-group'], 'readers');
    assert.equal(await through(w, READER_KEY, 'POST'), 403, 'the reader key gets more than its group allows');
    const descriptions = new Map((await keys(w)).map((k) => [k.name, k.description]));
    const want: Array<[string, string]> = [
      ['Bird plain', 'Parrot Hilton'], // "Nothing weird"
      ['Bird twice', 'Parrot Hilton-Parrot Hilton'], // "Should handle multiple templates in one string"
      ['Bird spaced', 'Parrot Hilton'], // "Ignore whitespace inside the template brackets"
      ['Bird brace before', '{Parrot Hilton'], // "Ignore excess brackets"
      ['Bird brace after', 'Parrot Hilton}'],
      ['Bird kebab', 'Parrot Hilton'], // "handle lisp-case/snake-case and case variations"
      ['Bird single braces', '{ {}}'], // expand-template-forms-test: "Ignore single curly brackets"
      ['Recursive', '{{env CONFIG_FILE_BIRD_NAME}}'], // recursive-template-form-expansion-test
    ];
    for (const [name, description] of want) assert.equal(descriptions.get(name), description, name);
  });

  await t.test(`[[optional {{env X}}]] keeps or drops the whole block (${FILE_TEST}, optional-template-test)`, async () => {
    const descriptions = new Map((await keys(w)).map((k) => [k.name, k.description]));
    const want: Array<[string, string]> = [
      ['Optional set', '~~~NotSecret123~~~'], // "env var exists"
      ['Optional set after text', 'password__~~~NotSecret123~~~'],
      ['Optional set with text', 'before__~~~NotSecret123~~~__after'],
      ['Optional unset', ''], // "env var does not exist"
      ['Optional unset after text', 'password__'],
      ['Optional unset with text', ''],
    ];
    for (const [name, description] of want) assert.equal(descriptions.get(name), description, name);
    assert.equal(await through(w, OPTIONAL_KEY), 200, 'the key of "[[{{env KG_COMPAT_OPTIONAL_KEY}}]]" does not work');
  });

  // ------------------------------------------------------------------ /api/api-key

  let coolFriends = 0;
  let uncoolFriends = 0;
  await t.test(`POST /api/api-key answers Metabase's shape with the group and updated_by (${API_TEST}, api-key-creation-test)`, async () => {
    coolFriends = (await createGroup(w, 'Cool Friends')).id;
    uncoolFriends = (await createGroup(w, 'Uncool Friends')).id;
    const name = 'f1b0c6f4-7a1e-4a55-9c3c-5b8f1e9d2a10';
    const k = await createKey(w, name, coolFriends);
    assertIncludesKeys(k, ['name', 'group', 'unmasked_key', 'masked_key', 'id', 'created_at', 'updated_at', 'updated_by'], 'create response');
    assert.deepEqual(k.updated_by, { id: (await keys(w)).find((x) => x.name === 'Test API Key')?.id, common_name: 'Test API Key' });
    assert.deepEqual(k.group, { name: 'Cool Friends', id: coolFriends });
    assert.equal(k.name, name);
  });

  await t.test(`a second API key with the same name is refused (${API_TEST}, api-key-creation-test-2)`, async () => {
    const name = 'Twice';
    await createKey(w, name, coolFriends);
    assertFieldError(await mb(w, 'POST', '/api/api-key', { group_id: coolFriends, name }), 'name', 'An API key with this name already exists.', 'same name');
  });

  await t.test(`a group is required, and a non-blank name (${API_TEST}, api-key-creation-test-5, -7 and -8)`, async () => {
    assertFieldError(await mb(w, 'POST', '/api/api-key', { group_id: null, name: 'No group' }), 'group_id', 'value must be an integer greater than zero.', 'group_id null');
    assertFieldError(await mb(w, 'POST', '/api/api-key', { group_id: coolFriends, name: '' }), 'name', 'value must be a non-blank string.', 'empty name');
    assertFieldError(await mb(w, 'POST', '/api/api-key', { group_id: coolFriends, name: '   ' }), 'name', 'value must be a non-blank string.', 'blank name');
  });

  await t.test(`the group can be "All Users" (${API_TEST}, api-key-creation-test-6)`, async () => {
    const k = await createKey(w, 'In All Users', ALL_USERS_ID);
    assert.equal(k.group.name, 'All Users');
  });

  let e2eKey = '';
  let e2eId = 0;
  await t.test(`a new key authenticates at once, a bad one and a deleted one get 401 (${API_TEST}, api-keys-work-e2e)`, async () => {
    const k = await createKey(w, 'End to end', ALL_USERS_ID);
    e2eKey = k.unmasked_key as string;
    e2eId = k.id;
    assert.equal(await through(w, e2eKey, 'GET', '/api/user/current'), 200);
    const bad = await send(kg.proxy, 'GET', '/api/user/current', 'mb_not_an_api_key');
    assert.equal(bad.status, 401);
    assert.equal((bad.body as { error: string }).error, 'invalid_api_key');
    assert.equal((await mb(w, 'DELETE', `/api/api-key/${k.id}`)).status, 204);
    assert.equal(await through(w, e2eKey, 'GET', '/api/user/current'), 401, 'a deleted API key can still be used');
  });

  await t.test(`the count counts keys (${API_TEST}, api-count-works)`, async () => {
    const before = await ok<number>(w, 'GET', '/api/api-key/count');
    assert.equal(before, (await keys(w)).length);
    await createKey(w, 'my cool OTHER name', coolFriends);
    assert.equal(await ok<number>(w, 'GET', '/api/api-key/count'), before + 1);
  });

  await t.test(`PUT changes a key's group, and the proxy enforces it (${API_TEST}, api-keys-can-be-updated)`, async () => {
    const k = await createKey(w, 'Changes group', coolFriends);
    assert.equal(k.group.name, 'Cool Friends');
    const updated = await ok<KeyJson>(w, 'PUT', `/api/api-key/${k.id}`, { group_id: uncoolFriends });
    assert.deepEqual(updated.group, { id: uncoolFriends, name: 'Uncool Friends' });
    assert.equal(await through(w, k.unmasked_key as string, 'GET', '/x'), 200);
    assert.equal(up.seen.at(-1)?.headers['x-api-key-group'], 'Uncool Friends');
  });

  await t.test(`PUT changes a key's name, in the same shape, without the key (${API_TEST}, api-keys-can-be-updated-2)`, async () => {
    const k = await createKey(w, 'My First Name', coolFriends);
    const renamed = await ok<KeyJson>(w, 'PUT', `/api/api-key/${k.id}`, { name: 'My Second Name' });
    assert.equal(renamed.name, 'My Second Name');
    assertIncludesKeys(renamed, ['created_at', 'updated_at', 'updated_by', 'id', 'group', 'name', 'masked_key'], 'update response');
    assert.ok(!Object.hasOwn(renamed, 'unmasked_key'), 'an update shows the key');
    assert.equal(await through(w, k.unmasked_key as string, 'GET', '/x'), 200);
    assert.equal(up.seen.at(-1)?.headers['x-api-key-name'], 'My Second Name');
  });

  await t.test('PUT with "name": null or "group_id": null leaves that field as it is (src/metabase/api_keys/api.clj, PUT "/:id": [:maybe …] fields, applied only when given)', async () => {
    const k = await createKey(w, 'Null fields', coolFriends);
    const a = await ok<KeyJson>(w, 'PUT', `/api/api-key/${k.id}`, { name: null, group_id: uncoolFriends });
    assert.deepEqual([a.name, a.group.name], ['Null fields', 'Uncool Friends']);
    const b = await ok<KeyJson>(w, 'PUT', `/api/api-key/${k.id}`, { name: 'Null fields (renamed)', group_id: null });
    assert.deepEqual([b.name, b.group.name], ['Null fields (renamed)', 'Uncool Friends']);
    const c = await ok<KeyJson>(w, 'PUT', `/api/api-key/${k.id}`, { name: null, group_id: null });
    assert.deepEqual([c.name, c.group.name], ['Null fields (renamed)', 'Uncool Friends']);
  });

  await t.test(`a nonexistent API key cannot be updated or regenerated: 404 (${API_TEST}, api-keys-can-be-updated-3, api-keys-can-be-regenerated-2)`, async () => {
    assert.equal((await mb(w, 'PUT', '/api/api-key/13371337/regenerate')).status, 404, 'regenerate');
    assert.equal((await mb(w, 'PUT', '/api/api-key/13371337', { name: 'Nobody' })).status, 404, 'update');
  });

  await t.test(`regenerate answers the key in both of Metabase's shapes; the old key gets 401, the new one 200 (${API_TEST}, api-keys-can-be-regenerated)`, async () => {
    const k = await createKey(w, 'Regenerated', coolFriends);
    const old = k.unmasked_key as string;
    assert.equal(await through(w, old, 'GET', '/api/user/current'), 200);
    const r = await ok<KeyJson>(w, 'PUT', `/api/api-key/${k.id}/regenerate`);
    w.minted.push(r.unmasked_key as string);
    // The test's shape in one Metabase version, and in another:
    assertIncludesKeys(r, ['created_at', 'updated_at', 'id', 'name', 'unmasked_key', 'masked_key', 'group', 'updated_by'], 'regenerate (full shape)');
    assertIncludesKeys(r, ['id', 'unmasked_key', 'masked_key', 'prefix'], 'regenerate (short shape)');
    assert.deepEqual([r.id, r.name, r.group], [k.id, 'Regenerated', { id: coolFriends, name: 'Cool Friends' }]);
    assert.equal(r.prefix, (r.unmasked_key as string).slice(0, 7));
    assert.equal(await through(w, old, 'GET', '/api/user/current'), 401, 'the old key still works');
    assert.equal(await through(w, r.unmasked_key as string, 'GET', '/api/user/current'), 200, 'the new key does not work');
  });

  await t.test(`the list shows name, group and updated_by (${API_TEST}, api-keys-can-be-listed)`, async () => {
    const a = await createKey(w, 'My First API Key', coolFriends);
    const b = await createKey(w, 'My Second API Key', ALL_USERS_ID);
    const listed = (await keys(w)).filter((k) => k.id === a.id || k.id === b.id);
    assert.deepEqual(
      listed.map((k) => ({ name: k.name, group: k.group, updated_by: k.updated_by?.common_name })),
      [
        { name: 'My First API Key', group: { name: 'Cool Friends', id: coolFriends }, updated_by: 'Test API Key' },
        { name: 'My Second API Key', group: { name: 'All Users', id: ALL_USERS_ID }, updated_by: 'Test API Key' },
      ],
    );
    assert.ok((await keys(w)).every((k) => k.unmasked_key === undefined), 'the list shows unmasked_key');
  });

  await t.test(`delete answers 204, the count drops, a second delete is 404 (${API_TEST}, api-keys-can-be-deleted)`, async () => {
    const k = await createKey(w, 'Deleted', ALL_USERS_ID);
    const n = await ok<number>(w, 'GET', '/api/api-key/count');
    const a = await mb(w, 'DELETE', `/api/api-key/${k.id}`);
    assert.deepEqual([a.status, a.text], [204, '']);
    assert.equal(await ok<number>(w, 'GET', '/api/api-key/count'), n - 1);
    assert.ok(!(await keys(w)).some((x) => x.id === k.id));
    assert.equal((await mb(w, 'DELETE', `/api/api-key/${k.id}`)).status, 404);
    assert.equal((await mb(w, 'DELETE', `/api/api-key/${e2eId}`)).status, 404);
  });

  // ------------------------------------------------------------------ /api/permissions/group

  await t.test(`GET /api/permissions/group lists "All Users" and "Administrators" with member counts, and empty groups (${PERMS_TEST}, fetch-groups-test)`, async () => {
    const byId = new Map((await groups(w)).map((g) => [g.id, g]));
    assert.equal(byId.get(ALL_USERS_ID)?.name, 'All Users');
    assert.equal(byId.get(ADMIN_ID)?.name, 'Administrators');
    assert.ok((byId.get(ALL_USERS_ID)?.member_count ?? 0) > 0 && (byId.get(ADMIN_ID)?.member_count ?? 0) > 0);
    const empty = await createGroup(w, 'Empty group');
    assert.equal((await groups(w)).find((g) => g.id === empty.id)?.member_count, 0);
    // "requires superuser"
    const refused = await mb(w, 'GET', '/api/permissions/group', undefined, ALL_USERS_KEY);
    assert.equal(refused.status, 403, refused.text);
  });

  await t.test(`the group list pages with limit and offset, ordered by lower-cased name (${PERMS_TEST}, groups-list-limit-test)`, async () => {
    // "Limit and offset pagination have defaults"
    assert.deepEqual(await groups(w, '?limit=1&offset=0'), await groups(w, '?limit=1'));
    assert.deepEqual(await groups(w, '?offset=1&limit=50'), await groups(w, '?offset=1'));
    // "Limit and offset pagination works for permissions list"
    const second = await groups(w, '?limit=1&offset=1');
    assert.deepEqual(second.map((g) => ({ id: g.id, name: g.name })), [{ id: ALL_USERS_ID, name: 'All Users' }]);
    // ordered-groups (permissions_rest/api.clj) orders by lower(name): the config group "readers" comes
    // before "Uncool Friends", where a case-sensitive order would put it last.
    const names = (await groups(w)).map((g) => g.name);
    const lower = (a: string, b: string): number => (a.toLowerCase() < b.toLowerCase() ? -1 : a.toLowerCase() > b.toLowerCase() ? 1 : 0);
    assert.deepEqual(names, [...names].sort(lower));
    assert.ok(names.indexOf('readers') < names.indexOf('Uncool Friends'), names.join(', '));
    // Paging until an empty page reaches every group once, and stops.
    const paged: string[] = [];
    for (let offset = 0; offset < 1000; offset += 3) {
      const page = await groups(w, `?limit=3&offset=${offset}`);
      if (page.length === 0) break;
      paged.push(...page.map((g) => g.name));
    }
    assert.deepEqual(paged, names);
    assert.deepEqual(await groups(w, `?limit=5&offset=${names.length}`), []);
    // A limit or offset that is not a number is refused (Metabase's older paging middleware answered 400 too).
    assertFieldError(await mb(w, 'GET', '/api/permissions/group?limit=ten'), 'limit', 'value must be an integer greater than or equal to zero.', 'limit=ten');
  });

  await t.test(`GET /api/permissions/group/:id hydrates members; 404 for an unknown id; 403 for a non-admin (${PERMS_TEST}, fetch-group-test)`, async () => {
    const g = await ok<GroupJson>(w, 'GET', `/api/permissions/group/${ALL_USERS_ID}`);
    assert.equal(g.name, 'All Users');
    const members = new Map((g.members ?? []).map((m) => [m.first_name, m]));
    const member = members.get('All Users API Key');
    assert.ok(member !== undefined, `no member "All Users API Key" in ${JSON.stringify(g.members)}`);
    for (const field of ['first_name', 'last_name', 'email', 'user_id', 'membership_id']) assert.ok(Object.hasOwn(member, field), `member field ${field}`);
    assert.ok(Number.isSafeInteger(member.user_id) && (member.membership_id as number) > 0);
    assert.match(String(member.email), /@api-key\.invalid$/, 'an API key member has an api-key user\'s email, as in Metabase');
    assert.equal((member.api_key as { masked_key: string }).masked_key.slice(0, 7), ALL_USERS_KEY.slice(0, 7));
    assert.equal(g.member_count, g.members?.length);
    assert.equal((await mb(w, 'GET', '/api/permissions/group/10000')).status, 404);
    assert.equal((await mb(w, 'GET', `/api/permissions/group/${ALL_USERS_ID}`, undefined, ALL_USERS_KEY)).status, 403);
  });

  await t.test(`POST /api/permissions/group creates a group; a name is required; non-admins get 403 (${PERMS_TEST}, create-group-test)`, async () => {
    const g = await createGroup(w, 'Test Group');
    assert.ok((await groups(w)).some((x) => x.id === g.id && x.name === 'Test Group'));
    assertFieldError(await mb(w, 'POST', '/api/permissions/group', { name: null }), 'name', 'value must be a non-blank string.', 'name null');
    assert.equal((await mb(w, 'POST', '/api/permissions/group', { name: 'Test Group 2' }, ALL_USERS_KEY)).status, 403);
  });

  await t.test(`group names are unique ignoring case: "A group with that name already exists." (src/metabase/permissions/models/permissions_group.clj, check-name-not-already-taken)`, async () => {
    for (const name of ['cool friends', 'COOL FRIENDS', 'administrators', 'All users', 'admin']) {
      assertFieldError(await mb(w, 'POST', '/api/permissions/group', { name }), 'name', 'A group with that name already exists.', `create "${name}"`);
    }
    const test = (await groups(w)).find((g) => g.name === 'Test Group') as GroupJson;
    assertFieldError(await mb(w, 'PUT', `/api/permissions/group/${test.id}`, { name: 'cool FRIENDS' }), 'name', 'A group with that name already exists.', 'rename onto another group');
    assert.equal((await groups(w)).filter((g) => g.name.toLowerCase() === 'cool friends').length, 1);
  });

  await t.test(`PUT /api/permissions/group/:id renames a group, audited with the previous and new names (${PERMS_TEST}, update-group-audit-test)`, async () => {
    const g = await createGroup(w, 'Before Rename');
    const k = await createKey(w, 'Key of a renamed group', g.id);
    const renamed = await ok<GroupJson>(w, 'PUT', `/api/permissions/group/${g.id}`, { name: 'Updated Group' });
    assert.deepEqual([renamed.id, renamed.name, renamed.member_count], [g.id, 'Updated Group', 1]);
    assert.equal((await keys(w)).find((x) => x.id === k.id)?.group.name, 'Updated Group');
    assert.equal(await through(w, k.unmasked_key as string, 'GET', '/x'), 200);
    assert.equal(up.seen.at(-1)?.headers['x-api-key-group'], 'Updated Group', 'the proxy still sends the old name');
    const line = auditLines(w).find((l) => l.action === 'group.update');
    assert.deepEqual([(line?.before as { name?: string })?.name, (line?.after as { name?: string })?.name], ['Before Rename', 'Updated Group']);
    assert.equal((await mb(w, 'PUT', '/api/permissions/group/10000', { name: 'Nobody' })).status, 404);
    assertFieldError(await mb(w, 'PUT', `/api/permissions/group/${g.id}`, { name: '' }), 'name', 'value must be a non-blank string.', 'blank rename');
  });

  await t.test(`the built-in groups cannot be edited or deleted: 400 (${GROUP_MODEL_TEST}, magic-groups-test)`, async () => {
    for (const [id, name] of [[ALL_USERS_ID, 'All Users'], [ADMIN_ID, 'Administrators']] as const) {
      for (const [method, body] of [['PUT', { name: 'Cool People' }], ['DELETE', undefined]] as const) {
        const a = await mb(w, method, `/api/permissions/group/${id}`, body);
        assert.equal(a.status, 400, `${method} ${name}: ${a.text}`);
        assert.match((a.body as { message: string }).message, /^You cannot edit or delete the '.*' permissions group!$/);
        assert.ok((a.body as { message: string }).message.includes(`'${name}'`));
      }
    }
    assert.deepEqual((await groups(w, '?limit=2')).map((g) => g.name), ['Administrators', 'All Users']);
  });

  await t.test(`DELETE /api/permissions/group/:id answers 204 and the group is gone; non-admins get 403 (${PERMS_TEST}, delete-group-test)`, async () => {
    const g = await createGroup(w, 'Test group to delete');
    assert.equal((await mb(w, 'DELETE', `/api/permissions/group/${g.id}`, undefined, ALL_USERS_KEY)).status, 403);
    const a = await mb(w, 'DELETE', `/api/permissions/group/${g.id}`);
    assert.deepEqual([a.status, a.text], [204, '']);
    assert.ok(!(await groups(w)).some((x) => x.id === g.id));
  });

  await t.test('keygate\'s deliberate difference: a config-owned group or key cannot be changed through the API (409 managed_by_config)', async () => {
    const readers = (await groups(w)).find((g) => g.name === 'readers') as GroupJson;
    for (const [method, urlPath, body] of [
      ['PUT', `/api/permissions/group/${readers.id}`, { name: 'Writers' }],
      ['DELETE', `/api/permissions/group/${readers.id}`, undefined],
      ['PUT', `/api/api-key/${(await keys(w)).find((k) => k.name === 'Reader key')?.id}`, { name: 'Writer key' }],
    ] as const) {
      const a = await mb(w, method, urlPath, body);
      assert.equal(a.status, 409, `${method} ${urlPath}: ${a.text}`);
      assert.equal((a.body as { error: string }).error, 'managed_by_config');
    }
    assert.equal(await through(w, READER_KEY), 200);
  });

  // ------------------------------------------------------------------ a script written for Metabase

  await t.test('a key-rotation script written for Metabase\'s API runs unchanged: pages the groups, finds "Administrators", creates, rotates, uses and deletes a key', async () => {
    const groupsBefore = await groups(w);
    const keysBefore = await keys(w);
    const seen = up.seen.length;
    const r = await runScript('test/fixtures/metabase-scripts/rotate-admin-key.mjs', {
      METABASE_API_KEY: ADMIN_KEY,
      METABASE_HOST: kg.admin,
      CHECK_URL: `${kg.proxy}/api/user/current`,
    });
    assert.equal(r.code, 0, `the script failed:\n${r.stdout}\n${r.stderr}`);
    const out = r.stdout.split('\n');
    assert.ok(out.includes(`${groupsBefore.length} groups`), r.stdout);
    assert.ok(out.includes(`Administrators is group ${ADMIN_ID}`), r.stdout);
    assert.ok(!r.stdout.includes('creating it'), 'the script created a second "Administrators" group');
    assert.ok(out.includes('old key: HTTP 401, new key: HTTP 200'), r.stdout);
    assert.match(r.stdout, /^deleted key \d+; it now gets HTTP 401$/m);
    assert.ok(out.includes('rotation check passed'), r.stdout);
    // The pages ended with an empty one, and every group was on exactly one page.
    const paged = out.filter((l) => l.startsWith('page at offset ')).flatMap((l) => l.replace(/^page at offset \d+: /, '').split(', '));
    assert.deepEqual(paged, groupsBefore.map((g) => g.name));
    // The new key went through the proxy as an admin key; nothing is left behind.
    const checks = up.seen.slice(seen).filter((s) => s.url === '/api/user/current');
    assert.equal(checks.length, 1, 'only the regenerated key reached the upstream');
    assert.equal(checks[0]?.headers['x-api-key-group'], 'admin');
    assert.deepEqual((await groups(w)).map((g) => g.id), groupsBefore.map((g) => g.id), 'the script changed the groups');
    assert.deepEqual((await keys(w)).map((k) => k.id), keysBefore.map((k) => k.id), 'the script left a key behind');
    for (const s of [...SECRETS, ...w.minted]) assert.ok(!r.stdout.includes(s) && !r.stderr.includes(s), 'the script printed a key');
  });

  await t.test('no key of the file or of the API shows in the daemon\'s output', () => {
    const output = kg.stdout() + kg.stderr();
    for (const s of [...SECRETS, ...w.minted]) assert.ok(!output.includes(s), `serve printed ${s.slice(0, 7)}…`);
    assert.ok(!output.includes(ENV.MY_SHOWN_PASSWORD) && !output.includes('Parrot Hilton'), 'serve printed the value of an {{env}} template');
  });
});

// ---------------------------------------------------------------------------
// Config files that Metabase refuses or reads in its own way, through the real CLI.

interface ValidateJson {
  valid: boolean;
  errors: Array<{ line: number; column: number; path: string; code: string; message: string }>;
  warnings: Array<{ path: string; code: string; message: string }>;
}

async function validate(t: TestContext, text: string, env: Record<string, string> = {}): Promise<{ code: number | null; doc: ValidateJson; output: string }> {
  const dir = tempConfig(t, text);
  const r = await runCli(['validate', '-c', dir.config, '--json'], { env });
  let doc: ValidateJson;
  try {
    doc = JSON.parse(r.stdout) as ValidateJson;
  } catch {
    return assert.fail(`validate printed no JSON:\n${shown(r)}`);
  }
  return { code: r.code, doc, output: r.stdout + r.stderr };
}

const withSetting = (value: string): string =>
  ['version: 1', 'config:', '  api-keys:', '    - name: Templated', '      group: admin', `      description: ${JSON.stringify(value)}`, '      key: mb_0123456789abcdefghij', ''].join('\n');

test(`invalid template forms are refused with the file, line and field (${FILE_TEST}, expand-template-forms-test, expand-template-env-var-values-validation-test)`, async (t) => {
  for (const template of ['{{}', '{{} }', '{{CONFIG_FILE_BIRD_NAME}}', '{{(env MY_ENV_VAR}}', '{{bird "Parrot Hilton"}}', '{{env}}', '{{env SOME_ENV_VAR SOME_ENV_VAR}}', '{{env :SOME_ENV_VAR}}', '[[no template]]']) {
    const { code, doc } = await validate(t, withSetting(template), { CONFIG_FILE_BIRD_NAME: 'Parrot Hilton' });
    assert.equal(code, 1, template);
    assert.deepEqual(
      doc.errors.map((e) => [e.line, e.path, e.code]),
      [[6, 'api-keys[0].description', 'invalid_template']],
      `${template}: ${JSON.stringify(doc.errors)}`,
    );
  }
});

test(`a failing value from a template is never quoted in an error (${FILE_TEST}, error-validation-do-not-leak-env-vars-test)`, async (t) => {
  const secret = '~~~ SeCrEt123 ~~~';
  const text = ['version: 1', 'config:', '  api-keys:', '    - name: Leaky', '      group: admin', '      key: "{{env MY_SENSITIVE_PASSWORD}}"', ''].join('\n');
  const { code, doc, output } = await validate(t, text, { MY_SENSITIVE_PASSWORD: secret });
  assert.equal(code, 1);
  assert.deepEqual(doc.errors.map((e) => [e.path, e.code]), [['api-keys[0].key', 'schema.format']]);
  assert.ok(!output.includes('SeCrEt123'), 'the error shows the value of the variable');
});

test(`an unknown group is refused (${FILE_KEYS_TEST}, api-keys-config-test: "should validate group values")`, async (t) => {
  const text = ['version: 1', 'config:', '  api-keys:', '    - name: Test API Key', '      key: mb_5testapikey123', '      group: invalid-group', ''].join('\n');
  const { code, doc } = await validate(t, text);
  assert.equal(code, 1);
  assert.deepEqual(doc.errors.map((e) => [e.line, e.path, e.code]), [[6, 'api-keys[0].group', 'unknown_group']]);
});

test('empty sections read as absent, as Metabase reads them (advanced_config/file/api_keys.clj, section-spec :api-keys: (s/* …) accepts nil)', async (t) => {
  const text = ['version: 1', 'config:', '  keygate:', '  users:', '  groups:', '  api-keys:', ''].join('\n');
  const { code, doc } = await validate(t, text);
  assert.equal(code, 0, JSON.stringify(doc));
  assert.deepEqual(doc.errors, []);
  const dir = tempConfig(t, text);
  const applied = await runCli(['apply', '-c', dir.config, '--db', dir.db]);
  assert.equal(applied.code, 0, shown(applied));
});

test('keygate\'s deliberate difference: a variable missing outside [[ ]] is an error naming it, where Metabase uses "" (file.clj, expand-parsed-template-form \'env)', async (t) => {
  const text = ['version: 1', 'config:', '  api-keys:', '    - name: ENV API Key', '      group: admin', '      key: "{{env MB_API_KEY_FROM_ENV}}"', '    - name: Optional', '      group: admin', '      key: "[[{{env MB_OPTIONAL_KEY}}]]"', ''].join('\n');
  const { code, doc } = await validate(t, text);
  assert.equal(code, 1);
  assert.deepEqual(
    doc.errors.map((e) => [e.line, e.path, e.code, e.message]),
    [
      [6, 'api-keys[0].key', 'env_missing', 'environment variable "MB_API_KEY_FROM_ENV" is not set'],
      // An optional block that comes out empty leaves an empty key, which is never accepted.
      [9, 'api-keys[1].key', 'schema.format', 'must be 12-254 characters with no whitespace or control characters, or an "{{env NAME}}" template'],
    ],
  );
});
