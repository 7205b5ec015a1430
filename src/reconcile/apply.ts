import { ALL_USERS_GROUP, BUILTIN_GROUPS, type DesiredState } from '../config/types.ts';
import { KeygateError } from '../errors.ts';
import type { DB } from '../store/db.ts';
import { latestRevision, type RevisionRow } from '../store/state.ts';
import type { Plan } from './diff.ts';

const json = (v: unknown): string | null => (v === null || v === undefined ? null : JSON.stringify(v));

/**
 * Writes a plan in one transaction: all of it lands or none of it does.
 * Order: group creates/updates, key deletes, key creates/updates, group deletes.
 * Returns the new revision, or null for an empty plan (nothing is written).
 */
export function applyPlan(db: DB, desired: DesiredState, plan: Plan, now: Date = new Date()): RevisionRow | null {
  if (plan.changes.length === 0) return null;
  const at = now.toISOString();
  const groups = new Map(desired.groups.map((g) => [g.name, g]));
  const keys = new Map(desired.keys.map((k) => [k.name, k]));

  const insertGroup = db.prepare(
    `INSERT INTO groups (id, name, description, allow, source, builtin, created_at, updated_at)
     VALUES (@id, @name, @description, @allow, 'config', 0, @at, @at)`,
  );
  const updateGroup = db.prepare(
    `UPDATE groups SET description = @description, allow = @allow, source = 'config', updated_at = @at WHERE id = @id`,
  );
  const deleteGroup = db.prepare('DELETE FROM groups WHERE id = ?');
  const groupId = db.prepare('SELECT id FROM groups WHERE name = ?').pluck();
  const insertKey = db.prepare(
    `INSERT INTO api_keys (id, name, digest, prefix, group_id, source, description, creator, expires_at, disabled, allow,
                           created_at, updated_at, updated_by)
     VALUES (@id, @name, @digest, @prefix, @groupId, 'config', @description, @creator, @expiresAt, @disabled, @allow,
             @at, @at, 'config')`,
  );
  const updateKey = db.prepare(
    `UPDATE api_keys SET digest = @digest, prefix = @prefix, group_id = @groupId, source = 'config',
            description = @description, creator = @creator, expires_at = @expiresAt, disabled = @disabled,
            allow = @allow, updated_at = @at, updated_by = 'config'
     WHERE id = @id`,
  );
  const moveKey = db.prepare(`UPDATE api_keys SET group_id = ?, updated_at = ? WHERE id = ?`);
  const deleteKey = db.prepare('DELETE FROM api_keys WHERE id = ?');
  // 'x' is not a hex digit: a placeholder never equals a real digest.
  const parkDigest = db.prepare(`UPDATE api_keys SET digest = 'x' || printf('%063d', id) WHERE id = ?`);
  const insertRevision = db.prepare(
    `INSERT INTO revisions (config_sha256, config_file, applied_at, created, updated, deleted)
     VALUES (?, ?, ?, ?, ?, ?)`,
  );

  const run = db.transaction(() => {
    for (const c of plan.changes) {
      if (c.kind !== 'group' || c.action === 'delete') continue;
      const g = groups.get(c.name);
      if (g === undefined) throw new Error(`plan names group "${c.name}" that the config does not declare`);
      const row = { id: c.id, name: g.name, description: g.description, allow: json(g.allow), at };
      if (c.action === 'create') insertGroup.run(row);
      else updateGroup.run(row);
    }
    for (const c of plan.changes) {
      if (c.kind === 'key' && c.action === 'delete') deleteKey.run(c.id);
    }
    // Key material may move between entries in one change (rotation, swaps): park the
    // digests that change on unique placeholders first, so that UNIQUE(digest) holds throughout.
    for (const c of plan.changes) {
      if (c.kind === 'key' && c.action === 'update' && c.fields?.includes('key') === true) parkDigest.run(c.id);
    }
    for (const c of plan.changes) {
      if (c.kind !== 'key' || c.action === 'delete') continue;
      const k = keys.get(c.name);
      if (k === undefined) {
        // An api-owned key that moves off a deleted group.
        moveKey.run(BUILTIN_GROUPS[ALL_USERS_GROUP].id, at, c.id);
        continue;
      }
      const gid = groupId.get(k.group) as number | undefined;
      if (gid === undefined) throw new Error(`group "${k.group}" of key "${k.name}" does not exist`);
      const row = {
        id: c.id,
        name: k.name,
        digest: k.digest,
        prefix: k.prefix,
        groupId: gid,
        description: k.description,
        creator: k.creator,
        expiresAt: k.expiresAt,
        disabled: k.disabled ? 1 : 0,
        allow: json(k.allow),
        at,
      };
      if (c.action === 'create') insertKey.run(row);
      else updateKey.run(row);
    }
    for (const c of plan.changes) {
      if (c.kind === 'group' && c.action === 'delete') deleteGroup.run(c.id);
    }
    const s = plan.summary;
    insertRevision.run(plan.configSha256, plan.configFile, at, s.create, s.update, s.delete);
  });
  try {
    run.immediate();
  } catch (err) {
    throw new KeygateError('KG_ERR_APPLY_FAILED', `apply failed, nothing was changed: ${describeSqliteError(err, plan)}`, {
      cause: err,
    });
  }
  return latestRevision(db);
}

function describeSqliteError(err: unknown, plan: Plan): string {
  const e = err as { code?: string; message?: string };
  if (e.code === 'SQLITE_CONSTRAINT_UNIQUE' && /api_keys\.digest/.test(e.message ?? '')) {
    const names = plan.changes.filter((c) => c.kind === 'key' && c.action !== 'delete').map((c) => c.name);
    return `a key declared in the file is already used by another key in the database (one of: ${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}); every key must be unique`;
  }
  return e.message ?? String(err);
}
