/**
 * The pure heart of reconcile: compare what the file declares with what the
 * database holds and list the changes. Opens no file, database or logger.
 */
import { ALL_USERS_GROUP, groupNameKey, type DesiredGroup, type DesiredKey, type DesiredState } from '../config/types.ts';
import type { AllowRule } from '../rules/match.ts';
import type { ActualState, GroupRow, KeyRow } from '../store/types.ts';

export type Action = 'create' | 'update' | 'delete';
export type Kind = 'group' | 'key';

/** What a plan shows of a key or group: never key material, only its masked prefix. */
export interface KeyView {
  group: string;
  description: string | null;
  creator: string | null;
  prefix: string | null;
  expires_at: string | null;
  disabled: boolean;
  allow: readonly AllowRule[] | null;
  source: 'config' | 'api';
}

export interface GroupView {
  name: string;
  description: string | null;
  allow: readonly AllowRule[] | null;
  source: 'config' | 'api';
}

export interface Change {
  action: Action;
  kind: Kind;
  name: string;
  /** Row id: the existing one for updates and deletes, the new one for creates. */
  id: number;
  before?: KeyView | GroupView;
  after?: KeyView | GroupView;
  /** Fields that differ (updates), `key` when the key material changes. */
  fields?: string[];
  /** An api-owned row that the config now declares, and so takes over. */
  adopt?: boolean;
  /** Why a change the file did not ask for happens (an api key moved off a deleted group). */
  reason?: string;
}

export interface PlanSummary {
  create: number;
  update: number;
  delete: number;
  unchanged: number;
  /** Config-owned keys deleted, for the deletion guard. */
  keysDeleted: number;
  /** Api-owned keys moved off groups the file no longer declares; the deletion guard counts them too. */
  keysMoved: number;
  /** Config-owned keys in the database before the change. */
  configKeys: number;
}

export interface Plan {
  configFile: string;
  configSha256: string;
  changes: Change[];
  summary: PlanSummary;
}

const sameJson = (a: unknown, b: unknown): boolean => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

function groupView(g: DesiredGroup | GroupRow, source: 'config' | 'api'): GroupView {
  return { name: g.name, description: g.description, allow: g.allow, source };
}

function keyViewOfDesired(k: DesiredKey): KeyView {
  return {
    group: k.group,
    description: k.description,
    creator: k.creator,
    prefix: k.prefix,
    expires_at: k.expiresAt,
    disabled: k.disabled,
    allow: k.allow,
    source: 'config',
  };
}

function keyViewOfRow(k: KeyRow, groupName: string): KeyView {
  return {
    group: groupName,
    description: k.description,
    creator: k.creator,
    prefix: k.prefix,
    expires_at: k.expiresAt,
    disabled: k.disabled,
    allow: k.allow,
    source: k.source,
  };
}

export function diff(desired: DesiredState, actual: ActualState): Plan {
  const changes: Change[] = [];
  let unchanged = 0;
  const groupsByName = new Map(actual.groups.map((g) => [g.name, g]));
  const groupNameById = new Map(actual.groups.map((g) => [g.id, g.name]));
  // Group names are unique ignoring case (Metabase's rule): a declared "Analysts" is the row
  // "analysts", renamed, unless the file declares "analysts" too.
  const groupsByKey = new Map<string, GroupRow>();
  for (const g of actual.groups) if (!groupsByKey.has(groupNameKey(g.name))) groupsByKey.set(groupNameKey(g.name), g);
  const desiredNames = new Set(desired.groups.map((g) => g.name));
  /** Rows the file declares: desired group name → row id. */
  const matched = new Map<string, number>();
  const matchedIds = new Set<number>();

  // Groups: creates and updates.
  for (const g of desired.groups) {
    let row = groupsByName.get(g.name);
    if (row === undefined) {
      const other = groupsByKey.get(groupNameKey(g.name));
      if (other !== undefined && !desiredNames.has(other.name) && !matchedIds.has(other.id)) row = other;
    }
    if (row === undefined) {
      changes.push({ action: 'create', kind: 'group', name: g.name, id: g.id, after: groupView(g, 'config') });
      continue;
    }
    matched.set(g.name, row.id);
    matchedIds.add(row.id);
    const fields: string[] = [];
    if (row.name !== g.name) fields.push('name');
    if (row.description !== g.description) fields.push('description');
    if (!sameJson(row.allow, g.allow)) fields.push('allow');
    if (row.source === 'api') fields.push('source');
    if (fields.length === 0) {
      unchanged++;
      continue;
    }
    changes.push({
      action: 'update',
      kind: 'group',
      name: g.name,
      id: row.id,
      before: groupView(row, row.source),
      after: groupView(g, 'config'),
      fields,
      ...(row.source === 'api' ? { adopt: true } : {}),
    });
  }

  // Keys: creates, updates, deletes.
  const keysByName = new Map(actual.keys.map((k) => [k.name, k]));
  const declared = new Set<string>();
  for (const k of desired.keys) {
    declared.add(k.name);
    const row = keysByName.get(k.name);
    if (row === undefined) {
      changes.push({ action: 'create', kind: 'key', name: k.name, id: k.id, after: keyViewOfDesired(k) });
      continue;
    }
    const rowGroup = groupNameById.get(row.groupId) ?? '?';
    const fields: string[] = [];
    if (row.groupId !== matched.get(k.group)) fields.push('group');
    if (row.digest !== k.digest) fields.push('key');
    if (row.description !== k.description) fields.push('description');
    if (row.creator !== k.creator) fields.push('creator');
    if (row.expiresAt !== k.expiresAt) fields.push('expires_at');
    if (row.disabled !== k.disabled) fields.push('disabled');
    if (!sameJson(row.allow, k.allow)) fields.push('allow');
    if (row.source === 'api') fields.push('source');
    if (fields.length === 0) {
      unchanged++;
      continue;
    }
    changes.push({
      action: 'update',
      kind: 'key',
      name: k.name,
      id: row.id,
      before: keyViewOfRow(row, rowGroup),
      after: keyViewOfDesired(k),
      fields,
      ...(row.source === 'api' ? { adopt: true } : {}),
    });
  }
  let keysDeleted = 0;
  let configKeys = 0;
  for (const row of actual.keys) {
    if (row.source !== 'config') continue;
    configKeys++;
    if (declared.has(row.name)) continue;
    keysDeleted++;
    changes.push({
      action: 'delete',
      kind: 'key',
      name: row.name,
      id: row.id,
      before: keyViewOfRow(row, groupNameById.get(row.groupId) ?? '?'),
    });
  }

  // Groups that the file no longer declares: their api keys move to all-users, as in
  // Metabase, but never gain a route by it (see `reassignment`).
  let keysMoved = 0;
  for (const row of actual.groups) {
    if (row.source !== 'config' || row.builtin || matchedIds.has(row.id)) continue;
    for (const k of actual.keys) {
      if (k.groupId !== row.id || k.source !== 'api') continue;
      keysMoved++;
      changes.push(reassignment(k, row));
    }
    changes.push({ action: 'delete', kind: 'group', name: row.name, id: row.id, before: groupView(row, row.source) });
  }

  const summary: PlanSummary = {
    create: changes.filter((c) => c.action === 'create').length,
    update: changes.filter((c) => c.action === 'update').length,
    delete: changes.filter((c) => c.action === 'delete').length,
    unchanged,
    keysDeleted,
    keysMoved,
    configKeys,
  };
  return { configFile: desired.file, configSha256: desired.sha256, changes, summary };
}

/**
 * Where a key goes when its group is deleted, and with which rules, so that it
 * never gains a route: it moves to all-users (Metabase's rule) and takes its
 * old group's rules as its own `allow`, which can only narrow all-users'
 * rules. A key may call a route when both its group and its own rules allow
 * it, so it keeps the routes that both groups allow and gains none. A key that
 * has rules of its own already (not possible through the management API
 * today) cannot hold both lists, and is disabled instead: fail closed.
 */
export function reassignedKeyRules(
  key: Pick<KeyRow, 'allow' | 'disabled'>,
  lostGroup: Pick<GroupRow, 'allow'>,
): { allow: readonly AllowRule[] | null; disabled: boolean } {
  if (lostGroup.allow === null) return { allow: key.allow, disabled: key.disabled };
  if (key.allow === null) return { allow: lostGroup.allow, disabled: key.disabled };
  return { allow: key.allow, disabled: true };
}

function reassignment(k: KeyRow, lost: GroupRow): Change {
  const next = reassignedKeyRules(k, lost);
  const before = keyViewOfRow(k, lost.name);
  const after: KeyView = { ...before, group: ALL_USERS_GROUP, allow: next.allow, disabled: next.disabled };
  const fields = ['group'];
  if (!sameJson(before.allow, after.allow)) fields.push('allow');
  if (before.disabled !== after.disabled) fields.push('disabled');
  const how = next.disabled && !k.disabled
    ? 'is disabled: it has rules of its own and cannot keep both'
    : fields.includes('allow')
      ? `keeps the rules of "${lost.name}" as its own, so it gains no route`
      : `gains no route (the group allowed every route)`;
  return {
    action: 'update',
    kind: 'key',
    name: k.name,
    id: k.id,
    before,
    after,
    fields,
    reason: `group "${lost.name}" is deleted: the api-owned key moves to ${ALL_USERS_GROUP} and ${how}`,
  };
}

/** The deletion guard's limit for a database with `configKeys` config-owned keys. */
export function deletionLimit(configKeys: number, maxDeletes: number | null): number {
  if (maxDeletes !== null) return maxDeletes;
  return Math.max(10, Math.floor(configKeys / 4));
}
