/**
 * The store contract: what every Store must do, whatever engine is behind it.
 * Each store's test file calls `storeContract` with a way to make a fresh,
 * empty database and open connections to it (two, where replicas or
 * `keygate apply` beside a daemon would hold two).
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { StoreConflictError } from '../../src/errors.ts';
import { reconcile } from '../../src/reconcile/engine.ts';
import type { FeedPosition, NewKey, Store } from '../../src/store/types.ts';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { sha256, valid } from './config.ts';
import { tempDir } from './tmp.ts';
import { baseConfig } from './fixtures.ts';

const CHILD = fileURLToPath(new URL('../fixtures/store-child.ts', import.meta.url));

/** Runs test/fixtures/store-child.ts in its own process; resolves with what it printed (rejects if it failed). */
function storeChild(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`store-child ${args[0]} exited ${String(code)}: ${err}`))));
  });
}

export interface StoreFixture {
  /** Opens a connection to this fixture's database (the same database every time). */
  open(): Promise<Store>;
  /** The database's location, as `--db` takes it (for child processes). */
  location: string;
}

/** Makes a fresh, empty database for one test; removed when the test ends. */
export type MakeFixture = (t: TestContext, opts?: { tombstonesKept?: number }) => Promise<StoreFixture>;

const AT = '2026-06-01T00:00:00.000Z';
const ALL_USERS = 1;
const ADMIN = 2;

function key(id: number, name: string, extra: Partial<NewKey> = {}): NewKey {
  return {
    id,
    name,
    digest: sha256(`key material of ${name}`),
    prefix: 'kg_test',
    groupId: ALL_USERS,
    source: 'api',
    description: null,
    creator: null,
    expiresAt: null,
    disabled: false,
    allow: null,
    at: AT,
    updatedBy: null,
    ...extra,
  };
}

async function opened(t: TestContext, f: StoreFixture): Promise<Store> {
  const s = await f.open();
  t.after(() => s.close());
  return s;
}

const CONFIG = baseConfig();

export function storeContract(name: string, make: MakeFixture): void {
  describe(`store contract: ${name}`, () => {
    test('a new database holds the two built-in groups and no keys', async (t) => {
      const s = await opened(t, await make(t));
      const groups = await s.listGroups();
      assert.deepEqual(
        groups.map((g) => [g.id, g.name, g.builtin, g.description]),
        [
          [ADMIN, 'admin', true, 'Administrators'],
          [ALL_USERS, 'all-users', true, 'All Users'],
        ],
      );
      assert.equal(await s.countKeys(), 0);
      assert.equal(await s.latestRevision(), null);
      const snap = await s.snapshot();
      assert.equal(snap.keys.length, 0);
      assert.deepEqual(snap.position, await s.position());
    });

    test('a write commits all of its changes, and a write that throws leaves nothing behind', async (t) => {
      const s = await opened(t, await make(t));
      const p0 = await s.position();
      await s.write(async (tx) => {
        await tx.insertGroups([{ id: 500, name: 'ops', description: 'Ops', allow: [{ paths: ['/ops/**'] }], source: 'api', at: AT }]);
        await tx.insertKeys([key(1001, 'one', { groupId: 500 }), key(1002, 'two')]);
      });
      const p1 = await s.position();
      assert.equal(p1.epoch, p0.epoch);
      assert.ok(p1.seq > p0.seq, 'a write moves the feed');
      assert.equal((await s.getKey(1001))?.groupId, 500);
      assert.deepEqual((await s.getGroupByName('ops'))?.allow, [{ paths: ['/ops/**'] }]);

      await assert.rejects(
        s.write(async (tx) => {
          await tx.insertKeys([key(1003, 'three')]);
          await tx.deleteKeys([1001]);
          throw new Error('changed my mind');
        }),
        /changed my mind/,
      );
      assert.equal(await s.getKey(1003), null);
      assert.notEqual(await s.getKey(1001), null);
      assert.deepEqual(await s.position(), p1, 'a rolled-back write does not move the feed');
      const cs = await s.changesSince(p1);
      assert.deepEqual([cs.stale, cs.keys.length, cs.deletedKeys.length], [false, 0, 0]);
    });

    test('a second row with a taken name or key is refused with a conflict naming the field', async (t) => {
      const s = await opened(t, await make(t));
      await s.write(async (tx) => tx.insertKeys([key(1001, 'one')]));
      const conflict = (kind: string, field: string) => (err: unknown) =>
        err instanceof StoreConflictError && err.kind === kind && err.field === field && err.code === 'KG_ERR_STORE_CONFLICT';
      await assert.rejects(s.write(async (tx) => tx.insertKeys([{ ...key(1002, 'one'), digest: sha256('other material') }])), conflict('key', 'name'));
      await assert.rejects(s.write(async (tx) => tx.insertKeys([{ ...key(1002, 'two'), digest: sha256('key material of one') }])), conflict('key', 'digest'));
      await assert.rejects(s.write(async (tx) => tx.insertGroups([{ id: 600, name: 'admin', description: null, allow: null, source: 'api', at: AT }])), conflict('group', 'name'));
      assert.equal(await s.countKeys(), 1);
    });

    test('key material may change hands within one update (a rotation or a swap)', async (t) => {
      const s = await opened(t, await make(t));
      const a = key(1001, 'a');
      const b = key(1002, 'b');
      await s.write(async (tx) => tx.insertKeys([a, b]));
      await s.write(async (tx) => tx.updateKeys([{ ...a, digest: b.digest }, { ...b, digest: a.digest }]));
      assert.equal((await s.getKey(1001))?.digest, b.digest);
      assert.equal((await s.getKey(1002))?.digest, a.digest);
    });

    test('an update keeps created_at and last_used_at, and writes every other field', async (t) => {
      const s = await opened(t, await make(t));
      await s.write(async (tx) => tx.insertKeys([key(1001, 'one')]));
      await s.recordLastUsed(new Map([[1001, Date.parse('2026-06-02T00:00:00Z')]]));
      const later = '2026-07-01T00:00:00.000Z';
      await s.write(async (tx) =>
        tx.updateKeys([{ ...key(1001, 'renamed', { groupId: ADMIN, description: 'd', creator: 'c@example.com', expiresAt: '2027-01-01T00:00:00Z', disabled: true, allow: [{ paths: ['/x'] }], source: 'config' }), at: later, updatedBy: 'config' }]),
      );
      const k = await s.getKey(1001);
      assert.deepEqual(
        k && [k.name, k.groupId, k.description, k.creator, k.expiresAt, k.disabled, k.allow, k.source, k.createdAt, k.updatedAt, k.updatedBy, k.lastUsedAt],
        ['renamed', ADMIN, 'd', 'c@example.com', '2027-01-01T00:00:00Z', true, [{ paths: ['/x'] }], 'config', AT, later, 'config', '2026-06-02T00:00:00.000Z'],
      );
      assert.equal((await s.getKeyByName('renamed'))?.id, 1001);
      assert.equal(await s.getKeyByName('one'), null);
    });

    test('changesSince names what was created, changed and deleted after a position, and nothing before it', async (t) => {
      const s = await opened(t, await make(t));
      await s.write(async (tx) => {
        await tx.insertGroups([{ id: 500, name: 'ops', description: null, allow: null, source: 'api', at: AT }]);
        await tx.insertKeys([key(1001, 'one'), key(1002, 'two'), key(1003, 'three', { groupId: 500 })]);
      });
      const p = await s.position();
      assert.deepEqual(await s.changesSince(p), { position: p, stale: false, groups: [], keys: [], deletedGroups: [], deletedKeys: [] });
      await s.write(async (tx) => {
        await tx.updateKeys([{ ...key(1001, 'one'), disabled: true }]);
        await tx.deleteKeys([1002]);
        await tx.reassignKeys([{ id: 1003, groupId: ALL_USERS, allow: [{ paths: ['/ops/**'] }], disabled: false, at: AT, updatedBy: null }]);
        await tx.deleteGroups([500]);
        await tx.insertKeys([key(1004, 'four', { allow: [{ methods: ['GET'], paths: ['/a/*'] }] })]);
      });
      const cs = await s.changesSince(p);
      assert.equal(cs.stale, false);
      assert.deepEqual(cs.position, await s.position());
      assert.deepEqual(cs.keys.map((k) => [k.id, k.name, k.groupId, k.disabled, k.allow, k.source]).sort(), [
        [1001, 'one', ALL_USERS, true, null, 'api'],
        [1003, 'three', ALL_USERS, false, [{ paths: ['/ops/**'] }], 'api'],
        [1004, 'four', ALL_USERS, false, [{ methods: ['GET'], paths: ['/a/*'] }], 'api'],
      ]);
      assert.deepEqual(cs.deletedKeys, [1002]);
      assert.deepEqual(cs.deletedGroups, [500]);
      assert.deepEqual(cs.groups, []);
      assert.equal(cs.keys.find((k) => k.id === 1001)?.digest, sha256('key material of one'));
    });

    test('a row deleted and created again with the same id is a change, not a deletion', async (t) => {
      const s = await opened(t, await make(t));
      await s.write(async (tx) => tx.insertKeys([key(1001, 'one')]));
      const p = await s.position();
      await s.write(async (tx) => tx.deleteKeys([1001]));
      await s.write(async (tx) => tx.insertKeys([key(1001, 'one', { disabled: true })]));
      const cs = await s.changesSince(p);
      assert.deepEqual(cs.deletedKeys, []);
      assert.deepEqual(cs.keys.map((k) => [k.id, k.disabled]), [[1001, true]]);
    });

    test('a position from another database, or from the future, is stale: read a whole snapshot instead', async (t) => {
      const s = await opened(t, await make(t));
      const p = await s.position();
      const other: FeedPosition = { epoch: `${p.epoch}-restored`, seq: p.seq };
      assert.equal((await s.changesSince(other)).stale, true);
      assert.equal((await s.changesSince({ epoch: p.epoch, seq: p.seq + 5 })).stale, true);
      const again = await opened(t, await make(t));
      assert.notEqual((await again.position()).epoch, p.epoch, 'every database has an epoch of its own');
    });

    test('a reader further behind than the tombstones kept is told to read a whole snapshot', async (t) => {
      const f = await make(t, { tombstonesKept: 20 });
      const s = await opened(t, f);
      await s.write(async (tx) => tx.insertKeys([key(1001, 'one')]));
      const old = await s.position();
      await s.write(async (tx) => tx.deleteKeys([1001]));
      for (let i = 0; i < 40; i++) await s.write(async (tx) => tx.insertKeys([key(2000 + i, `k${i}`)]));
      assert.equal((await s.changesSince(old)).stale, true, 'the deletion of key 1001 could be missed');
      const recent = await s.position();
      await s.write(async (tx) => tx.deleteKeys([2000]));
      assert.deepEqual((await s.changesSince(recent)).deletedKeys, [2000]);
    });

    test('last-used times keep the latest use, never go back, and do not move the feed', async (t) => {
      const s = await opened(t, await make(t));
      await s.write(async (tx) => tx.insertKeys([key(1001, 'one'), key(1002, 'two')]));
      const p = await s.position();
      const t1 = Date.parse('2026-06-02T10:00:00Z');
      await s.recordLastUsed(new Map([[1001, t1], [1002, t1], [999_999, t1]]));
      await s.recordLastUsed(new Map([[1001, t1 - 60_000]]));
      await s.recordLastUsed(new Map([[1002, t1 + 60_000]]));
      assert.equal((await s.getKey(1001))?.lastUsedAt, '2026-06-02T10:00:00.000Z');
      assert.equal((await s.getKey(1002))?.lastUsedAt, '2026-06-02T10:01:00.000Z');
      assert.deepEqual(await s.position(), p);
    });

    test('revisions are numbered in order, and counts per group are kept', async (t) => {
      const s = await opened(t, await make(t));
      const r1 = await s.write(async (tx) => tx.recordRevision({ configSha256: 'a'.repeat(64), configFile: '/c.yml', at: AT, created: 3, updated: 0, deleted: 0 }));
      const r2 = await s.write(async (tx) => tx.recordRevision({ configSha256: 'b'.repeat(64), configFile: '/c.yml', at: AT, created: 0, updated: 1, deleted: 2 }));
      assert.equal(r2.number, r1.number + 1);
      assert.deepEqual(await s.latestRevision(), r2);
      await s.write(async (tx) => tx.insertKeys([key(1001, 'one'), key(1002, 'two'), key(1003, 'three', { groupId: ADMIN })]));
      assert.deepEqual([...(await s.memberCounts())].sort(), [
        [ALL_USERS, 2],
        [ADMIN, 1],
      ]);
    });

    test('a write made through one connection reaches another connection through the feed', async (t) => {
      const f = await make(t);
      const a = await opened(t, f);
      const b = await opened(t, f);
      const p = await b.position();
      await a.write(async (tx) => tx.insertKeys([key(1001, 'one')]));
      const cs = await b.changesSince(p);
      assert.deepEqual(cs.keys.map((k) => k.name), ['one']);
      assert.deepEqual(cs.position, await a.position());
    });

    test('three processes applying the same file at once: one revision, and the others find nothing to do', async (t) => {
      const f = await make(t);
      const file = tempDir(t).write('config.yml', CONFIG);
      const runs = await Promise.all([1, 2, 3].map(() => storeChild(['apply', f.location, file])));
      const changes = runs.map((r) => Number(/changes (\d+)/.exec(r)?.[1] ?? -1)).sort((x, y) => x - y);
      assert.deepEqual(changes, [0, 0, 3], runs.join('\n'));
      const s = await opened(t, f);
      assert.deepEqual((await s.listKeys()).map((k) => k.name), ['Admin API key', 'CI bot']);
      assert.equal((await s.latestRevision())?.number, 1);
    });

    test('writes from several processes at once all land, each at its own feed position', async (t) => {
      const f = await make(t);
      const s = await opened(t, f);
      const p = await s.position();
      await Promise.all(['a', 'b', 'c'].map((label, i) => storeChild(['insert', f.location, label, String(10_000 * (i + 1)), '15'])));
      assert.equal(await s.countKeys(), 45);
      const cs = await s.changesSince(p);
      assert.equal(cs.keys.length, 45);
      assert.equal(cs.position.seq - p.seq, 45, 'every write moved the feed once: none shared a position');
    });
  });
}
