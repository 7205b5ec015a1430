/**
 * The SQLite store against the store contract, on real database files in a
 * temp folder, plus what is SQLite's own: the file's mode, migrations of an
 * older file, read-only opening.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { openStore } from '../src/store/open.ts';
import { openSqliteStore, SCHEMA_VERSION } from '../src/store/sqlite.ts';
import { storeContract } from './helpers/store-contract.ts';
import { tempDir } from './helpers/tmp.ts';

storeContract('SQLite', async (t, opts) => {
  const file = tempDir(t).path('keygate.db');
  return {
    location: file,
    open: async () => openSqliteStore(file, opts?.tombstonesKept === undefined ? {} : { tombstonesKept: opts.tombstonesKept }),
  };
});

test('a database made by an older keygate (schema 1) is migrated in place, keeping its rows, and followed from then on', async (t) => {
  const file = tempDir(t).path('old.db');
  const old = new Database(file);
  old.exec(`
    CREATE TABLE groups (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT, allow TEXT,
      source TEXT NOT NULL CHECK (source IN ('config', 'api')), builtin INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, updated_at TEXT NOT NULL) STRICT;
    CREATE TABLE api_keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, digest TEXT NOT NULL UNIQUE CHECK (length(digest) = 64), prefix TEXT,
      group_id INTEGER NOT NULL REFERENCES groups (id), source TEXT NOT NULL CHECK (source IN ('config', 'api')), description TEXT, creator TEXT,
      expires_at TEXT, disabled INTEGER NOT NULL DEFAULT 0, allow TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, updated_by TEXT, last_used_at TEXT) STRICT;
    CREATE INDEX api_keys_group ON api_keys (group_id);
    CREATE TABLE revisions (number INTEGER PRIMARY KEY AUTOINCREMENT, config_sha256 TEXT NOT NULL, config_file TEXT NOT NULL, applied_at TEXT NOT NULL,
      created INTEGER NOT NULL, updated INTEGER NOT NULL, deleted INTEGER NOT NULL) STRICT;
    INSERT INTO groups VALUES (1, 'all-users', 'All Users', NULL, 'config', 1, 'x', 'x'), (2, 'admin', 'Administrators', NULL, 'config', 1, 'x', 'x');
    INSERT INTO api_keys (id, name, digest, prefix, group_id, source, created_at, updated_at)
      VALUES (5000, 'kept', '${'d'.repeat(64)}', 'kg_kept', 2, 'api', 'x', 'x');
    PRAGMA user_version = 1;
  `);
  old.close();
  const s = openSqliteStore(file);
  t.after(() => s.close());
  assert.equal((await s.getKey(5000))?.name, 'kept');
  const snap = await s.snapshot();
  assert.deepEqual(snap.keys.map((k) => k.name), ['kept']);
  await s.write(async (tx) => tx.deleteKeys([5000]));
  assert.deepEqual((await s.changesSince(snap.position)).deletedKeys, [5000]);
  const check = new Database(file, { readonly: true });
  assert.equal(check.pragma('user_version', { simple: true }), SCHEMA_VERSION);
  check.close();
});

test('the database file is created with mode 0600 whatever the umask', async (t) => {
  const file = tempDir(t).path('sub/keygate.db');
  const previous = process.umask(0o000);
  try {
    await openSqliteStore(file).close();
  } finally {
    process.umask(previous);
  }
  assert.equal(statSync(file).mode & 0o777, 0o600);
});

test('a read-only open refuses a missing file, and never creates one', async (t) => {
  const file = tempDir(t).path('missing.db');
  await assert.rejects(openStore(file, { readOnly: true }), { code: 'KG_ERR_DATABASE', message: /no database \(run `keygate apply` first\)/ });
  assert.throws(() => statSync(file), { code: 'ENOENT' });
  const planned = await openStore(file, { planOnly: true });
  assert.equal(await planned.countKeys(), 0);
  await planned.close();
  assert.throws(() => statSync(file), { code: 'ENOENT' }, 'planning created the database');
});

test('processes opening the same new database file at the same moment migrate it once, and all of them open it', async (t) => {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const tmp = tempDir(t);
  const file = tmp.path('raced.db');
  const go = tmp.path('go');
  const child = fileURLToPath(new URL('./fixtures/store-child.ts', import.meta.url));
  let ready = 0;
  let allReady!: () => void;
  const readyAll = new Promise<void>((resolve) => (allReady = resolve));
  const runs = Array.from(
    { length: 6 },
    (_, i) =>
      new Promise<{ code: number | null; err: string }>((resolve) => {
        const c = spawn(process.execPath, ['--import', 'tsx', child, 'insert', file, `racer${i}`, String(50_000 + i * 10), '1'], {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, STORE_CHILD_GO: go },
        });
        let err = '';
        c.stdout.on('data', (d: Buffer) => {
          if (d.toString().includes('ready') && ++ready === 6) allReady();
        });
        c.stderr.on('data', (d: Buffer) => (err += d.toString()));
        c.on('exit', (code) => resolve({ code, err }));
      }),
  );
  // Every child is loaded and waiting: they all open the new file at once.
  await readyAll;
  tmp.write('go', '');
  const results = await Promise.all(runs);
  assert.deepEqual(results.filter((r) => r.code !== 0).map((r) => r.err.split('\n').find((l) => /^\w*Error\b/.test(l)) ?? r.err.slice(0, 400)), []);
  const s = openSqliteStore(file);
  t.after(() => s.close());
  assert.equal(await s.countKeys(), 6);
});
