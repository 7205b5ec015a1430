import type { AllowRule } from '../rules/match.ts';
import type { DB } from './db.ts';

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

export interface KeyRow {
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
  createdAt: string;
  updatedAt: string;
  updatedBy: string | null;
  lastUsedAt: string | null;
}

/** What the database holds now. */
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

interface RawGroup {
  id: number;
  name: string;
  description: string | null;
  allow: string | null;
  source: Source;
  builtin: number;
  created_at: string;
  updated_at: string;
}

interface RawKey {
  id: number;
  name: string;
  digest: string;
  prefix: string | null;
  group_id: number;
  source: Source;
  description: string | null;
  creator: string | null;
  expires_at: string | null;
  disabled: number;
  allow: string | null;
  created_at: string;
  updated_at: string;
  updated_by: string | null;
  last_used_at: string | null;
}

const parseAllow = (s: string | null): AllowRule[] | null => (s === null ? null : (JSON.parse(s) as AllowRule[]));

export function groupFromRow(r: RawGroup): GroupRow {
  return {
    id: r.id,
    name: r.name,
    description: r.description,
    allow: parseAllow(r.allow),
    source: r.source,
    builtin: r.builtin === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export function keyFromRow(r: RawKey): KeyRow {
  return {
    id: r.id,
    name: r.name,
    digest: r.digest,
    prefix: r.prefix,
    groupId: r.group_id,
    source: r.source,
    description: r.description,
    creator: r.creator,
    expiresAt: r.expires_at,
    disabled: r.disabled === 1,
    allow: parseAllow(r.allow),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    updatedBy: r.updated_by,
    lastUsedAt: r.last_used_at,
  };
}

export function readGroups(db: DB): GroupRow[] {
  return (db.prepare('SELECT * FROM groups ORDER BY name').all() as RawGroup[]).map(groupFromRow);
}

export function readKeys(db: DB): KeyRow[] {
  return (db.prepare('SELECT * FROM api_keys ORDER BY name').all() as RawKey[]).map(keyFromRow);
}

export function readActual(db: DB): ActualState {
  return { groups: readGroups(db), keys: readKeys(db) };
}

export function latestRevision(db: DB): RevisionRow | null {
  const r = db.prepare('SELECT * FROM revisions ORDER BY number DESC LIMIT 1').get() as
    | { number: number; config_sha256: string; config_file: string; applied_at: string; created: number; updated: number; deleted: number }
    | undefined;
  if (r === undefined) return null;
  return {
    number: r.number,
    configSha256: r.config_sha256,
    configFile: r.config_file,
    appliedAt: r.applied_at,
    created: r.created,
    updated: r.updated,
    deleted: r.deleted,
  };
}

/** What the proxy's snapshot is built from: the rows, without timestamps. */
export interface StoreState {
  groups: Array<{ id: number; name: string; allow: AllowRule[] | null }>;
  keys: Array<{
    id: number;
    name: string;
    digest: string;
    prefix: string | null;
    groupId: number;
    disabled: boolean;
    expiresAt: string | null;
    allow: AllowRule[] | null;
    source: Source;
  }>;
}

export function readStoreState(db: DB): StoreState {
  return {
    groups: readGroups(db).map((g) => ({ id: g.id, name: g.name, allow: g.allow })),
    keys: readKeys(db).map((k) => ({
      id: k.id,
      name: k.name,
      digest: k.digest,
      prefix: k.prefix,
      groupId: k.groupId,
      disabled: k.disabled,
      expiresAt: k.expiresAt,
      allow: k.allow,
      source: k.source,
    })),
  };
}
