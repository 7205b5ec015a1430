/**
 * Database helpers: real SQLite files, written through keygate's own reconcile
 * and read back with plain SQL.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import type { DesiredState } from '../../src/config/types.ts';
import { reconcile, type ReconcileOptions, type ReconcileResult } from '../../src/reconcile/engine.ts';
import { openSqliteStore } from '../../src/store/sqlite.ts';
import { sha256, valid } from './config.ts';

export type Row = Record<string, unknown>;

export interface Tables {
  groups: Row[];
  api_keys: Row[];
  revisions: Row[];
}

/** Runs keygate's reconcile of `desired` against the database file, then closes it. */
export async function reconcileInto(dbFile: string, desired: DesiredState, opts: ReconcileOptions): Promise<ReconcileResult> {
  const store = openSqliteStore(dbFile);
  try {
    return await reconcile(store, desired, opts);
  } finally {
    await store.close();
  }
}

/** Loads `text` (which must be valid) and applies it to the database file. */
export function applyText(
  dbFile: string,
  text: string,
  opts: { env?: Record<string, string>; allowDeletes?: boolean } = {},
): Promise<ReconcileResult> {
  const { desired } = valid(text, opts.env ?? {});
  return reconcileInto(dbFile, desired, { apply: true, ...(opts.allowDeletes === undefined ? {} : { allowDeletes: opts.allowDeletes }) });
}

/** Loads `text` (which must be valid) and plans it against the database file, writing nothing. */
export function planText(dbFile: string, text: string, env: Record<string, string> = {}): Promise<ReconcileResult> {
  const { desired } = valid(text, env);
  return reconcileInto(dbFile, desired, { apply: false });
}

/**
 * Opens an existing database for reading. Read-write on purpose: closing the
 * last read-write connection removes the -wal and -shm files, so reading
 * leaves the folder as it found it.
 */
function openExisting(dbFile: string): Database.Database {
  return new Database(dbFile, { fileMustExist: true });
}

/** Every row of every table, in a stable order. */
export function tables(dbFile: string): Tables {
  const db = openExisting(dbFile);
  try {
    return {
      groups: db.prepare('SELECT * FROM groups ORDER BY id').all() as Row[],
      api_keys: db.prepare('SELECT * FROM api_keys ORDER BY id').all() as Row[],
      revisions: db.prepare('SELECT * FROM revisions ORDER BY number').all() as Row[],
    };
  } finally {
    db.close();
  }
}

/** The api_keys row named `name`, with its group's name. */
export function keyRow(dbFile: string, name: string): Row & { group_name: string } {
  const db = openExisting(dbFile);
  try {
    const row = db
      .prepare('SELECT k.*, g.name AS group_name FROM api_keys k JOIN groups g ON g.id = k.group_id WHERE k.name = ?')
      .get(name) as (Row & { group_name: string }) | undefined;
    if (row === undefined) assert.fail(`no key named "${name}" in ${dbFile}`);
    return row;
  } finally {
    db.close();
  }
}

export function keyNames(dbFile: string): string[] {
  return tables(dbFile).api_keys.map((r) => String(r.name)).sort();
}

export interface ApiKeyInsert {
  name: string;
  key: string;
  /** Group name; default all-users. */
  group?: string;
  id?: number;
}

/**
 * Inserts a key as the management API would: a row with source 'api', written
 * with plain SQL into an existing database. Returns its id.
 */
export function insertApiKey(dbFile: string, k: ApiKeyInsert): number {
  const db = openExisting(dbFile);
  try {
    const groupId = db.prepare('SELECT id FROM groups WHERE name = ?').pluck().get(k.group ?? 'all-users') as number | undefined;
    assert.ok(groupId !== undefined, `no group "${k.group ?? 'all-users'}"`);
    const id = k.id ?? 900_000 + Math.floor(Math.random() * 90_000);
    const now = new Date().toISOString();
    db.prepare(
      `INSERT INTO api_keys (id, name, digest, prefix, group_id, source, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, 'api', ?, ?)`,
    ).run(id, k.name, sha256(k.key), k.key.slice(0, 7), groupId, now, now);
    return id;
  } finally {
    db.close();
  }
}

/** The bytes of the database and of its -wal and -shm files, those that exist. */
export function databaseFiles(dbFile: string): Array<{ file: string; bytes: Buffer }> {
  return [dbFile, `${dbFile}-wal`, `${dbFile}-shm`]
    .filter((f) => existsSync(f))
    .map((file) => ({ file, bytes: readFileSync(file) }));
}
