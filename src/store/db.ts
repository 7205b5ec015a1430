import { closeSync, chmodSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { BUILTIN_GROUPS } from '../config/types.ts';
import { KeygateError } from '../errors.ts';

export type DB = Database.Database;

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
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export interface OpenOptions {
  readOnly?: boolean;
}

/** Opens (creating with mode 0600 when new) and migrates the database. */
export function openDatabase(file: string, opts: OpenOptions = {}): DB {
  let db: DB;
  try {
    if (opts.readOnly !== true && file !== ':memory:') {
      mkdirSync(path.dirname(file), { recursive: true });
      // Create the file ourselves so that it is never world-readable, whatever the umask.
      closeSync(openSync(file, 'a', 0o600));
      chmodSync(file, 0o600);
    }
    db = new Database(file, { readonly: opts.readOnly === true, fileMustExist: opts.readOnly === true });
    db.pragma('busy_timeout = 5000');
    if (opts.readOnly !== true && file !== ':memory:') {
      db.pragma('journal_mode = WAL');
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
  if (version < SCHEMA_VERSION && opts.readOnly !== true) {
    const migrate = db.transaction(() => {
      for (let v = version; v < SCHEMA_VERSION; v++) (MIGRATIONS[v] as (db: DB) => void)(db);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    });
    migrate.immediate();
  }
  return db;
}
