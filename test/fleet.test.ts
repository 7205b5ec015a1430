/**
 * A fleet: three real `keygate serve` processes on one PostgreSQL database,
 * with the same config file (which takes the database from
 * `"{{env DATABASE_URL}}"`), reached through a TCP relay that the test cuts
 * to make PostgreSQL unreachable without stopping the machine's shared
 * server. The URL carries a password (a role made for the test), and nothing
 * any replica prints or serves may show it.
 *
 * Every wait is for an event (an answer, a /status field), with a generous
 * deadline only as a guard against hanging; how fast replicas converge is
 * measured in bench/, not here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { startServe, startUpstream, type Served } from './helpers/serve.ts';
import { tempConfig } from './helpers/tmp.ts';
import { yaml } from './helpers/config.ts';
import { postgresAvailable, startRelay, testDatabase, testRole, urlFor } from './helpers/postgres.ts';

const ADMIN_KEY = 'mb_fleetAdminKey0123456789abcdef';
const READER_KEY = 'kg_fleet_reader_key_0123456789ab';
const LATER_KEY = 'kg_fleet_later_key_0123456789abc';
const EDITED_KEY = 'kg_fleet_edited_key_0123456789ab';
const PASSWORD = 'Fleet-db-pw-9d27c4e1';
const GUARD_MS = 60_000;

function config(extra: Array<{ name: string; key: string }> = []): string {
  return yaml`
    version: 1
    config:
      keygate:
        database: "{{env DATABASE_URL}}"
        reload_debounce_ms: 50
      api-keys:
        - name: Admin API key
          group: admin
          key: ${ADMIN_KEY}
        - name: Reader
          group: all-users
          key: ${READER_KEY}
  ` + extra.map((k) => `    - name: ${k.name}\n      group: all-users\n      key: ${k.key}\n`).join('');
}

/** Waits for `fn` to hold: a hang guard only, never a measurement. */
async function until(what: string, fn: () => Promise<boolean> | boolean, guardMs = GUARD_MS): Promise<void> {
  const end = Date.now() + guardMs;
  while (!(await fn())) {
    if (Date.now() > end) assert.fail(`still waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function proxied(r: Served, key: string): Promise<number> {
  const res = await fetch(`${r.proxy}/api/card/1`, { headers: { 'x-api-key': key } });
  await res.arrayBuffer();
  return res.status;
}

async function api(r: Served, method: string, path: string, body?: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(`${r.admin}${path}`, {
    method,
    headers: { 'x-api-key': ADMIN_KEY, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, text: await res.text() };
}

interface Status {
  database: string;
  store: { kind: string; reachable: boolean; error: string | null };
  applied: { sha256: string | null; revision: number | null };
  last_reload: { result?: string } | null;
}

async function status(r: Served): Promise<Status> {
  return (await (await fetch(`${r.admin}/status`)).json()) as Status;
}

async function text(url: string): Promise<string> {
  return (await fetch(url)).text();
}

if (postgresAvailable(false)) {
  test('three replicas on one PostgreSQL database share keys, apply the file once, and keep serving while the database is away', async (t) => {
    const db = await testDatabase(t);
    const role = await testRole(t, db, PASSWORD);
    const relay = await startRelay(t);
    const url = urlFor(db.name, { user: role, password: PASSWORD, host: '127.0.0.1', port: relay.port });
    assert.ok(url.includes(PASSWORD), 'positive control: the URL the replicas get carries the password');
    const upstream = await startUpstream(t);
    const dir = tempConfig(t, config());
    const env = { DATABASE_URL: url };
    const replicas = await Promise.all([1, 2, 3].map(() => startServe(t, dir.config, { env, args: ['--upstream', upstream.url] })));
    const [r1, r2, r3] = replicas as [Served, Served, Served];
    const seen: string[] = [];
    const collect = async (r: Served): Promise<void> => {
      for (const p of ['/status', '/metrics', '/', '/app.js', '/api/api-key', '/api/permissions/group']) {
        seen.push(p.startsWith('/api/') ? (await api(r, 'GET', p)).text : await text(`${r.admin}${p}`));
      }
    };

    await t.test('the three apply the same file at once: one revision, the same on all three', async () => {
      const revisions = await db.query<{ number: number }>('SELECT number::int AS number FROM keygate.revisions');
      assert.deepEqual(revisions, [{ number: 1 }]);
      for (const r of replicas) {
        const s = await status(r);
        assert.equal(s.store.kind, 'postgres');
        assert.equal(s.store.reachable, true);
        assert.equal(s.applied.revision, 1);
        assert.match(s.database, /:\*\*\*\*@/);
        assert.equal(await proxied(r, READER_KEY), 200);
      }
    });

    let created: { id: number; key: string };
    await t.test("a key created through replica 1's management API works on replicas 2 and 3", async () => {
      const res = await api(r1, 'POST', '/api/api-key', { name: 'Made on replica 1', group_id: 1 });
      assert.equal(res.status, 200, res.text);
      const row = JSON.parse(res.text) as { id: number; unmasked_key: string };
      created = { id: row.id, key: row.unmasked_key };
      assert.equal(await proxied(r1, created.key), 200, 'enforced on replica 1 once answered');
      await until('replicas 2 and 3 to accept the new key', async () => (await proxied(r2, created.key)) === 200 && (await proxied(r3, created.key)) === 200);
    });

    await t.test('deleted through replica 1, it gets 401 on all three', async () => {
      const res = await api(r1, 'DELETE', `/api/api-key/${created.id}`);
      assert.equal(res.status, 204, res.text);
      assert.equal(await proxied(r1, created.key), 401);
      await until('replicas 2 and 3 to refuse the deleted key', async () => (await proxied(r2, created.key)) === 401 && (await proxied(r3, created.key)) === 401);
    });

    await t.test('a file edit that all three apply lands as one revision, and /status shows the same revision and SHA-256 on all three', async () => {
      dir.rewrite(config([{ name: 'Edited', key: EDITED_KEY }]));
      const sha = createHash('sha256').update(readFileSync(dir.config)).digest('hex');
      await until('all three to apply the edit', async () => (await Promise.all(replicas.map(status))).every((s) => s.applied.sha256 === sha));
      const statuses = await Promise.all(replicas.map(status));
      assert.deepEqual(statuses.map((s) => [s.applied.sha256, s.applied.revision]), [[sha, 2], [sha, 2], [sha, 2]]);
      assert.deepEqual(await db.query('SELECT number::int AS number FROM keygate.revisions ORDER BY number'), [{ number: 1 }, { number: 2 }]);
      for (const r of replicas) assert.equal(await proxied(r, EDITED_KEY), 200);
    });

    await t.test('PostgreSQL lost: known keys keep working (no 5xx), /status and /metrics show it, management writes answer 503, a file edit waits', async () => {
      await collect(r1);
      const outcomes = new Map<number, number>();
      let traffic = true;
      const load = (async () => {
        // Bounded: it stops when the test says so, or after this many rounds whatever happens.
        for (let i = 0; traffic && i < 20_000; i++) {
          for (const r of replicas) {
            for (const key of [READER_KEY, EDITED_KEY]) {
              const s = await proxied(r, key);
              outcomes.set(s, (outcomes.get(s) ?? 0) + 1);
            }
          }
        }
      })();
      relay.cut();
      await until('all three to see the database unreachable', async () => (await Promise.all(replicas.map(status))).every((s) => !s.store.reachable));
      for (const r of replicas) {
        const s = await status(r);
        assert.match(s.store.error ?? '', new RegExp(`PostgreSQL at 127\\.0\\.0\\.1:${relay.port}`));
        assert.match(await text(`${r.admin}/metrics`), /^keygate_store_reachable 0$/m);
      }
      const refused = await api(r2, 'POST', '/api/api-key', { name: 'Made while away', group_id: 1 });
      assert.equal(refused.status, 503, refused.text);
      assert.equal((JSON.parse(refused.text) as { error: string }).error, 'store_unavailable');
      seen.push(refused.text);
      // An edit made now cannot be applied: every replica keeps serving, and tries again later.
      dir.rewrite(config([{ name: 'Edited', key: EDITED_KEY }, { name: 'Later', key: LATER_KEY }]));
      await until('a reload to fail for want of the database', async () => (await Promise.all(replicas.map(status))).every((s) => s.last_reload?.result === 'failure' || s.last_reload?.result === 'failed'));
      assert.equal(await proxied(r1, LATER_KEY), 401, 'nothing of the edit is served before it is applied');
      await collect(r3);
      traffic = false;
      await load;
      const fivexx = [...outcomes].filter(([s]) => s >= 500).reduce((n, [, c]) => n + c, 0);
      assert.equal(fivexx, 0, `answers while the database was away: ${JSON.stringify([...outcomes])}`);
      assert.deepEqual([...outcomes.keys()], [200]);
    });

    await t.test('PostgreSQL back: the waiting edit lands once, and a key created afterwards works on all three', async () => {
      relay.restore();
      await until('all three to see the database again', async () => (await Promise.all(replicas.map(status))).every((s) => s.store.reachable));
      const sha = createHash('sha256').update(readFileSync(dir.config)).digest('hex');
      await until('all three to apply the edit made while the database was away', async () => (await Promise.all(replicas.map(status))).every((s) => s.applied.sha256 === sha));
      assert.deepEqual(await db.query('SELECT number::int AS number FROM keygate.revisions ORDER BY number'), [{ number: 1 }, { number: 2 }, { number: 3 }]);
      for (const r of replicas) assert.equal(await proxied(r, LATER_KEY), 200);
      const res = await api(r1, 'POST', '/api/api-key', { name: 'Made after the return', group_id: 1 });
      assert.equal(res.status, 200, res.text);
      const key = (JSON.parse(res.text) as { unmasked_key: string }).unmasked_key;
      await until('all three to accept the key made after the return', async () => (await Promise.all(replicas.map((r) => proxied(r, key)))).every((s) => s === 200));
      await collect(r2);
    });

    await t.test('the password never shows: not in any log line, /status, /metrics, the admin page or an error', async () => {
      const codes = await Promise.all(replicas.map((r) => r.stop()));
      assert.deepEqual(codes, [0, 0, 0]);
      const everything = [...seen, ...replicas.flatMap((r) => [r.stdout(), r.stderr()])].join('\n');
      assert.ok(everything.includes('keygate serving') && everything.includes('database unreachable'), 'positive control: the output searched is the real one');
      assert.ok(everything.includes(`${role}:****@`), 'positive control: the database is shown, without its password');
      assert.equal(everything.includes(PASSWORD), false, 'the password was shown');
      assert.doesNotMatch(everything, /uncaught|unhandled/i);
    });
  });
}
