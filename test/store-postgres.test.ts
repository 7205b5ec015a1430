/**
 * The PostgreSQL store against the store contract, on real databases (one per
 * test, created and dropped), plus what is PostgreSQL's own: notifications,
 * lost connections, an unreachable server, read-only and plan-only opens.
 * Skipped, with one line saying how to run them, where no server answers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openStore } from '../src/store/open.ts';
import pg from 'pg';
import { FEED_CHANNEL, openPostgresStore, POSTGRES_SCHEMA_VERSION } from '../src/store/postgres.ts';
import type { NewKey, Store } from '../src/store/types.ts';
import { freePort } from './helpers/serve.ts';
import { storeContract } from './helpers/store-contract.ts';
import { postgresAvailable, startRelay, testDatabase, testRole, urlFor, type TestDatabase } from './helpers/postgres.ts';
import { sha256 } from './helpers/config.ts';
import { crashSeries, postgresTarget } from './helpers/crash.ts';

const AT = '2026-06-01T00:00:00.000Z';

function key(id: number, name: string): NewKey {
  return { id, name, digest: sha256(name), prefix: 'kg_test', groupId: 1, source: 'api', description: null, creator: null, expiresAt: null, disabled: false, allow: null, at: AT, updatedBy: null };
}

/** Waits for `fn` to hold (a hang guard only: no test here asserts how long anything took). */
async function until(what: string, fn: () => Promise<boolean> | boolean, guardMs = 30_000): Promise<void> {
  const end = Date.now() + guardMs;
  while (!(await fn())) {
    if (Date.now() > end) assert.fail(`still waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function backends(db: TestDatabase): Promise<number[]> {
  const rows = await db.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'keygate' AND pid <> pg_backend_pid()`,
    [db.name],
  );
  return rows.map((r) => r.pid);
}

if (postgresAvailable(true)) {
  storeContract('PostgreSQL', async (t, opts) => {
    const db = await testDatabase(t);
    return {
      location: db.url,
      open: () => openPostgresStore(db.url, opts?.tombstonesKept === undefined ? {} : { tombstonesKept: opts.tombstonesKept }),
    };
  });

  test('keygate keeps its tables in a schema of its own, with the migrations it ran recorded', async (t) => {
    const db = await testDatabase(t);
    const s = await openStore(db.url);
    t.after(() => s.close());
    await (await openStore(db.url)).close();
    const tables = await db.query<{ table_name: string }>(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'keygate' ORDER BY 1`);
    assert.deepEqual(
      tables.map((r) => r.table_name),
      ['api_keys', 'feed', 'groups', 'migrations', 'revisions', 'tombstones'],
    );
    const migrations = await db.query<{ version: number }>('SELECT version FROM keygate.migrations ORDER BY version');
    assert.deepEqual(
      migrations.map((r) => r.version),
      Array.from({ length: POSTGRES_SCHEMA_VERSION }, (_, i) => i + 1),
      'each migration ran once, although the database was opened twice',
    );
    assert.deepEqual((await db.query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public'`))[0], { n: 0 });
  });

  test('a write committed through one connection notifies the others, and a dropped listener comes back', async (t) => {
    const db = await testDatabase(t);
    const a = await openStore(db.url);
    const b = await openStore(db.url);
    t.after(async () => {
      await a.close();
      await b.close();
    });
    let notes = 0;
    const w = b.watch(() => notes++);
    t.after(() => w.close());
    // The first call says that it listens (and that writes may have been missed before).
    await until('the listener to start', () => notes >= 1);
    const before = notes;
    await a.write(async (tx) => tx.insertKeys([key(1001, 'one')]));
    await until('a notification of the write', () => notes > before);

    // The server drops every keygate connection to this database, the listener's among them.
    await db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'keygate'`, [db.name]);
    const dropped = notes;
    await until('the listener to connect again', () => notes > dropped);
    const again = notes;
    await a.write(async (tx) => tx.insertKeys([key(1002, 'two')]));
    await until('a notification after the reconnect', () => notes > again);
    assert.deepEqual((await b.listKeys()).map((k) => k.name), ['one', 'two']);
  });

  test('only committed writes notify, each with its feed position', async (t) => {
    const db = await testDatabase(t);
    const s = await openStore(db.url);
    t.after(() => s.close());
    const listener = new pg.Client({ connectionString: db.url });
    listener.on('error', () => undefined);
    await listener.connect();
    t.after(() => listener.end());
    const payloads: string[] = [];
    listener.on('notification', (n) => payloads.push(`${n.channel} ${n.payload ?? ''}`));
    await listener.query(`LISTEN ${FEED_CHANNEL}`);
    await assert.rejects(
      s.write(async (tx) => {
        await tx.insertKeys([key(1001, 'one')]);
        throw new Error('changed my mind');
      }),
    );
    await s.write(async (tx) => tx.insertKeys([key(1002, 'two')]));
    const p = await s.position();
    // Notifications arrive in commit order: had the rolled-back write sent one, it would be first.
    await until('the committed write to be notified', () => payloads.length > 0);
    assert.deepEqual(payloads, [`${FEED_CHANNEL} ${p.seq}`]);
  });

  test('connections the server terminates, idle or in a transaction, never take the process down: the write fails whole and the next one works', async (t) => {
    const db = await testDatabase(t);
    const s: Store = await openStore(db.url);
    t.after(() => s.close());
    await s.write(async (tx) => tx.insertKeys([key(1001, 'one')]));
    const p = await s.position();

    // Idle pooled connections dropped: the pool emits 'error', which must not crash; the next read reconnects.
    await db.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'keygate'`, [db.name]);
    await until('the pool to notice', async () => (await backends(db)).length === 0);
    assert.deepEqual(await s.position(), p);

    // The transaction's own connection dropped between two of its statements.
    await assert.rejects(
      s.write(async (tx) => {
        await tx.insertKeys([key(1002, 'two')]);
        const mine = await backends(db);
        await db.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [mine]);
        await new Promise((r) => setTimeout(r, 50));
        await tx.insertKeys([key(1003, 'three')]);
      }),
      (err: { code?: string; message?: string }) => err.code === 'KG_ERR_STORE_UNAVAILABLE' && /PostgreSQL at 127\.0\.0\.1:\d+|PostgreSQL at [^ ]+:\d+/.test(err.message ?? ''),
    );
    assert.deepEqual((await s.listKeys()).map((k) => k.name), ['one'], 'nothing of the failed write landed');
    assert.deepEqual(await s.position(), p);
    await s.write(async (tx) => tx.insertKeys([key(1004, 'four')]));
    assert.deepEqual((await s.listKeys()).map((k) => k.name), ['four', 'one']);
  });

  test('a server that cannot be reached is KG_ERR_STORE_UNAVAILABLE naming host:port, never the password', async (t) => {
    const port = await freePort();
    const password = 'pw-never-shown-7f3a';
    await assert.rejects(openStore(urlFor('kg_nowhere', { user: 'someone', password, host: '127.0.0.1', port })), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'KG_ERR_STORE_UNAVAILABLE');
      assert.match(err.message, new RegExp(`PostgreSQL at 127\\.0\\.0\\.1:${port} is unreachable`));
      assert.ok(!JSON.stringify({ m: err.message, s: err.stack, c: String((err as { cause?: unknown }).cause) }).includes(password));
      return true;
    });

    // Lost while open: reads and writes fail the same way, and work again once it is back.
    const db = await testDatabase(t);
    const relay = await startRelay(t);
    const s = await openStore(urlFor(db.name, { host: '127.0.0.1', port: relay.port }));
    t.after(() => s.close());
    relay.cut();
    await assert.rejects(s.position(), { code: 'KG_ERR_STORE_UNAVAILABLE', message: new RegExp(`127\\.0\\.0\\.1:${relay.port}`) });
    await assert.rejects(
      s.write(async (tx) => tx.insertKeys([key(1001, 'one')])),
      { code: 'KG_ERR_STORE_UNAVAILABLE' },
    );
    relay.restore();
    await s.write(async (tx) => tx.insertKeys([key(1001, 'one')]));
    assert.equal(await s.countKeys(), 1);
  });

  test('a URL with a password works, and the store shows it without the password', async (t) => {
    const db = await testDatabase(t);
    const password = 'role-pw-3c9e1b';
    const role = await testRole(t, db, password);
    const s = await openStore(urlFor(db.name, { user: role, password }));
    t.after(() => s.close());
    assert.equal(s.info.kind, 'postgres');
    assert.ok(!s.info.location.includes(password), s.info.location);
    assert.match(s.info.location, /\*\*\*\*/);
    await s.write(async (tx) => tx.insertKeys([key(1001, 'one')]));
    assert.equal(await s.countKeys(), 1);
  });

  test('keys list (read-only) refuses a database without keygate tables and writes nothing; plan plans against an empty store', async (t) => {
    const db = await testDatabase(t);
    await assert.rejects(openStore(db.url, { readOnly: true }), { code: 'KG_ERR_DATABASE', message: /no keygate tables \(run `keygate apply` first\)/ });
    const planned = await openStore(db.url, { planOnly: true });
    assert.equal(await planned.countKeys(), 0);
    assert.equal((await planned.listGroups()).length, 2);
    await planned.close();
    assert.deepEqual(await db.query(`SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'keygate'`), [], 'a plan created the schema');
    await (await openStore(db.url)).close();
    const ro = await openStore(db.url, { readOnly: true });
    assert.equal(await ro.countKeys(), 0);
    await ro.close();
  });

  test('key material may change hands across a large batch (rows written in slices)', async (t) => {
    const db = await testDatabase(t);
    const s = await openStore(db.url);
    t.after(() => s.close());
    const n = 12_000;
    const rows = Array.from({ length: n }, (_, i) => key(100_000 + i, `bulk-${i}`));
    await s.write(async (tx) => tx.insertKeys(rows));
    // Every key takes the material of its mirror image: the first slice's digests go to the last slice's rows.
    await s.write(async (tx) => tx.updateKeys(rows.map((r, i) => ({ ...r, digest: (rows[n - 1 - i] as NewKey).digest }))));
    assert.equal(await s.countKeys(), n);
    assert.equal((await s.getKey(100_000))?.digest, sha256(`bulk-${n - 1}`));
    assert.equal((await s.getKey(100_000 + n - 1))?.digest, sha256('bulk-0'));
    const cs = await s.changesSince({ ...(await s.position()), seq: (await s.position()).seq - 1 });
    assert.equal(cs.keys.length, n);
    await s.write(async (tx) => tx.deleteKeys(rows.map((r) => r.id)));
    assert.equal(await s.countKeys(), 0);
  });

  test('SIGKILL of an applier in the middle of a 10,000-key apply leaves the database whole, old or new', async (t) => {
    const db = await testDatabase(t);
    const runs = 5;
    const s = await crashSeries(t, { keys: 10_000, runs, target: postgresTarget(db.url, db.query), log: (l) => t.diagnostic(l) });
    t.diagnostic(`${s.runs} kills: ${s.old} left the old state, ${s.new} the new state; ${s.killedMidway} landed before the apply had finished`);
    assert.equal(s.runs, runs);
    assert.ok(s.killedMidway >= 1, 'no kill landed before the apply had finished');
  });
}
