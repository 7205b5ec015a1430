/**
 * Rows as both SQL stores read them, and their mapping to the store's own types.
 * SQLite hands booleans back as 0/1 and PostgreSQL as true/false; everything
 * else is the same column for column, so one mapping serves both.
 */
import type { AllowRule } from '../rules/match.ts';
import type { GroupRow, KeyRow, RevisionRow, SnapshotGroup, SnapshotKey } from './types.ts';

/** A boolean column: 0/1 from SQLite, true/false from PostgreSQL. */
type Flag = number | boolean;

export interface RawGroup {
  id: number;
  name: string;
  description: string | null;
  allow: string | null;
  source: 'config' | 'api';
  builtin: Flag;
  created_at: string;
  updated_at: string;
}

export interface RawKey {
  id: number;
  name: string;
  digest: string;
  prefix: string | null;
  group_id: number;
  source: 'config' | 'api';
  description: string | null;
  creator: string | null;
  expires_at: string | null;
  disabled: Flag;
  allow: string | null;
  created_at: string;
  updated_at: string;
  updated_by: string | null;
  last_used_at: string | null;
}

export interface RawRevision {
  number: number;
  config_sha256: string;
  config_file: string;
  applied_at: string;
  created: number;
  updated: number;
  deleted: number;
}

export type RawSnapshotGroup = Pick<RawGroup, 'id' | 'name' | 'allow'>;
export type RawSnapshotKey = Pick<RawKey, 'id' | 'name' | 'digest' | 'group_id' | 'disabled' | 'expires_at' | 'allow' | 'source'>;

/** Column lists of the snapshot queries; each store adds its table names. */
export const SNAPSHOT_GROUP_COLUMNS = 'id, name, allow';
export const SNAPSHOT_KEY_COLUMNS = 'id, name, digest, group_id, disabled, expires_at, allow, source';

export const parseAllow = (s: string | null): AllowRule[] | null => (s === null ? null : (JSON.parse(s) as AllowRule[]));
export const json = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v));
const flag = (v: Flag): boolean => v === true || v === 1;

export function groupFromRow(r: RawGroup): GroupRow {
  return {
    id: r.id,
    name: r.name,
    description: r.description,
    allow: parseAllow(r.allow),
    source: r.source,
    builtin: flag(r.builtin),
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
    disabled: flag(r.disabled),
    allow: parseAllow(r.allow),
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    updatedBy: r.updated_by,
    lastUsedAt: r.last_used_at,
  };
}

export function revisionFromRow(r: RawRevision): RevisionRow {
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

export function snapshotGroup(r: RawSnapshotGroup): SnapshotGroup {
  return { id: r.id, name: r.name, allow: parseAllow(r.allow) };
}

export function snapshotKey(r: RawSnapshotKey): SnapshotKey {
  return {
    id: r.id,
    name: r.name,
    digest: r.digest,
    groupId: r.group_id,
    disabled: flag(r.disabled),
    expiresAt: r.expires_at,
    allow: parseAllow(r.allow),
    source: r.source,
  };
}
