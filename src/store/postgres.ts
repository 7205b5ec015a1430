/**
 * The PostgreSQL store: for fleets, several replicas sharing one database.
 * Same data model as the SQLite store (sqlite.ts), in a schema of its own
 * (`keygate`), so that it can live in a database that holds other things.
 *
 * - Migrations are numbered, recorded in `keygate.migrations`, and run under a
 *   session advisory lock: replicas starting together migrate once.
 * - `write(fn)` is one transaction under a transaction advisory lock (one
 *   writer at a time across the fleet). Its first write bumps the one feed
 *   row's sequence (UPDATE … RETURNING), so that commit order is sequence
 *   order, which `changesSince` relies on; a transaction that wrote NOTIFYs
 *   the feed channel, delivered to listeners when it commits.
 * - Batches are written with one statement per slice of rows (unnest arrays),
 *   never one round trip per row.
 * - Unique violations become StoreConflictError by constraint name; lost or
 *   refused connections, timeouts and lock waits become
 *   KG_ERR_STORE_UNAVAILABLE with a message naming host:port, never the
 *   password. A client's 'error' event is always listened to: a connection
 *   that drops never takes the process down; the pool makes a new one when
 *   the next query needs it.
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import pg from 'pg';
import { BUILTIN_GROUPS } from '../config/types.ts';
import { KeygateError, StoreConflictError } from '../errors.ts';
import { displayLocation, SECRET_URL_PARAMETER, type OpenStoreOptions } from './open.ts';
import { openSqliteStore, TOMBSTONE_POSITIONS_KEPT } from './sqlite.ts';
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

/** Advisory lock keys: (KEYGATE, n). Advisory locks are per database. */
const LOCK_SPACE = 0x6b677465; // 'kgte'
const MIGRATION_LOCK = 1;
const WRITE_LOCK = 2;
/** The channel every committed write notifies. */
export const FEED_CHANNEL = 'keygate_feed';
/** Rows per statement in batch writes (a few MB of parameters at most). */
const SLICE_ROWS = 5_000;
/** Longest wait for a connection to open. */
const CONNECT_TIMEOUT_MS = 5_000;
/** Longest wait for any one statement's answer (a connection that went silent counts as lost). */
const QUERY_TIMEOUT_MS = 60_000;
/** Longest wait for the feed position: the control plane polls it every second to see writes and health. */
const POSITION_TIMEOUT_MS = 5_000;
/** Longest a writer waits for another replica's transaction to end. */
const LOCK_TIMEOUT = '30s';
/** A transaction left idle this long (its process stopped, its network cut) is ended by the server, freeing the write lock. */
const IDLE_IN_TX_TIMEOUT = '60s';
/** The feed listener reconnects after this, doubling up to LISTEN_RETRY_MAX_MS. */
const LISTEN_RETRY_MS = 250;
const LISTEN_RETRY_MAX_MS = 5_000;

export interface PostgresOptions extends OpenStoreOptions {
  /** Feed positions whose tombstones are kept (default TOMBSTONE_POSITIONS_KEPT; tests use fewer). */
  tombstonesKept?: number;
}

/** Migrations, applied in order, each in its own transaction; `keygate.migrations` records those that ran. */
const MIGRATIONS: ReadonlyArray<(epoch: string, now: string) => string> = [
  (epoch, now) => `
    CREATE TABLE keygate.groups (
      id          bigint NOT NULL CONSTRAINT groups_pkey PRIMARY KEY,
      name        text NOT NULL CONSTRAINT groups_name_unique UNIQUE,
      description text,
      allow       text,
      source      text NOT NULL CHECK (source IN ('config', 'api')),
      builtin     boolean NOT NULL DEFAULT false,
      created_at  text NOT NULL,
      updated_at  text NOT NULL,
      version     bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX groups_version ON keygate.groups (version);
    CREATE TABLE keygate.api_keys (
      id           bigint NOT NULL CONSTRAINT api_keys_pkey PRIMARY KEY,
      name         text NOT NULL CONSTRAINT api_keys_name_unique UNIQUE,
      digest       text NOT NULL CONSTRAINT api_keys_digest_unique UNIQUE CHECK (length(digest) = 64),
      prefix       text,
      group_id     bigint NOT NULL CONSTRAINT api_keys_group_fkey REFERENCES keygate.groups (id),
      source       text NOT NULL CHECK (source IN ('config', 'api')),
      description  text,
      creator      text,
      expires_at   text,
      disabled     boolean NOT NULL DEFAULT false,
      allow        text,
      created_at   text NOT NULL,
      updated_at   text NOT NULL,
      updated_by   text,
      last_used_at text,
      version      bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX api_keys_group ON keygate.api_keys (group_id);
    CREATE INDEX api_keys_version ON keygate.api_keys (version);
    CREATE TABLE keygate.tombstones (
      kind    text NOT NULL CHECK (kind IN ('group', 'key')),
      id      bigint NOT NULL,
      version bigint NOT NULL,
      PRIMARY KEY (kind, id)
    );
    CREATE INDEX tombstones_version ON keygate.tombstones (version);
    CREATE TABLE keygate.feed (
      one     integer PRIMARY KEY CHECK (one = 1),
      epoch   text NOT NULL,
      seq     bigint NOT NULL,
      horizon bigint NOT NULL
    );
    CREATE TABLE keygate.revisions (
      number        bigint PRIMARY KEY,
      config_sha256 text NOT NULL,
      config_file   text NOT NULL,
      applied_at    text NOT NULL,
      created       integer NOT NULL,
      updated       integer NOT NULL,
      deleted       integer NOT NULL
    );
    INSERT INTO keygate.feed (one, epoch, seq, horizon) VALUES (1, ${literal(epoch)}, 1, 0);
    INSERT INTO keygate.groups (id, name, description, allow, source, builtin, created_at, updated_at, version) VALUES
      ${Object.entries(BUILTIN_GROUPS)
        .map(([name, g]) => `(${g.id}, ${literal(name)}, ${literal(g.description)}, NULL, 'config', true, ${literal(now)}, ${literal(now)}, 1)`)
        .join(',\n      ')};
  `,
];

export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

function literal(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

// A URL without a user name connects as the OS user, as libpq (psql) does; pg would take $USER, which a
// service's environment may not have.
if (pg.defaults.user === undefined || pg.defaults.user === '') {
  try {
    pg.defaults.user = os.userInfo().username;
  } catch {
    // No passwd entry: pg's own default stands.
  }
}

/** bigint (int8) as a number: keygate's ids are 48-bit and feed positions far smaller, so they are exact. */
const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/** Where a URL points, safe to show: host:port (the socket folder for a Unix socket). */
export function endpointOf(url: string): string {
  try {
    const u = new URL(url);
    const host = u.searchParams.get('host') ?? (u.hostname === '' ? 'localhost' : decodeURIComponent(u.hostname));
    const port = u.searchParams.get('port') ?? (u.port === '' ? '5432' : u.port);
    return `${host}:${port}`;
  } catch {
    return '(unparsable URL)';
  }
}

function databaseOf(url: string): string {
  try {
    const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
    return name === '' ? '(default)' : name;
  } catch {
    return '(unparsable URL)';
  }
}

/** Socket and protocol failures: the server is unreachable, or the connection to it was lost. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ENOENT']);
/** Server answers that mean "not now": shutting down, starting, too many connections, a lock wait or deadlock given up. */
const TRANSIENT_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300', '53400', '55P03', '40P01', '40001', '25P03', '57014']);
const NETWORK_MESSAGES = /connection terminated|terminating connection|not queryable|timeout|timed out|connection ended|server closed the connection|socket|ECONN/i;

interface PgErrorish {
  code?: string;
  message?: string;
  constraint?: string;
  severity?: string;
}

/** True when an error means the connection it came from cannot be used again. */
function isConnectionLoss(err: unknown): boolean {
  const e = err as PgErrorish;
  if (typeof e?.code === 'string' && (NETWORK_CODES.has(e.code) || e.code.startsWith('08') || e.code === '57P01' || e.code === '57P02')) return true;
  return e?.severity === undefined && NETWORK_MESSAGES.test(e?.message ?? '');
}

class PgTranslator {
  constructor(
    private readonly url: string,
    private readonly secrets: string[],
  ) {}

  get endpoint(): string {
    return endpointOf(this.url);
  }

  /** A message with every secret of the URL blanked out (server messages never carry it; this is belt and braces). */
  scrub(text: string): string {
    let out = text;
    for (const s of this.secrets) if (s.length > 0) out = out.split(s).join('****');
    return out;
  }

  /** A cause that carries the code and a scrubbed message, never the pg client (whose config holds the password). */
  private cause(err: unknown): Error {
    const e = err as PgErrorish;
    return Object.assign(new Error(this.scrub(e?.message ?? String(err))), e?.code === undefined ? {} : { code: e.code });
  }

  /** The store's own error for a driver error; keygate's own errors unchanged. */
  translate(err: unknown): unknown {
    if (err instanceof KeygateError) return err;
    const e = err as PgErrorish;
    if (e?.code === '23505') {
      switch (e.constraint) {
        case 'api_keys_digest_unique':
          return new StoreConflictError('key', 'digest', { cause: this.cause(err) });
        case 'api_keys_name_unique':
        case 'api_keys_pkey':
          return new StoreConflictError('key', 'name', { cause: this.cause(err) });
        case 'groups_name_unique':
        case 'groups_pkey':
          return new StoreConflictError('group', 'name', { cause: this.cause(err) });
      }
    }
    if (isConnectionLoss(err) || (typeof e?.code === 'string' && TRANSIENT_SQLSTATES.has(e.code))) {
      const reason = NETWORK_CODES.has(e?.code ?? '') ? (e.code as string) : this.scrub(e?.message ?? String(err));
      const busy = e?.code === '55P03' || e?.code === '40P01' || e?.code === '40001';
      return new KeygateError(
        'KG_ERR_STORE_UNAVAILABLE',
        busy
          ? `PostgreSQL at ${this.endpoint}: the database is locked by another writer (${reason}); try again`
          : `PostgreSQL at ${this.endpoint} is unreachable: ${reason}`,
        { cause: this.cause(err) },
      );
    }
    if (typeof e?.code === 'string' && (e.code.startsWith('28') || e.code === '3D000' || e.code === '42501')) {
      return new KeygateError('KG_ERR_DATABASE', `PostgreSQL at ${this.endpoint}, database "${databaseOf(this.url)}": ${this.scrub(e.message ?? '')}`, {
        cause: this.cause(err),
      });
    }
    if (err instanceof Error && /password|SASL|SCRAM/i.test(err.message) && e.severity === undefined) {
      return new KeygateError('KG_ERR_DATABASE', `PostgreSQL at ${this.endpoint}: ${this.scrub(err.message)}`, { cause: this.cause(err) });
    }
    return err;
  }
}

const SNAPSHOT_GROUP = `SELECT ${SNAPSHOT_GROUP_COLUMNS} FROM keygate.groups`;
const SNAPSHOT_KEY = `SELECT ${SNAPSHOT_KEY_COLUMNS} FROM keygate.api_keys`;

function* slices<T>(rows: readonly T[]): Generator<readonly T[]> {
  for (let i = 0; i < rows.length; i += SLICE_ROWS) yield rows.slice(i, i + SLICE_ROWS);
}

type Query = <R extends pg.QueryResultRow>(text: string, values?: unknown[], timeoutMs?: number) => Promise<R[]>;

/** Reads shared by the store (any pooled connection) and its transactions (the transaction's connection). */
class PgReads implements StoreReads {
  constructor(protected readonly q: Query) {}

  async readActual(): Promise<ActualState> {
    return { groups: await this.listGroups(), keys: await this.listKeys() };
  }

  async listGroups(): Promise<GroupRow[]> {
    return (await this.q<RawGroup>('SELECT * FROM keygate.groups ORDER BY name COLLATE "C"')).map(groupFromRow);
  }

  async listKeys(): Promise<KeyRow[]> {
    return (await this.q<RawKey>('SELECT * FROM keygate.api_keys ORDER BY name COLLATE "C"')).map(keyFromRow);
  }

  async getGroup(id: number): Promise<GroupRow | null> {
    const [r] = await this.q<RawGroup>('SELECT * FROM keygate.groups WHERE id = $1', [id]);
    return r === undefined ? null : groupFromRow(r);
  }

  async getGroupByName(name: string): Promise<GroupRow | null> {
    const [r] = await this.q<RawGroup>('SELECT * FROM keygate.groups WHERE name = $1', [name]);
    return r === undefined ? null : groupFromRow(r);
  }

  async getKey(id: number): Promise<KeyRow | null> {
    const [r] = await this.q<RawKey>('SELECT * FROM keygate.api_keys WHERE id = $1', [id]);
    return r === undefined ? null : keyFromRow(r);
  }

  async getKeyByName(name: string): Promise<KeyRow | null> {
    const [r] = await this.q<RawKey>('SELECT * FROM keygate.api_keys WHERE name = $1', [name]);
    return r === undefined ? null : keyFromRow(r);
  }

  async countKeys(): Promise<number> {
    const [r] = await this.q<{ n: number }>('SELECT count(*) AS n FROM keygate.api_keys');
    return r?.n ?? 0;
  }

  async memberCounts(): Promise<Map<number, number>> {
    const rows = await this.q<{ id: number; n: number }>('SELECT group_id AS id, count(*) AS n FROM keygate.api_keys GROUP BY group_id');
    return new Map(rows.map((r) => [r.id, r.n]));
  }

  async latestRevision(): Promise<RevisionRow | null> {
    const [r] = await this.q<RawRevision>('SELECT * FROM keygate.revisions ORDER BY number DESC LIMIT 1');
    return r === undefined ? null : revisionFromRow(r);
  }
}

class PgTx extends PgReads implements StoreTx {
  /** The feed position this transaction writes at, taken on its first write. */
  seq: number | null = null;
  private horizon = 0;
  open = true;

  constructor(
    q: Query,
    private readonly tombstonesKept: number,
  ) {
    super(q);
  }

  private async version(): Promise<number> {
    if (!this.open) throw new Error('store transaction used after it ended');
    if (this.seq === null) {
      const [f] = await this.q<{ seq: number; horizon: number }>('UPDATE keygate.feed SET seq = seq + 1 RETURNING seq, horizon');
      if (f === undefined) throw new KeygateError('KG_ERR_DATABASE', 'the keygate.feed row is missing');
      this.seq = f.seq;
      this.horizon = f.horizon;
    }
    return this.seq;
  }

  async insertGroups(rows: readonly NewGroup[]): Promise<void> {
    if (rows.length === 0) return;
    const v = await this.version();
    for (const s of slices(rows)) {
      await this.q(
        `INSERT INTO keygate.groups (id, name, description, allow, source, builtin, created_at, updated_at, version)
         SELECT id, name, description, allow, source, false, at, at, $7
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(id, name, description, allow, source, at)`,
        [s.map((g) => g.id), s.map((g) => g.name), s.map((g) => g.description), s.map((g) => json(g.allow)), s.map((g) => g.source), s.map((g) => g.at), v],
      );
    }
  }

  async updateGroups(rows: readonly GroupUpdate[]): Promise<void> {
    if (rows.length === 0) return;
    const v = await this.version();
    for (const s of slices(rows)) {
      await this.q(
        `UPDATE keygate.groups g SET name = u.name, description = u.description, allow = u.allow, source = u.source, updated_at = u.at, version = $7
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(id, name, description, allow, source, at)
         WHERE g.id = u.id`,
        [s.map((g) => g.id), s.map((g) => g.name), s.map((g) => g.description), s.map((g) => json(g.allow)), s.map((g) => g.source), s.map((g) => g.at), v],
      );
    }
  }

  private async remove(kind: 'group' | 'key', ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    const v = await this.version();
    const table = kind === 'group' ? 'keygate.groups' : 'keygate.api_keys';
    for (const s of slices([...new Set(ids)])) {
      await this.q(`DELETE FROM ${table} WHERE id = ANY($1::bigint[])`, [s]);
      await this.q(
        `INSERT INTO keygate.tombstones (kind, id, version) SELECT $1, id, $3 FROM unnest($2::bigint[]) AS u(id)
         ON CONFLICT (kind, id) DO UPDATE SET version = EXCLUDED.version`,
        [kind, s, v],
      );
    }
  }

  deleteGroups(ids: readonly number[]): Promise<void> {
    return this.remove('group', ids);
  }

  deleteKeys(ids: readonly number[]): Promise<void> {
    return this.remove('key', ids);
  }

  private keyColumns(s: readonly NewKey[]): unknown[] {
    return [
      s.map((k) => k.id),
      s.map((k) => k.name),
      s.map((k) => k.digest),
      s.map((k) => k.prefix),
      s.map((k) => k.groupId),
      s.map((k) => k.source),
      s.map((k) => k.description),
      s.map((k) => k.creator),
      s.map((k) => k.expiresAt),
      s.map((k) => k.disabled),
      s.map((k) => json(k.allow)),
      s.map((k) => k.at),
      s.map((k) => k.updatedBy),
    ];
  }

  private static readonly KEY_UNNEST = `unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[],
      $9::text[], $10::boolean[], $11::text[], $12::text[], $13::text[])
    AS u(id, name, digest, prefix, group_id, source, description, creator, expires_at, disabled, allow, at, updated_by)`;

  async insertKeys(rows: readonly NewKey[]): Promise<void> {
    if (rows.length === 0) return;
    const v = await this.version();
    for (const s of slices(rows)) {
      await this.q(
        `INSERT INTO keygate.api_keys (id, name, digest, prefix, group_id, source, description, creator, expires_at, disabled, allow,
                                       created_at, updated_at, updated_by, version)
         SELECT id, name, digest, prefix, group_id, source, description, creator, expires_at, disabled, allow, at, at, updated_by, $14
         FROM ${PgTx.KEY_UNNEST}`,
        [...this.keyColumns(s), v],
      );
    }
  }

  async updateKeys(rows: readonly KeyUpdate[]): Promise<void> {
    if (rows.length === 0) return;
    const v = await this.version();
    // Key material may move between rows in one change: park every digest that changes on a
    // unique placeholder first ('x' is not a hex digit), so that UNIQUE(digest) holds throughout.
    for (const s of slices(rows)) {
      await this.q(
        `UPDATE keygate.api_keys k SET digest = 'x' || lpad(k.id::text, 63, '0')
         FROM unnest($1::bigint[], $2::text[]) AS u(id, digest) WHERE k.id = u.id AND k.digest <> u.digest`,
        [s.map((k) => k.id), s.map((k) => k.digest)],
      );
    }
    for (const s of slices(rows)) {
      await this.q(
        `UPDATE keygate.api_keys k SET name = u.name, digest = u.digest, prefix = u.prefix, group_id = u.group_id, source = u.source,
                description = u.description, creator = u.creator, expires_at = u.expires_at, disabled = u.disabled, allow = u.allow,
                updated_at = u.at, updated_by = u.updated_by, version = $14
         FROM ${PgTx.KEY_UNNEST}
         WHERE k.id = u.id`,
        [...this.keyColumns(s), v],
      );
    }
  }

  async reassignKeys(rows: readonly KeyReassignment[]): Promise<void> {
    if (rows.length === 0) return;
    const v = await this.version();
    for (const s of slices(rows)) {
      await this.q(
        `UPDATE keygate.api_keys k SET group_id = u.group_id, allow = u.allow, disabled = u.disabled, updated_at = u.at, updated_by = u.updated_by, version = $7
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::boolean[], $5::text[], $6::text[]) AS u(id, group_id, allow, disabled, at, updated_by)
         WHERE k.id = u.id`,
        [s.map((r) => r.id), s.map((r) => r.groupId), s.map((r) => json(r.allow)), s.map((r) => r.disabled), s.map((r) => r.at), s.map((r) => r.updatedBy), v],
      );
    }
  }

  async recordRevision(r: NewRevision): Promise<RevisionRow> {
    await this.version();
    // Numbered under the write lock, so numbers have no gaps (a sequence would skip after a rollback).
    const [row] = await this.q<RawRevision>(
      `INSERT INTO keygate.revisions (number, config_sha256, config_file, applied_at, created, updated, deleted)
       SELECT coalesce(max(number), 0) + 1, $1, $2, $3, $4, $5, $6 FROM keygate.revisions
       RETURNING *`,
      [r.configSha256, r.configFile, r.at, r.created, r.updated, r.deleted],
    );
    return revisionFromRow(row as RawRevision);
  }

  /** Drops tombstones older than the positions kept, and moves the horizon past them (in this transaction). */
  async prune(): Promise<void> {
    if (this.seq === null) return;
    const horizon = this.seq - this.tombstonesKept;
    if (horizon <= this.horizon + Math.ceil(this.tombstonesKept / 10)) return;
    await this.q('DELETE FROM keygate.tombstones WHERE version <= $1', [horizon]);
    await this.q('UPDATE keygate.feed SET horizon = $1', [horizon]);
  }
}

export class PostgresStore extends PgReads implements Store {
  readonly info: StoreInfo;
  private readonly pool: pg.Pool;
  private readonly config: pg.ClientConfig;
  private readonly errors: PgTranslator;
  /** Writes queue here: one transaction at a time from this store (others wait on the advisory lock). */
  private tail: Promise<unknown> = Promise.resolve();
  private readonly watchers = new Set<{ close(): void }>();
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly tombstonesKept: number,
  ) {
    const errors = new PgTranslator(url, secretsOf(url));
    const config: pg.ClientConfig = {
      connectionString: url,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      query_timeout: QUERY_TIMEOUT_MS,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      application_name: 'keygate',
      types: TYPES,
    };
    const pool = new pg.Pool({ ...config, max: 4, idleTimeoutMillis: 30_000 });
    // An idle connection that drops is removed by the pool, which then emits 'error': listened to, so
    // that it never takes the process down. The next query opens a new connection, or fails and says so.
    pool.on('error', () => undefined);
    // A connection checked out has no listener of the pool's: one of ours, for its whole life.
    pool.on('connect', (client) => client.on('error', () => undefined));
    super(async (text, values, timeoutMs) => {
      try {
        const r = await pool.query({ text, ...(values === undefined ? {} : { values }), ...(timeoutMs === undefined ? {} : { query_timeout: timeoutMs }) });
        return r.rows;
      } catch (err) {
        throw errors.translate(err);
      }
    });
    this.pool = pool;
    this.config = config;
    this.errors = errors;
    this.info = { kind: 'postgres', location: displayLocation(url) };
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Runs `fn` on one pooled connection; a connection that failed is closed rather than reused. */
  private async withClient<T>(fn: (q: Query, client: pg.PoolClient) => Promise<T>): Promise<T> {
    if (this.closed) throw new KeygateError('KG_ERR_DATABASE', 'the store is closed');
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw this.errors.translate(err);
    }
    let lost: Error | undefined;
    const q: Query = async (text, values, timeoutMs) => {
      try {
        const r = await client.query({ text, ...(values === undefined ? {} : { values }), ...(timeoutMs === undefined ? {} : { query_timeout: timeoutMs }) });
        return r.rows;
      } catch (err) {
        if (isConnectionLoss(err)) lost = err as Error;
        throw this.errors.translate(err);
      }
    };
    try {
      return await fn(q, client);
    } finally {
      client.release(lost);
    }
  }

  /** Opens the store: reaches the server, then migrates (or, read-only, checks the schema). */
  async init(opts: OpenStoreOptions): Promise<'ready' | 'no-schema'> {
    return this.withClient(async (q) => {
      const readOnly = opts.readOnly === true || opts.planOnly === true;
      if (readOnly) {
        const [found] = await q<{ t: string | null }>(`SELECT to_regclass('keygate.migrations')::text AS t`);
        if (found?.t === null || found?.t === undefined) return 'no-schema';
        const version = await this.schemaVersion(q);
        this.checkVersion(version, true);
        return 'ready';
      }
      await q('SELECT pg_advisory_lock($1, $2)', [LOCK_SPACE, MIGRATION_LOCK]);
      try {
        await q('CREATE SCHEMA IF NOT EXISTS keygate');
        await q('CREATE TABLE IF NOT EXISTS keygate.migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
        const version = await this.schemaVersion(q);
        this.checkVersion(version, false);
        for (let v = version; v < POSTGRES_SCHEMA_VERSION; v++) {
          await q('BEGIN');
          try {
            await q((MIGRATIONS[v] as (epoch: string, now: string) => string)(randomUUID(), new Date().toISOString()));
            await q('INSERT INTO keygate.migrations (version) VALUES ($1)', [v + 1]);
            await q('COMMIT');
          } catch (err) {
            await q('ROLLBACK').catch(() => undefined);
            throw err;
          }
        }
      } finally {
        await q('SELECT pg_advisory_unlock($1, $2)', [LOCK_SPACE, MIGRATION_LOCK]).catch(() => undefined);
      }
      return 'ready';
    });
  }

  private async schemaVersion(q: Query): Promise<number> {
    const [r] = await q<{ v: number | null }>('SELECT max(version) AS v FROM keygate.migrations');
    return r?.v ?? 0;
  }

  private checkVersion(version: number, readOnly: boolean): void {
    const where = `PostgreSQL at ${this.errors.endpoint}, database "${databaseOf(this.url)}"`;
    if (version > POSTGRES_SCHEMA_VERSION) {
      throw new KeygateError(
        'KG_ERR_DATABASE',
        `${where}: keygate schema version ${version} is newer than this keygate understands (${POSTGRES_SCHEMA_VERSION}); upgrade keygate`,
      );
    }
    if (readOnly && version < POSTGRES_SCHEMA_VERSION) {
      throw new KeygateError('KG_ERR_DATABASE', `${where}: keygate schema version ${version} is older than this keygate's; run \`keygate apply\` to upgrade it`);
    }
  }

  write<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T> {
    return this.serial(() =>
      this.withClient(async (q) => {
        await q(`BEGIN; SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'; SET LOCAL idle_in_transaction_session_timeout = '${IDLE_IN_TX_TIMEOUT}'`);
        const tx = new PgTx(q, this.tombstonesKept);
        try {
          await q('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_SPACE, WRITE_LOCK]);
          const value = await fn(tx);
          tx.open = false;
          if (tx.seq !== null) {
            await tx.prune();
            // Delivered to every listener when (and only if) this transaction commits.
            await q('SELECT pg_notify($1, $2)', [FEED_CHANNEL, String(tx.seq)]);
          }
          await q('COMMIT');
          return value;
        } catch (err) {
          tx.open = false;
          await q('ROLLBACK').catch(() => undefined);
          throw this.errors.translate(err);
        }
      }),
    );
  }

  private async feedRow(q: Query, timeoutMs?: number): Promise<{ epoch: string; seq: number; horizon: number }> {
    const [f] = await q<{ epoch: string; seq: number; horizon: number }>('SELECT epoch, seq, horizon FROM keygate.feed', [], timeoutMs);
    if (f === undefined) throw new KeygateError('KG_ERR_DATABASE', 'the keygate.feed row is missing');
    return f;
  }

  async position(): Promise<FeedPosition> {
    const f = await this.feedRow(this.q, POSITION_TIMEOUT_MS);
    return { epoch: f.epoch, seq: f.seq };
  }

  /** Runs reads on one snapshot of the database (REPEATABLE READ): the feed row and the rows agree. */
  private consistent<T>(fn: (q: Query) => Promise<T>): Promise<T> {
    return this.withClient(async (q) => {
      await q('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        const value = await fn(q);
        await q('COMMIT');
        return value;
      } catch (err) {
        await q('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  }

  /** Groups and keys from one snapshot: on the pool they would be two queries another replica could write between. */
  override readActual(): Promise<ActualState> {
    return this.consistent((q) => new PgReads(q).readActual());
  }

  snapshot(): Promise<StoreSnapshot> {
    return this.consistent(async (q) => {
      const f = await this.feedRow(q);
      return {
        position: { epoch: f.epoch, seq: f.seq },
        groups: (await q<RawSnapshotGroup>(SNAPSHOT_GROUP)).map(snapshotGroup),
        keys: (await q<RawKey>(SNAPSHOT_KEY)).map(snapshotKey),
      };
    });
  }

  changesSince(from: FeedPosition): Promise<ChangeSet> {
    return this.consistent(async (q): Promise<ChangeSet> => {
      const f = await this.feedRow(q);
      const position = { epoch: f.epoch, seq: f.seq };
      const empty = { groups: [], keys: [], deletedGroups: [], deletedKeys: [] };
      if (from.epoch !== f.epoch || from.seq > f.seq || from.seq < f.horizon) return { position, stale: true, ...empty };
      if (from.seq === f.seq) return { position, stale: false, ...empty };
      const deleted = async (kind: 'group' | 'key', table: string): Promise<number[]> =>
        (
          await q<{ id: number }>(
            `SELECT t.id FROM keygate.tombstones t WHERE t.kind = $1 AND t.version > $2 AND NOT EXISTS (SELECT 1 FROM ${table} r WHERE r.id = t.id)`,
            [kind, from.seq],
          )
        ).map((r) => r.id);
      return {
        position,
        stale: false,
        groups: (await q<RawSnapshotGroup>(`${SNAPSHOT_GROUP} WHERE version > $1`, [from.seq])).map(snapshotGroup),
        keys: (await q<RawKey>(`${SNAPSHOT_KEY} WHERE version > $1`, [from.seq])).map(snapshotKey),
        deletedGroups: await deleted('group', 'keygate.groups'),
        deletedKeys: await deleted('key', 'keygate.api_keys'),
      };
    });
  }

  /**
   * Keeps the latest use of each key, from every replica: a row is only moved forward. Under the
   * write lock, so that it never deadlocks with a reconcile updating the same rows; it does not move the feed.
   */
  recordLastUsed(batch: ReadonlyMap<number, number>): Promise<void> {
    if (batch.size === 0) return Promise.resolve();
    const ids = [...batch.keys()];
    const ats = [...batch.values()].map((ms) => new Date(ms).toISOString());
    return this.serial(() =>
      this.withClient(async (q) => {
        await q(`BEGIN; SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
        try {
          await q('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_SPACE, WRITE_LOCK]);
          for (let i = 0; i < ids.length; i += SLICE_ROWS) {
            await q(
              `UPDATE keygate.api_keys k SET last_used_at = u.at
               FROM unnest($1::bigint[], $2::text[]) AS u(id, at)
               WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)`,
              [ids.slice(i, i + SLICE_ROWS), ats.slice(i, i + SLICE_ROWS)],
            );
          }
          await q('COMMIT');
        } catch (err) {
          await q('ROLLBACK').catch(() => undefined);
          throw err;
        }
      }),
    );
  }

  /**
   * LISTENs on the feed channel on a connection of its own; every committed write notifies it. A
   * listener connection that drops is opened again (with a growing pause); each time it is (re)opened,
   * `onChange` is called once, since writes may have been missed meanwhile. The control plane's
   * position poll catches up in between.
   */
  watch(onChange: () => void): { close(): void } {
    let closed = false;
    let client: pg.Client | null = null;
    let timer: NodeJS.Timeout | null = null;
    let pause = LISTEN_RETRY_MS;
    const listen = (): void => {
      timer = null;
      if (closed || this.closed) return;
      const c = new pg.Client({ ...this.config, query_timeout: CONNECT_TIMEOUT_MS });
      client = c;
      let dropped = false;
      const drop = (): void => {
        if (dropped) return;
        dropped = true;
        c.removeAllListeners('notification');
        void c.end().catch(() => undefined);
        if (!closed && !this.closed) {
          timer = setTimeout(listen, pause);
          timer.unref();
          pause = Math.min(pause * 2, LISTEN_RETRY_MAX_MS);
        }
      };
      c.on('error', drop);
      c.on('end', drop);
      c.on('notification', (n) => {
        if (n.channel === FEED_CHANNEL) onChange();
      });
      c.connect()
        .then(() => c.query(`LISTEN ${FEED_CHANNEL}`))
        .then(
          () => {
            pause = LISTEN_RETRY_MS;
            if (!closed && !dropped) onChange();
          },
          drop,
        );
    };
    listen();
    const handle = {
      close: (): void => {
        closed = true;
        this.watchers.delete(handle);
        if (timer !== null) clearTimeout(timer);
        const c = client;
        client = null;
        if (c !== null) {
          c.removeAllListeners('notification');
          void c.end().catch(() => undefined);
        }
      },
    };
    this.watchers.add(handle);
    return handle;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.tail;
    this.closed = true;
    for (const w of [...this.watchers]) w.close();
    await this.pool.end().catch(() => undefined);
  }
}

/** The URL's password and password-like parameters: blanked out of every message. */
function secretsOf(url: string): string[] {
  try {
    const u = new URL(url);
    const out = [u.password, decodeURIComponent(u.password)];
    for (const [name, value] of u.searchParams) if (SECRET_URL_PARAMETER.test(name)) out.push(value);
    return out.filter((s) => s.length > 0);
  } catch {
    return [];
  }
}

/**
 * Opens a PostgreSQL store: reaches the server (an unreachable one is KG_ERR_STORE_UNAVAILABLE naming
 * host:port) and migrates it. Read-only (`keys list`) and plan-only opens write nothing: without
 * keygate's tables, a read-only open fails and a plan-only one plans against an empty store.
 */
export async function openPostgresStore(url: string, opts: PostgresOptions = {}): Promise<Store> {
  const store = new PostgresStore(url, opts.tombstonesKept ?? TOMBSTONE_POSITIONS_KEPT);
  let state: 'ready' | 'no-schema';
  try {
    state = await store.init(opts);
  } catch (err) {
    await store.close();
    throw err;
  }
  if (state === 'ready') return store;
  await store.close();
  if (opts.planOnly === true) return openSqliteStore(':memory:');
  throw new KeygateError(
    'KG_ERR_DATABASE',
    `PostgreSQL at ${endpointOf(url)}, database "${databaseOf(url)}": no keygate tables (run \`keygate apply\` first)`,
  );
}
