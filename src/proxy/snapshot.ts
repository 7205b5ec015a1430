/**
 * The proxy's read-only view of the keys: a map from key digest to principal,
 * built once per reconcile and swapped whole. Never a database query per request.
 */
import { compileRules, type AllowRule, type CompiledRules } from '../rules/match.ts';
import { identityHeaders } from './headers.ts';

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
}

/**
 * The identity headers of a principal, built once per key and kept: a
 * snapshot of 100,000 keys does not carry 100,000 header lists that most
 * keys never use (about 130 bytes each).
 */
export function identityOf(p: Principal): readonly string[] {
  return (p.identity ??= identityHeaders({ id: p.id, name: p.name, group: p.group }));
}

export interface SnapshotGroup {
  id: number;
  name: string;
  allow: readonly AllowRule[] | null;
}

export interface SnapshotKey {
  id: number;
  name: string;
  digest: string;
  groupId: number;
  disabled: boolean;
  expiresAt: string | null;
  allow: readonly AllowRule[] | null;
}

export interface KeySnapshot {
  readonly keys: ReadonlyMap<string, Principal>;
  /** Different for every snapshot built by this process: lets a cache tell snapshots apart without holding one. */
  readonly generation: number;
}

let generations = 0;

export const ADMIN_GROUP_NAME = 'admin';

export function buildSnapshot(groups: readonly SnapshotGroup[], keys: readonly SnapshotKey[]): KeySnapshot {
  const byId = new Map<number, { name: string; rules: CompiledRules }>();
  for (const g of groups) {
    byId.set(g.id, { name: g.name, rules: g.name === ADMIN_GROUP_NAME ? null : compileRules(g.allow) });
  }
  const map = new Map<string, Principal>();
  for (const k of keys) {
    const g = byId.get(k.groupId);
    // A key whose group is unknown admits nothing: fail closed.
    const expiresAtMs = k.expiresAt === null ? null : Date.parse(k.expiresAt);
    const group = g?.name ?? '?';
    map.set(k.digest, {
      id: k.id,
      name: k.name,
      group,
      identity: null,
      admin: g?.name === ADMIN_GROUP_NAME,
      disabled: k.disabled,
      expiresAtMs,
      groupRules: g === undefined ? [] : g.rules,
      keyRules: compileRules(k.allow),
    });
  }
  return Object.freeze({ keys: map, generation: ++generations });
}

export const EMPTY_SNAPSHOT: KeySnapshot = Object.freeze({ keys: new Map(), generation: 0 });
