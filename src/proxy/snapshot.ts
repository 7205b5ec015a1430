import { hash } from 'node:crypto';
/**
 * The proxy's read-only view of the keys: a map from key digest to principal.
 * The control plane builds what goes in it and sends it here; this side only
 * applies it. Never a database query per request.
 *
 * A `KeyTable` is changed in two ways, both atomic for the requests around
 * them (JavaScript runs one of them at a time, and each change is applied in
 * one go): a delta (the keys and groups that one write changed, applied in
 * place, costing the size of the change), or a whole new table built in
 * slices between requests by a `TableBuilder` and then swapped in. Every
 * change gives the table a new `generation`, so that per-connection memories
 * of a key (auth.ts) are dropped.
 */
import { compileRules, type CompiledRules } from '../rules/match.ts';
import type { FeedPosition, SnapshotGroup, SnapshotKey, Source } from '../store/types.ts';
import { identityHeaders } from './headers.ts';

export type { SnapshotGroup, SnapshotKey } from '../store/types.ts';

/** A group as the table holds it: one object per group, shared by its keys, changed in place. */
export interface GroupEntry {
  id: number;
  name: string;
  rules: CompiledRules;
}

/**
 * A key as the proxy sees it. Its group is a shared entry, so that a change of
 * the group's rules is one assignment whatever the number of its keys; the
 * group's name, rules and admin flag are read through it.
 */
export class Principal {
  /** x-api-key-id / -name / -group, ready to send: built on the key's first forwarded request (see `identityOf`). */
  identity: readonly string[] | null = null;

  constructor(
    readonly id: number,
    readonly name: string,
    public entry: GroupEntry,
    readonly disabled: boolean,
    /** Epoch milliseconds, or null for no expiry. */
    readonly expiresAtMs: number | null,
    readonly keyRules: CompiledRules,
    /** The table's key for it: the SHA-256 of the key, as 32 raw bytes in a latin1 string (see `tableKey`). */
    readonly digest: string,
    readonly source: Source,
  ) {}

  get group(): string {
    return this.entry.name;
  }

  /** Members of the admin group may call every route and the management API. */
  get admin(): boolean {
    return this.entry.name === ADMIN_GROUP_NAME;
  }

  get groupRules(): CompiledRules {
    return this.entry.rules;
  }

  get groupId(): number {
    return this.entry.id;
  }
}

/**
 * The identity headers of a principal, built once per key and kept: a
 * snapshot of 100,000 keys does not carry 100,000 header lists that most
 * keys never use (about 130 bytes each).
 */
export function identityOf(p: Principal): readonly string[] {
  return (p.identity ??= identityHeaders({ id: p.id, name: p.name, group: p.group }));
}

/**
 * The table's key for a key: its SHA-256 as 32 raw bytes in a latin1 string,
 * half the memory of the 64-character hex digest the store holds (100,000
 * keys: about 5 MB less) and quicker to hash in the map.
 */
export function tableKey(hexDigest: string): string {
  return Buffer.from(hexDigest, 'hex').toString('latin1');
}

/** `tableKey` of a presented key, computed straight from it (Node's types leave out the latin1 output its one-shot hash accepts). */
const rawHash = hash as unknown as (algorithm: string, data: string, outputEncoding: 'latin1') => string;
export function tableKeyOf(presented: string): string {
  return rawHash('sha256', presented, 'latin1');
}

export interface KeySnapshot {
  readonly keys: ReadonlyMap<string, Principal>;
  /** Different after every change of this process's table: lets a cache tell versions apart without holding one. */
  readonly generation: number;
}

/** The keys and groups that one or more writes changed, as they are now. */
export interface SnapshotDelta {
  position: FeedPosition;
  groups: readonly SnapshotGroup[];
  keys: readonly SnapshotKey[];
  deletedGroups: readonly number[];
  deletedKeys: readonly number[];
}

export const ADMIN_GROUP_NAME = 'admin';

let generations = 0;

/** A key whose group is unknown admits nothing: fail closed. */
const NO_ROUTES: CompiledRules = [];

function groupEntry(g: SnapshotGroup): GroupEntry {
  return { id: g.id, name: g.name, rules: g.name === ADMIN_GROUP_NAME ? null : compileRules(g.allow) };
}

/** The entry of a group the table does not know (yet, or any more): no name, no routes. */
function unknownGroup(id: number): GroupEntry {
  return { id, name: '?', rules: NO_ROUTES };
}

function principal(k: SnapshotKey, g: GroupEntry | undefined): Principal {
  return new Principal(
    k.id,
    k.name,
    g ?? unknownGroup(k.groupId),
    k.disabled,
    k.expiresAt === null ? null : Date.parse(k.expiresAt),
    compileRules(k.allow),
    tableKey(k.digest),
    k.source,
  );
}

export interface TableCounts {
  keys: number;
  config: number;
  api: number;
  groups: number;
}

interface TableState {
  byDigest: Map<string, Principal>;
  byId: Map<number, Principal>;
  groups: Map<number, GroupEntry>;
  counts: { config: number; api: number };
}

const emptyState = (): TableState => ({ byDigest: new Map(), byId: new Map(), groups: new Map(), counts: { config: 0, api: 0 } });

/** Builds a whole table from groups and slices of keys; `KeyTable.swap` puts it in place. */
export class TableBuilder {
  readonly state: TableState = emptyState();

  constructor(
    readonly position: FeedPosition | null,
    groups: readonly SnapshotGroup[],
  ) {
    for (const g of groups) this.state.groups.set(g.id, groupEntry(g));
  }

  addKeys(keys: readonly SnapshotKey[]): void {
    const s = this.state;
    for (const k of keys) {
      const p = principal(k, s.groups.get(k.groupId));
      const old = s.byId.get(k.id);
      if (old !== undefined) {
        if (s.byDigest.get(old.digest) === old) s.byDigest.delete(old.digest);
        s.counts[old.source]--;
      }
      s.byDigest.set(p.digest, p);
      s.byId.set(k.id, p);
      s.counts[k.source]++;
    }
  }
}

export class KeyTable {
  private state: TableState = emptyState();
  private snap: KeySnapshot = Object.freeze({ keys: this.state.byDigest, generation: ++generations });
  /** The store feed position this table reflects (null before the first). */
  position: FeedPosition | null = null;

  /** What the proxy reads: one object per version of the table. */
  current(): KeySnapshot {
    return this.snap;
  }

  counts(): TableCounts {
    const { config, api } = this.state.counts;
    return { keys: config + api, config, api, groups: this.state.groups.size };
  }

  /** The name of some config-owned key (for the demo hint), or null. */
  someConfigKeyName(): string | null {
    for (const p of this.state.byId.values()) if (p.source === 'config') return p.name;
    return null;
  }

  private bump(): void {
    this.snap = Object.freeze({ keys: this.state.byDigest, generation: ++generations });
  }

  swap(built: TableBuilder): void {
    this.state = built.state;
    this.position = built.position;
    this.bump();
  }

  /** Applies one delta in place: groups first, then keys, then the groups it deleted. */
  apply(d: SnapshotDelta): void {
    const s = this.state;
    for (const g of d.groups) {
      const old = s.groups.get(g.id);
      const next = groupEntry(g);
      if (old === undefined) {
        s.groups.set(g.id, next);
        // Keys that came before their group (a group made again with its old id) join it.
        for (const p of s.byId.values()) if (p.entry.id === g.id && p.entry !== next) p.entry = next;
        continue;
      }
      // The group's keys share its entry: its new rules and name apply to all of them at once.
      const renamed = old.name !== next.name;
      old.name = next.name;
      old.rules = next.rules;
      if (renamed) for (const p of s.byId.values()) if (p.entry === old) p.identity = null;
    }
    for (const id of d.deletedKeys) {
      const old = s.byId.get(id);
      if (old === undefined) continue;
      s.byId.delete(id);
      if (s.byDigest.get(old.digest) === old) s.byDigest.delete(old.digest);
      s.counts[old.source]--;
    }
    for (const k of d.keys) {
      const old = s.byId.get(k.id);
      if (old !== undefined) {
        if (s.byDigest.get(old.digest) === old) s.byDigest.delete(old.digest);
        s.counts[old.source]--;
      }
      const p = principal(k, s.groups.get(k.groupId));
      s.byId.set(k.id, p);
      s.byDigest.set(p.digest, p);
      s.counts[k.source]++;
    }
    for (const id of d.deletedGroups) {
      const g = s.groups.get(id);
      if (g === undefined) continue;
      s.groups.delete(id);
      // Keys still in a deleted group (the store moves them first): admit nothing.
      g.name = '?';
      g.rules = NO_ROUTES;
      for (const p of s.byId.values()) if (p.entry === g) p.identity = null;
    }
    this.position = d.position;
    this.bump();
  }
}

/** A whole table at once, for tests and benchmarks. */
export function buildSnapshot(groups: readonly SnapshotGroup[], keys: readonly SnapshotKey[]): KeySnapshot {
  const b = new TableBuilder(null, groups);
  b.addKeys(keys);
  const t = new KeyTable();
  t.swap(b);
  return t.current();
}
