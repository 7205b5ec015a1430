/**
 * The control plane in its real worker thread, with a real SQLite file and a
 * real config file, driven through the serving side's ControlClient: every
 * write is published to the table the proxy reads before the write is
 * answered, a single-key change as a delta (never a whole table), a large
 * change as a table built in slices, and writes made by another process are
 * followed through the store's feed.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { ControlClient } from '../src/control/client.ts';
import type { ApiArgs, FromControl } from '../src/control/protocol.ts';
import { authenticate } from '../src/proxy/auth.ts';
import { tempConfig } from './helpers/tmp.ts';
import { eventually } from './helpers/serve.ts';

const ADMIN_KEY = 'kg_control_admin_key_0123456789ab';
const NOW = () => Date.now();

function config(keys: number): string {
  const lines = ['version: 1', 'config:', '  groups:', '    - name: readers', '      allow:', '        - methods: [GET]', '          paths: ["/read/**"]', '  api-keys:'];
  lines.push('    - name: admin', '      group: admin', `      key: ${ADMIN_KEY}`);
  for (let i = 0; i < keys; i++) lines.push(`    - name: bulk-${i}`, '      group: readers', `      key: kg_control_bulk_${String(i).padStart(6, '0')}_abcdef`);
  return `${lines.join('\n')}\n`;
}

async function started(t: TestContext, keys = 3): Promise<{ client: ControlClient; updates: Array<FromControl['t']>; dir: ReturnType<typeof tempConfig> }> {
  const dir = tempConfig(t, config(keys));
  const updates: Array<FromControl['t']> = [];
  const client = new ControlClient({ logger: pino({ level: 'silent' }), feedPollMs: 50, onUpdate: (m) => updates.push(m.t) });
  t.after(() => client.close());
  const r = await client.start({ file: dir.config, dbFlag: dir.db, env: {}, cwd: dir.dir });
  assert.equal(r.kind, 'started', JSON.stringify(r));
  return { client, updates, dir };
}

const admin = { id: 0, name: 'admin' };

async function api(client: ControlClient, route: ApiArgs['route'], params: string[] = [], body: object | null = null): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await client.api({ route, params, body: body === null ? null : JSON.stringify(body), actor: admin });
  return { status: r.status, json: r.body === null ? {} : (JSON.parse(new TextDecoder().decode(r.body)) as Record<string, unknown>) };
}

test('the first table is in place when start resolves: the file\'s keys are admitted, others refused', async (t) => {
  const { client, updates } = await started(t);
  assert.deepEqual(updates, ['table']);
  const snap = client.table.current();
  assert.equal(authenticate(snap, ADMIN_KEY, NOW()).ok, true);
  assert.equal(authenticate(snap, 'kg_control_bulk_000001_abcdef', NOW()).ok, true);
  assert.deepEqual(authenticate(snap, 'kg_control_never_declared_0000', NOW()), { ok: false, reason: 'invalid' });
  assert.deepEqual(client.table.counts(), { keys: 4, config: 4, api: 0, groups: 3 });
});

test('a key created through the API is admitted as soon as the call is answered, sent as a delta, not a whole table', async (t) => {
  const { client, updates } = await started(t);
  const groups = await api(client, 'group.list');
  assert.equal(groups.status, 200);
  const readers = (groups.json as unknown as Array<{ id: number; name: string }>).find((g) => g.name === 'readers');
  const created = await api(client, 'key.create', [], { name: 'bot', group_id: readers?.id });
  assert.equal(created.status, 200, JSON.stringify(created.json));
  const key = created.json.unmasked_key as string;
  // No waiting: the reply came after the delta.
  const auth = authenticate(client.table.current(), key, NOW());
  assert.ok(auth.ok, 'the created key is not admitted yet');
  assert.equal(auth.principal.group, 'readers');
  assert.deepEqual(updates, ['table', 'delta']);

  const id = String(created.json.id);
  const regenerated = await api(client, 'key.regenerate', [id]);
  assert.equal(regenerated.status, 200);
  assert.deepEqual(authenticate(client.table.current(), key, NOW()), { ok: false, reason: 'invalid' }, 'the old key still works after regenerate');
  const fresh = regenerated.json.unmasked_key as string;
  assert.equal(authenticate(client.table.current(), fresh, NOW()).ok, true);

  assert.equal((await api(client, 'key.delete', [id])).status, 204);
  assert.deepEqual(authenticate(client.table.current(), fresh, NOW()), { ok: false, reason: 'invalid' }, 'a deleted key still works');
  assert.deepEqual(updates, ['table', 'delta', 'delta', 'delta']);
});

test('a group deleted through the API: its keys move to all-users at once, keeping the group\'s rules', async (t) => {
  const { client } = await started(t);
  const g = await api(client, 'group.create', [], { name: 'temps' });
  assert.equal(g.status, 200);
  const k = await api(client, 'key.create', [], { name: 'temp bot', group_id: g.json.id });
  const key = k.json.unmasked_key as string;
  assert.equal((await api(client, 'group.delete', [String(g.json.id)])).status, 204);
  const auth = authenticate(client.table.current(), key, NOW());
  assert.ok(auth.ok);
  assert.equal(auth.principal.group, 'all-users');
});

test('a file edit is published as a delta; an edit of more keys than a delta carries, as a table built in slices', async (t) => {
  const { client, updates, dir } = await started(t, 5000);
  writeFileSync(dir.config, config(5000).replace('kg_control_bulk_000007_abcdef', 'kg_control_bulk_rotated_abcdef'));
  const small = await client.reconcile({ skipIfSha256: null });
  assert.equal(small.kind, 'applied');
  assert.deepEqual(updates, ['table', 'delta']);
  assert.equal(authenticate(client.table.current(), 'kg_control_bulk_rotated_abcdef', NOW()).ok, true);
  assert.equal(authenticate(client.table.current(), 'kg_control_bulk_000007_abcdef', NOW()).ok, false);

  writeFileSync(dir.config, config(5000).replaceAll('_abcdef', '_fedcba'));
  const big = await client.reconcile({ skipIfSha256: null });
  assert.equal(big.kind, 'applied');
  assert.deepEqual(updates, ['table', 'delta', 'table']);
  assert.equal(authenticate(client.table.current(), 'kg_control_bulk_004999_fedcba', NOW()).ok, true);
  assert.equal(authenticate(client.table.current(), 'kg_control_bulk_004999_abcdef', NOW()).ok, false);
  assert.deepEqual(client.table.counts(), { keys: 5001, config: 5001, api: 0, groups: 3 });
});

test('a write made by another process (keygate apply beside the daemon) reaches the table through the feed', async (t) => {
  const { client, updates, dir } = await started(t);
  const edited = dir.write('other.yml', config(3).replace('kg_control_bulk_000001_abcdef', 'kg_control_bulk_by_apply_abcdef'));
  const bin = fileURLToPath(new URL('../bin/keygate.js', import.meta.url));
  const r = spawnSync(process.execPath, [bin, 'apply', '-c', edited, '--db', dir.db], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(
    await eventually(() => authenticate(client.table.current(), 'kg_control_bulk_by_apply_abcdef', NOW()).ok),
    'the key applied by another process never reached the table',
  );
  assert.equal(authenticate(client.table.current(), 'kg_control_bulk_000001_abcdef', NOW()).ok, false);
  assert.deepEqual(updates, ['table', 'delta']);
});

test('the admin key\'s own use of the management API counts as its last use', async (t) => {
  const { client } = await started(t);
  type Listed = Array<{ id: number; name: string; last_used_at: string | null }>;
  const list = async (actor: ApiArgs['actor']): Promise<Listed> => {
    const r = await client.api({ route: 'key.list', params: [], body: null, actor });
    return JSON.parse(new TextDecoder().decode(r.body ?? new Uint8Array())) as Listed;
  };
  const first = await list(admin);
  const row = first.find((k) => k.name === 'admin');
  assert.equal(row?.last_used_at, null, 'never used yet');
  const before = Date.now();
  const after = await list({ id: row.id, name: 'admin' });
  const seen = after.find((k) => k.name === 'admin')?.last_used_at ?? null;
  assert.ok(seen !== null && Date.parse(seen) >= before, `last_used_at of the admin key after it called the API: ${String(seen)}`);
});

test('a control plane replaced after every answer (to give memory back) resumes from the table\'s position: nothing is lost or applied twice', async (t) => {
  const dir = tempConfig(t, config(3));
  const updates: Array<FromControl['t']> = [];
  // Replaced after every answer: every call below meets a fresh control plane that resumed.
  const client = new ControlClient({ logger: pino({ level: 'silent' }), feedPollMs: 50, recycleHeapBytes: 1, onUpdate: (m) => updates.push(m.t) });
  t.after(() => client.close());
  assert.equal((await client.start({ file: dir.config, dbFlag: dir.db, env: {}, cwd: dir.dir })).kind, 'started');
  const made: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await api(client, 'key.create', [], { name: `resumed ${i}`, group_id: 1 });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    made.push(r.json.unmasked_key as string);
    for (const k of made) assert.equal(authenticate(client.table.current(), k, NOW()).ok, true, `key ${made.indexOf(k)} after ${i + 1} restarts`);
  }
  writeFileSync(dir.config, config(3).replace('kg_control_bulk_000002_abcdef', 'kg_control_bulk_after_restarts'));
  assert.equal((await client.reconcile({ skipIfSha256: null })).kind, 'applied');
  assert.equal(authenticate(client.table.current(), 'kg_control_bulk_after_restarts', NOW()).ok, true);
  // Only the first table was whole: every restart went on from the position the table had.
  assert.deepEqual(updates, ['table', 'delta', 'delta', 'delta', 'delta', 'delta']);
  assert.deepEqual(client.table.counts(), { keys: 8, config: 4, api: 4, groups: 3 });
});
