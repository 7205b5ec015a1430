/**
 * Writes made through the management API. Each runs in one transaction and
 * marks what it writes as `source: 'api'`.
 */
import { ALL_USERS_GROUP, BUILTIN_GROUPS } from '../config/types.ts';
import type { DB } from './db.ts';
import { groupFromRow, keyFromRow, type GroupRow, type KeyRow } from './state.ts';

export interface Actor {
  id: number;
  name: string;
}

const actorText = (a: Actor): string => JSON.stringify({ id: a.id, common_name: a.name });

export function getKey(db: DB, id: number): KeyRow | null {
  const r = db.prepare('SELECT * FROM api_keys WHERE id = ?').get(id);
  return r === undefined ? null : keyFromRow(r as Parameters<typeof keyFromRow>[0]);
}

export function getKeyByName(db: DB, name: string): KeyRow | null {
  const r = db.prepare('SELECT * FROM api_keys WHERE name = ?').get(name);
  return r === undefined ? null : keyFromRow(r as Parameters<typeof keyFromRow>[0]);
}

export function getGroup(db: DB, id: number): GroupRow | null {
  const r = db.prepare('SELECT * FROM groups WHERE id = ?').get(id);
  return r === undefined ? null : groupFromRow(r as Parameters<typeof groupFromRow>[0]);
}

export function getGroupByName(db: DB, name: string): GroupRow | null {
  const r = db.prepare('SELECT * FROM groups WHERE name = ?').get(name);
  return r === undefined ? null : groupFromRow(r as Parameters<typeof groupFromRow>[0]);
}

export function memberCounts(db: DB): Map<number, number> {
  const rows = db.prepare('SELECT group_id AS id, count(*) AS n FROM api_keys GROUP BY group_id').all() as Array<{ id: number; n: number }>;
  return new Map(rows.map((r) => [r.id, r.n]));
}

export interface NewKey {
  id: number;
  name: string;
  digest: string;
  prefix: string;
  groupId: number;
  description: string | null;
  expiresAt: string | null;
}

export function insertApiKey(db: DB, k: NewKey, actor: Actor, now = new Date()): KeyRow {
  const at = now.toISOString();
  db.prepare(
    `INSERT INTO api_keys (id, name, digest, prefix, group_id, source, description, creator, expires_at, disabled, allow,
                           created_at, updated_at, updated_by)
     VALUES (?, ?, ?, ?, ?, 'api', ?, NULL, ?, 0, NULL, ?, ?, ?)`,
  ).run(k.id, k.name, k.digest, k.prefix, k.groupId, k.description, k.expiresAt, at, at, actorText(actor));
  return getKey(db, k.id) as KeyRow;
}

export function updateApiKey(
  db: DB,
  id: number,
  change: { name?: string; groupId?: number; description?: string | null; digest?: string; prefix?: string },
  actor: Actor,
  now = new Date(),
): KeyRow {
  const sets: string[] = [];
  const values: unknown[] = [];
  if (change.name !== undefined) (sets.push('name = ?'), values.push(change.name));
  if (change.groupId !== undefined) (sets.push('group_id = ?'), values.push(change.groupId));
  if (change.description !== undefined) (sets.push('description = ?'), values.push(change.description));
  if (change.digest !== undefined) (sets.push('digest = ?'), values.push(change.digest));
  if (change.prefix !== undefined) (sets.push('prefix = ?'), values.push(change.prefix));
  sets.push('updated_at = ?', 'updated_by = ?');
  values.push(now.toISOString(), actorText(actor), id);
  db.prepare(`UPDATE api_keys SET ${sets.join(', ')} WHERE id = ?`).run(...values);
  return getKey(db, id) as KeyRow;
}

export function deleteApiKey(db: DB, id: number): void {
  db.prepare('DELETE FROM api_keys WHERE id = ?').run(id);
}

export function insertApiGroup(db: DB, g: { id: number; name: string; description: string | null }, now = new Date()): GroupRow {
  const at = now.toISOString();
  db.prepare(
    `INSERT INTO groups (id, name, description, allow, source, builtin, created_at, updated_at)
     VALUES (?, ?, ?, NULL, 'api', 0, ?, ?)`,
  ).run(g.id, g.name, g.description, at, at);
  return getGroup(db, g.id) as GroupRow;
}

/** Deletes a group; its keys move to all-users (Metabase's rule). Returns how many moved. */
export function deleteGroupMovingKeys(db: DB, id: number, actor: Actor, now = new Date()): number {
  return db.transaction(() => {
    const moved = db
      .prepare('UPDATE api_keys SET group_id = ?, updated_at = ?, updated_by = ? WHERE group_id = ?')
      .run(BUILTIN_GROUPS[ALL_USERS_GROUP].id, now.toISOString(), actorText(actor), id).changes;
    db.prepare('DELETE FROM groups WHERE id = ?').run(id);
    return moved;
  })();
}
