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

export interface Principal {
  id: number;
  name: string;
  group: string;
  /** Members of the admin group may call every route and the management API. */
  admin: boolean;
  disabled: boolean;
  /** Epoch milliseconds, or null for no expiry. */
  expiresAtMs: number | null;
  groupRules: CompiledRules;
  keyRules: CompiledRules;
  /** x-api-key-id / -name / -group, ready to send: built on the key's first forwarded request (see `identityOf`). */
  identity: readonly string[] | null;
  readonly digest: string;
  groupId: number;
  readonly source: Source;
}

/**
 * The identity headers of a principal, built once per key and kept: a
 * snapshot of 100,000 keys does not carry 100,000 header lists that most
 * keys never use (about 130 bytes each).
 */
export function identityOf(p: Principal): readonly string[] {
  return (p.identity ??= identityHeaders({ id: p.id, name: p.name, group: p.group }));
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

interface GroupEntry {
  name: string;
  rules: CompiledRules;
}

/** A key whose group is unknown admits nothing: fail closed. */
const NO_ROUTES: CompiledRules = [];

function groupEntry(g: SnapshotGroup): GroupEntry {
  return { name: g.name, rules: g.name === ADMIN_GROUP_NAME ? null : compileRules(g.allow) };
}

function principal(k: SnapshotKey, g: GroupEntry | undefined): Principal {
  return {
    id: k.id,
    name: k.name,
    group: g?.name ?? '?',
    identity: null,
    admin: g?.name === ADMIN_GROUP_NAME,
    disabled: k.disabled,
    expiresAtMs: k.expiresAt === null ? null : Date.parse(k.expiresAt),
    groupRules: g === undefined ? NO_ROUTES : g.rules,
    keyRules: compileRules(k.allow),
    digest: k.digest,
    groupId: k.groupId,
    source: k.source,
  };
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
      s.byDigest.set(k.digest, p);
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
        continue;
      }
      const renamed = old.name !== next.name;
      old.name = next.name;
      old.rules = next.rules;
      // The group's keys follow it (a rare change: a scan of the keys, no allocation per key).
      for (const p of s.byId.values()) {
        if (p.groupId !== g.id) continue;
        p.group = old.name;
        p.admin = old.name === ADMIN_GROUP_NAME;
        p.groupRules = old.rules;
        if (renamed) p.identity = null;
      }
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
      s.byDigest.set(k.digest, p);
      s.counts[k.source]++;
    }
    for (const id of d.deletedGroups) {
      if (!s.groups.delete(id)) continue;
      // Keys still in a deleted group (the store moves them first): admit nothing.
      for (const p of s.byId.values()) {
        if (p.groupId !== id) continue;
        p.group = '?';
        p.admin = false;
        p.groupRules = NO_ROUTES;
        p.identity = null;
      }
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
