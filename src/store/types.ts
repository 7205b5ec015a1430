/**
 * The storage seam: what keygate needs of a database, and nothing about how a
 * particular engine does it. SQLite (sqlite.ts) and PostgreSQL implement it
 * and pass one contract suite (test/store-contract.ts). Nothing outside
 * src/store/ writes SQL or imports a database driver.
 *
 * Every write runs in `write(fn)`: one transaction under the store's write
 * lock, all of it or none of it. Rows carry the feed position (`version`) of
 * the transaction that last changed them, and deletions leave tombstones, so
 * that `changesSince(position)` tells a reader what changed after what it has
 * seen: how replicas and serving threads follow writes made elsewhere.
 */
import type { AllowRule } from '../rules/match.ts';

export type Source = 'config' | 'api';

export interface GroupRow {
  id: number;
  name: string;
  description: string | null;
  allow: AllowRule[] | null;
  source: Source;
  builtin: boolean;
  createdAt: string;
  updatedAt: string;
}

/** What a key is, whoever writes it. */
interface KeyFields {
  id: number;
  name: string;
  digest: string;
  prefix: string | null;
  groupId: number;
  source: Source;
  description: string | null;
  creator: string | null;
  expiresAt: string | null;
  disabled: boolean;
  allow: AllowRule[] | null;
  /** `config`, or the management API's actor as JSON. */
  updatedBy: string | null;
}

export interface KeyRow extends KeyFields {
  createdAt: string;
  updatedAt: string;
  lastUsedAt: string | null;
}

/** What the store holds now (what a reconcile compares the file with). */
export interface ActualState {
  groups: GroupRow[];
  keys: KeyRow[];
}

export interface RevisionRow {
  number: number;
  configSha256: string;
  configFile: string;
  appliedAt: string;
  created: number;
  updated: number;
  deleted: number;
}

/** What the proxy needs of a group. */
export interface SnapshotGroup {
  id: number;
  name: string;
  allow: readonly AllowRule[] | null;
}

/** What the proxy needs of a key: no timestamps, no description. */
export interface SnapshotKey {
  id: number;
  name: string;
  digest: string;
  groupId: number;
  disabled: boolean;
  expiresAt: string | null;
  allow: readonly AllowRule[] | null;
  source: Source;
}

/**
 * A position in the store's change feed. `epoch` names the database itself
 * (made when it was created), so a reader notices a database that was
 * replaced or restored, whose positions mean something else.
 */
export interface FeedPosition {
  epoch: string;
  seq: number;
}

/** Everything the proxy needs, at one feed position. */
export interface StoreSnapshot {
  position: FeedPosition;
  groups: SnapshotGroup[];
  keys: SnapshotKey[];
}

/** What changed after a feed position, as the rows are now. */
export interface ChangeSet {
  /** The position this change set brings its reader to. */
  position: FeedPosition;
  /**
   * True when the reader's position cannot be continued from (another
   * database, or older than the tombstones the store keeps): read a whole
   * snapshot instead. The lists are empty then.
   */
  stale: boolean;
  groups: SnapshotGroup[];
  keys: SnapshotKey[];
  deletedGroups: number[];
  deletedKeys: number[];
}

export interface NewGroup {
  id: number;
  name: string;
  description: string | null;
  allow: readonly AllowRule[] | null;
  source: Source;
  at: string;
}

/** A group's changeable fields, written whole. */
export interface GroupUpdate {
  id: number;
  name: string;
  description: string | null;
  allow: readonly AllowRule[] | null;
  source: Source;
  at: string;
}

export interface NewKey extends Omit<KeyFields, 'allow'> {
  allow: readonly AllowRule[] | null;
  at: string;
}

/** A key's changeable fields, written whole (created_at and last_used_at are kept). */
export type KeyUpdate = NewKey;

/** A key moved to another group because its group went away (with the rules that keep it as narrow as it was). */
export interface KeyReassignment {
  id: number;
  groupId: number;
  allow: readonly AllowRule[] | null;
  disabled: boolean;
  at: string;
  updatedBy: string | null;
}

export interface NewRevision {
  configSha256: string;
  configFile: string;
  at: string;
  created: number;
  updated: number;
  deleted: number;
}

/** Reads, outside or inside a write transaction. */
export interface StoreReads {
  readActual(): Promise<ActualState>;
  listGroups(): Promise<GroupRow[]>;
  listKeys(): Promise<KeyRow[]>;
  getGroup(id: number): Promise<GroupRow | null>;
  getGroupByName(name: string): Promise<GroupRow | null>;
  getKey(id: number): Promise<KeyRow | null>;
  getKeyByName(name: string): Promise<KeyRow | null>;
  countKeys(): Promise<number>;
  /** Keys per group id. */
  memberCounts(): Promise<Map<number, number>>;
  latestRevision(): Promise<RevisionRow | null>;
}

/**
 * Per-kind writes inside one transaction (as Kong's reconciler hands each
 * change to per-kind create/update/delete actions). A unique name or key
 * digest taken by another row throws StoreConflictError.
 */
export interface StoreTx extends StoreReads {
  insertGroups(rows: readonly NewGroup[]): Promise<void>;
  updateGroups(rows: readonly GroupUpdate[]): Promise<void>;
  deleteGroups(ids: readonly number[]): Promise<void>;
  insertKeys(rows: readonly NewKey[]): Promise<void>;
  /** Digests may change hands within one call (rotations, swaps): uniqueness holds at the end. */
  updateKeys(rows: readonly KeyUpdate[]): Promise<void>;
  reassignKeys(rows: readonly KeyReassignment[]): Promise<void>;
  deleteKeys(ids: readonly number[]): Promise<void>;
  recordRevision(r: NewRevision): Promise<RevisionRow>;
}

export interface StoreInfo {
  kind: 'sqlite' | 'postgres';
  /** Where it is, safe to show: a file path, or a URL without its password. */
  location: string;
}

export interface Store extends StoreReads {
  readonly info: StoreInfo;
  /**
   * Runs `fn` in one transaction under the store's write lock (one writer at
   * a time, across processes and replicas). Commits when `fn` resolves; rolls
   * back everything when it throws, and rethrows.
   */
  write<T>(fn: (tx: StoreTx) => Promise<T>): Promise<T>;
  snapshot(): Promise<StoreSnapshot>;
  position(): Promise<FeedPosition>;
  changesSince(from: FeedPosition): Promise<ChangeSet>;
  /** Keeps the latest of each key's uses; never moves last_used_at back. Does not move the feed. */
  recordLastUsed(batch: ReadonlyMap<number, number>): Promise<void>;
  /**
   * Calls `onChange` (possibly spuriously) when another connection may have
   * committed a write: PostgreSQL's LISTEN/NOTIFY, SQLite's data_version.
   */
  watch(onChange: () => void): { close(): void };
  close(): Promise<void>;
}
