/**
 * The SQLite store: the embedded default (`npm start` needs no server). One
 * file, WAL journal, created with mode 0600. better-sqlite3 is synchronous;
 * the methods are async only to share the Store interface, and are called
 * from the control plane's thread, never from the serving thread.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, chmodSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { BUILTIN_GROUPS } from '../config/types.ts';
import { KeygateError, StoreConflictError } from '../errors.ts';
import {
  groupFromRow,
  json,
  keyFromRow,
  revisionFromRow,
  snapshotGroup,
  snapshotKey,
  SNAPSHOT_GROUP_COLUMNS,
  SNAPSHOT_KEY_COLUMNS,
  type RawGroup,
  type RawKey,
  type RawRevision,
  type RawSnapshotGroup,
} from './rows.ts';
import type {
  ActualState,
  ChangeSet,
  FeedPosition,
  GroupRow,
  GroupUpdate,
  KeyReassignment,
  KeyRow,
  KeyUpdate,
  NewGroup,
  NewKey,
  NewRevision,
  RevisionRow,
  Store,
  StoreInfo,
  StoreReads,
  StoreSnapshot,
  StoreTx,
} from './types.ts';

type DB = Database.Database;

/** Feed positions whose tombstones are kept; a reader further behind reads a whole snapshot. */
export const TOMBSTONE_POSITIONS_KEPT = 10_000;

/** Migrations, applied in order; `PRAGMA user_version` records how many ran. */
const MIGRATIONS: ReadonlyArray<(db: DB) => void> = [
  (db) => {
    db.exec(`
      CREATE TABLE groups (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        description TEXT,
        allow       TEXT,
        source      TEXT NOT NULL CHECK (source IN ('config', 'api')),
        builtin     INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
      ) STRICT;
      CREATE TABLE api_keys (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        digest       TEXT NOT NULL UNIQUE CHECK (length(digest) = 64),
        prefix       TEXT,
        group_id     INTEGER NOT NULL REFERENCES groups (id),
        source       TEXT NOT NULL CHECK (source IN ('config', 'api')),
        description  TEXT,
        creator      TEXT,
        expires_at   TEXT,
        disabled     INTEGER NOT NULL DEFAULT 0,
        allow        TEXT,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        updated_by   TEXT,
        last_used_at TEXT
      ) STRICT;
      CREATE INDEX api_keys_group ON api_keys (group_id);
      CREATE TABLE revisions (
        number        INTEGER PRIMARY KEY AUTOINCREMENT,
        config_sha256 TEXT NOT NULL,
        config_file   TEXT NOT NULL,
        applied_at    TEXT NOT NULL,
        created       INTEGER NOT NULL,
        updated       INTEGER NOT NULL,
        deleted       INTEGER NOT NULL
      ) STRICT;
    `);
    const now = new Date().toISOString();
    const insert = db.prepare(
      `INSERT INTO groups (id, name, description, allow, source, builtin, created_at, updated_at)
       VALUES (?, ?, ?, NULL, 'config', 1, ?, ?)`,
    );
    for (const [name, g] of Object.entries(BUILTIN_GROUPS)) insert.run(g.id, name, g.description, now, now);
  },
  // 2: the change feed. Rows carry the position of the write that last changed them;
  // deletions leave tombstones; `feed` holds the position and the database's epoch.
  (db) => {
    db.exec(`
      ALTER TABLE groups ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE api_keys ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
      CREATE INDEX groups_version ON groups (version);
      CREATE INDEX api_keys_version ON api_keys (version);
      CREATE TABLE tombstones (
        kind    TEXT NOT NULL CHECK (kind IN ('group', 'key')),
        id      INTEGER NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (kind, id)
      ) STRICT;
      CREATE INDEX tombstones_version ON tombstones (version);
      CREATE TABLE feed (
        one     INTEGER PRIMARY KEY CHECK (one = 1),
        epoch   TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        horizon INTEGER NOT NULL
      ) STRICT;
    `);
    db.prepare('INSERT INTO feed (one, epoch, seq, horizon) VALUES (1, ?, 1, 0)').run(randomUUID());
    db.exec('UPDATE groups SET version = 1; UPDATE api_keys SET version = 1;');
  },
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export interface SqliteOptions {
  /** Open an existing file without writing to it (`keys list`). */
  readOnly?: boolean;
  /** Feed positions whose tombstones are kept (default TOMBSTONE_POSITIONS_KEPT; tests use fewer). */
  tombstonesKept?: number;
}

const SNAPSHOT_GROUP = `SELECT ${SNAPSHOT_GROUP_COLUMNS} FROM groups`;
const SNAPSHOT_KEY = `SELECT ${SNAPSHOT_KEY_COLUMNS} FROM api_keys`;

/** A SQLite constraint failure as the store's own error; anything else unchanged. */
function translate(err: unknown): unknown {
  const e = err as { code?: string; message?: string };
  if (e.code === 'SQLITE_CONSTRAINT_UNIQUE' || e.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
    const m = e.message ?? '';
    if (m.includes('api_keys.digest')) return new StoreConflictError('key', 'digest', { cause: err });
    if (m.includes('api_keys.name') || m.includes('api_keys.id')) return new StoreConflictError('key', 'name', { cause: err });
    if (m.includes('groups.name') || m.includes('groups.id')) return new StoreConflictError('group', 'name', { cause: err });
  }
  if (e.code === 'SQLITE_BUSY' || e.code === 'SQLITE_LOCKED') {
    return new KeygateError('KG_ERR_STORE_UNAVAILABLE', 'the database is locked by another writer; try again', { cause: err });
  }
  return err;
}

/**
 * Runs `f` again while SQLite answers SQLITE_BUSY, for up to BUSY_RETRY_MS. Switching a new file
 * to WAL needs the file to itself, and SQLite returns BUSY at once, without its busy handler,
 * when waiting could deadlock: several processes opening the same new file at the same moment
 * (replicas starting together) would otherwise fail at random.
 */
function busyRetry<T>(f: () => T): T {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let waited = 0; ; ) {
    try {
      return f();
    } catch (err) {
      if (!String((err as { code?: string }).code).startsWith('SQLITE_BUSY') || waited >= BUSY_RETRY_MS) throw err;
      const ms = 5 + Math.floor(Math.random() * 20);
      Atomics.wait(pause, 0, 0, ms);
      waited += ms;
    }
  }
}
const BUSY_RETRY_MS = 5_000;

/** Opens (creating with mode 0600 when new) and migrates a SQLite database file. */
export function openSqliteStore(file: string, opts: SqliteOptions = {}): SqliteStore {
  const readOnly = opts.readOnly === true;
  let db: DB;
  try {
    if (!readOnly && file !== ':memory:') {
      mkdirSync(path.dirname(file), { recursive: true });
      // Create the file ourselves so that it is never world-readable, whatever the umask.
      closeSync(openSync(file, 'a', 0o600));
      chmodSync(file, 0o600);
    }
    db = new Database(file, { readonly: readOnly, fileMustExist: readOnly });
    db.pragma('busy_timeout = 5000');
    if (!readOnly && file !== ':memory:') {
      const wal = db;
      busyRetry(() => wal.pragma('journal_mode = WAL'));
      db.pragma('synchronous = NORMAL');
    }
    db.pragma('foreign_keys = ON');
  } catch (err) {
    throw new KeygateError('KG_ERR_DATABASE', `${file}: cannot open database: ${(err as Error).message}`, { cause: err });
  }
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    db.close();
    throw new KeygateError(
      'KG_ERR_DATABASE',
      `${file}: database schema version ${version} is newer than this keygate understands (${SCHEMA_VERSION}); upgrade keygate`,
    );
  }
  if (version < SCHEMA_VERSION) {
    if (readOnly) {
      db.close();
      throw new KeygateError('KG_ERR_DATABASE', `${file}: database schema version ${version} is older than this keygate's; run \`keygate apply\` to upgrade it`);
    }
    try {
      const migrate = db.transaction(() => {
        // Read again under the write lock: another process opening the same new file at the same
        // moment may have migrated it between our first look and now.
        const now = db.pragma('user_version', { simple: true }) as number;
        for (let v = now; v < SCHEMA_VERSION; v++) (MIGRATIONS[v] as (db: DB) => void)(db);
        if (now < SCHEMA_VERSION) db.pragma(`user_version = ${SCHEMA_VERSION}`);
      });
      migrate.immediate();
    } catch (err) {
      db.close();
      throw new KeygateError('KG_ERR_DATABASE', `${file}: cannot migrate database: ${(err as Error).message}`, { cause: err });
    }
  }
  return new SqliteStore(db, file, opts.tombstonesKept ?? TOMBSTONE_POSITIONS_KEPT);
}

/** Reads shared by the store and its transactions (the same connection). */
class SqliteReads implements StoreReads {
  constructor(
    protected readonly db: DB,
    /** Prepared statements, shared by the store and its transactions. */
    private readonly statements: Map<string, Database.Statement>,
  ) {}

  protected stmt(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (s === undefined) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  async readActual(): Promise<ActualState> {
    return { groups: await this.listGroups(), keys: await this.listKeys() };
  }

  async listGroups(): Promise<GroupRow[]> {
    return (this.stmt('SELECT * FROM groups ORDER BY name').all() as RawGroup[]).map(groupFromRow);
  }

  async listKeys(): Promise<KeyRow[]> {
    return (this.stmt('SELECT * FROM api_keys ORDER BY name').all() as RawKey[]).map(keyFromRow);
  }

  async getGroup(id: number): Promise<GroupRow | null> {
    const r = this.stmt('SELECT * FROM groups WHERE id = ?').get(id) as RawGroup | undefined;
    return r === undefined ? null : groupFromRow(r);
  }

  async getGroupByName(name: string): Promise<GroupRow | null> {
    const r = this.stmt('SELECT * FROM groups WHERE name = ?').get(name) as RawGroup | undefined;
    return r === undefined ? null : groupFromRow(r);
  }

  async getKey(id: number): Promise<KeyRow | null> {
    const r = this.stmt('SELECT * FROM api_keys WHERE id = ?').get(id) as RawKey | undefined;
    return r === undefined ? null : keyFromRow(r);
  }

  async getKeyByName(name: string): Promise<KeyRow | null> {
    const r = this.stmt('SELECT * FROM api_keys WHERE name = ?').get(name) as RawKey | undefined;
    return r === undefined ? null : keyFromRow(r);
  }

  async countKeys(): Promise<number> {
    return this.stmt('SELECT count(*) FROM api_keys').pluck().get() as number;
  }

  async memberCounts(): Promise<Map<number, number>> {
    const rows = this.stmt('SELECT group_id AS id, count(*) AS n FROM api_keys GROUP BY group_id').all() as Array<{ id: number; n: number }>;
    return new Map(rows.map((r) => [r.id, r.n]));
  }

  async latestRevision(): Promise<RevisionRow | null> {
    const r = this.stmt('SELECT * FROM revisions ORDER BY number DESC LIMIT 1').get() as RawRevision | undefined;
    return r === undefined ? null : revisionFromRow(r);
  }
}

class SqliteTx extends SqliteReads implements StoreTx {
  /** The feed position this transaction writes at, taken on its first write. */
  private seq: number | null = null;
  open = true;

  private version(): number {
    if (!this.open) throw new Error('store transaction used after it ended');
    this.seq ??= this.stmt('UPDATE feed SET seq = seq + 1 RETURNING seq').pluck().get() as number;
    return this.seq;
  }

  private run(fn: () => void): Promise<void> {
    try {
      fn();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(translate(err));
    }
  }

  insertGroups(rows: readonly NewGroup[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    return this.run(() => {
      const v = this.version();
      const insert = this.stmt(
        `INSERT INTO groups (id, name, description, allow, source, builtin, created_at, updated_at, version)
         VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)`,
      );
      for (const g of rows) insert.run(g.id, g.name, g.description, json(g.allow), g.source, g.at, g.at, v);
    });
  }

  updateGroups(rows: readonly GroupUpdate[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    return this.run(() => {
      const v = this.version();
      const update = this.stmt(
        'UPDATE groups SET name = ?, description = ?, allow = ?, source = ?, updated_at = ?, version = ? WHERE id = ?',
      );
      for (const g of rows) update.run(g.name, g.description, json(g.allow), g.source, g.at, v, g.id);
    });
  }

  deleteGroups(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return this.run(() => {
      const v = this.version();
      const del = this.stmt('DELETE FROM groups WHERE id = ?');
      const tomb = this.stmt(`INSERT OR REPLACE INTO tombstones (kind, id, version) VALUES ('group', ?, ?)`);
      for (const id of ids) {
        del.run(id);
        tomb.run(id, v);
      }
    });
  }

  insertKeys(rows: readonly NewKey[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    return this.run(() => {
      const v = this.version();
      const insert = this.stmt(
        `INSERT INTO api_keys (id, name, digest, prefix, group_id, source, description, creator, expires_at, disabled, allow,
                               created_at, updated_at, updated_by, version)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      for (const k of rows) {
        insert.run(k.id, k.name, k.digest, k.prefix, k.groupId, k.source, k.description, k.creator, k.expiresAt, k.disabled ? 1 : 0, json(k.allow), k.at, k.at, k.updatedBy, v);
      }
    });
  }

  updateKeys(rows: readonly KeyUpdate[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    return this.run(() => {
      const v = this.version();
      // Key material may move between rows in one change: park the digests that change on
      // unique placeholders first ('x' is not a hex digit), so that UNIQUE(digest) holds throughout.
      const park = this.stmt(`UPDATE api_keys SET digest = 'x' || printf('%063d', id) WHERE id = ? AND digest <> ?`);
      for (const k of rows) park.run(k.id, k.digest);
      const update = this.stmt(
        `UPDATE api_keys SET name = ?, digest = ?, prefix = ?, group_id = ?, source = ?, description = ?, creator = ?,
                expires_at = ?, disabled = ?, allow = ?, updated_at = ?, updated_by = ?, version = ?
         WHERE id = ?`,
      );
      for (const k of rows) {
        update.run(k.name, k.digest, k.prefix, k.groupId, k.source, k.description, k.creator, k.expiresAt, k.disabled ? 1 : 0, json(k.allow), k.at, k.updatedBy, v, k.id);
      }
    });
  }

  reassignKeys(rows: readonly KeyReassignment[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    return this.run(() => {
      const v = this.version();
      const update = this.stmt(
        'UPDATE api_keys SET group_id = ?, allow = ?, disabled = ?, updated_at = ?, updated_by = ?, version = ? WHERE id = ?',
      );
      for (const r of rows) update.run(r.groupId, json(r.allow), r.disabled ? 1 : 0, r.at, r.updatedBy, v, r.id);
    });
  }

  deleteKeys(ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    return this.run(() => {
      const v = this.version();
      const del = this.stmt('DELETE FROM api_keys WHERE id = ?');
      const tomb = this.stmt(`INSERT OR REPLACE INTO tombstones (kind, id, version) VALUES ('key', ?, ?)`);
      for (const id of ids) {
        del.run(id);
        tomb.run(id, v);
      }
    });
  }

  async recordRevision(r: NewRevision): Promise<RevisionRow> {
    this.version();
    const row = this.stmt(
      `INSERT INTO revisions (config_sha256, config_file, applied_at, created, updated, deleted)
       VALUES (?, ?, ?, ?, ?, ?) RETURNING *`,
    ).get(r.configSha256, r.configFile, r.at, r.created, r.updated, r.deleted) as RawRevision;
    return revisionFromRow(row);
  }
}

export class SqliteStore extends SqliteReads implements Store {
  readonly info: StoreInfo;
  /** Writes queue here: one transaction at a time on this connection. */
  private tail: Promise<unknown> = Promise.resolve();
  private readonly cache: Map<string, Database.Statement>;

  constructor(
    db: DB,
    readonly file: string,
    private readonly tombstonesKept: number,
    cache = new Map<string, Database.Statement>(),
  ) {
    super(db, cache);
    this.cache = cache;
    this.info = { kind: 'sqlite', location: file };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  write<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.serial(async () => {
      try {
        this.db.exec('BEGIN IMMEDIATE');
      } catch (err) {
        throw translate(err);
      }
      const tx = new SqliteTx(this.db, this.cache);
      try {
        const value = await fn(tx);
        tx.open = false;
        this.db.exec('COMMIT');
        this.prune();
        return value;
      } catch (err) {
        tx.open = false;
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw translate(err);
      }
    });
  }

  /** Drops tombstones older than the positions kept, and moves the horizon past them. */
  private prune(): void {
    const f = this.stmt('SELECT seq, horizon FROM feed').get() as { seq: number; horizon: number };
    const horizon = f.seq - this.tombstonesKept;
    if (horizon <= f.horizon + Math.ceil(this.tombstonesKept / 10)) return;
    this.db.transaction(() => {
      this.stmt('DELETE FROM tombstones WHERE version <= ?').run(horizon);
      this.stmt('UPDATE feed SET horizon = ?').run(horizon);
    })();
  }

  private feedRow(): { epoch: string; seq: number; horizon: number } {
    return this.stmt('SELECT epoch, seq, horizon FROM feed').get() as { epoch: string; seq: number; horizon: number };
  }

  async position(): Promise<FeedPosition> {
    const f = this.feedRow();
    return { epoch: f.epoch, seq: f.seq };
  }

  async snapshot(): Promise<StoreSnapshot> {
    return this.db.transaction(() => {
      const f = this.feedRow();
      return {
        position: { epoch: f.epoch, seq: f.seq },
        groups: (this.stmt(SNAPSHOT_GROUP).all() as RawSnapshotGroup[]).map(snapshotGroup),
        keys: (this.stmt(SNAPSHOT_KEY).all() as RawKey[]).map(snapshotKey),
      };
    })();
  }

  async changesSince(from: FeedPosition): Promise<ChangeSet> {
    return this.db.transaction((): ChangeSet => {
      const f = this.feedRow();
      const position = { epoch: f.epoch, seq: f.seq };
      const empty = { groups: [], keys: [], deletedGroups: [], deletedKeys: [] };
      if (from.epoch !== f.epoch || from.seq > f.seq || from.seq < f.horizon) return { position, stale: true, ...empty };
      if (from.seq === f.seq) return { position, stale: false, ...empty };
      const deleted = (kind: 'group' | 'key', table: string): number[] =>
        this.stmt(
          `SELECT t.id FROM tombstones t WHERE t.kind = '${kind}' AND t.version > ? AND NOT EXISTS (SELECT 1 FROM ${table} r WHERE r.id = t.id)`,
        )
          .pluck()
          .all(from.seq) as number[];
      return {
        position,
        stale: false,
        groups: (this.stmt(`${SNAPSHOT_GROUP} WHERE version > ?`).all(from.seq) as RawSnapshotGroup[]).map(snapshotGroup),
        keys: (this.stmt(`${SNAPSHOT_KEY} WHERE version > ?`).all(from.seq) as RawKey[]).map(snapshotKey),
        deletedGroups: deleted('group', 'groups'),
        deletedKeys: deleted('key', 'api_keys'),
      };
    })();
  }

  recordLastUsed(batch: ReadonlyMap<number, number>): Promise<void> {
    if (batch.size === 0) return Promise.resolve();
    return this.serial(async () => {
      const update = this.stmt('UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)');
      try {
        this.db
          .transaction(() => {
            for (const [id, ms] of batch) {
              const at = new Date(ms).toISOString();
              update.run(at, id, at);
            }
          })
          .immediate();
      } catch (err) {
        throw translate(err);
      }
    });
  }

  /** SQLite has no notifications: the control plane's poll of `position()` sees other writers. */
  watch(): { close(): void } {
    return { close: () => undefined };
  }

  async close(): Promise<void> {
    await this.tail;
    this.cache.clear();
    if (this.db.open) this.db.close();
  }
}
