import { ALL_USERS_GROUP, BUILTIN_GROUPS, type DesiredState } from '../config/types.ts';
import { KeygateError, StoreConflictError } from '../errors.ts';
import type { KeyReassignment, KeyUpdate, NewGroup, NewKey, RevisionRow, StoreTx } from '../store/types.ts';
import type { KeyView, Plan } from './diff.ts';

/**
 * Writes a plan through a store transaction, handing each change to the
 * store's per-kind writes. Order: group creates and updates, key deletes, key
 * updates, keys moved off deleted groups, key creates, group deletes, then the
 * revision. Returns the new revision, or null for an empty plan (nothing is
 * written). The caller's transaction makes it all or nothing.
 */
export async function applyPlan(tx: StoreTx, desired: DesiredState, plan: Plan, now: Date = new Date()): Promise<RevisionRow | null> {
  if (plan.changes.length === 0) return null;
  const at = now.toISOString();
  const groups = new Map(desired.groups.map((g) => [g.name, g]));
  const keys = new Map(desired.keys.map((k) => [k.name, k]));
  const required = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`plan names ${what} that the config does not declare`);
    return v;
  };

  const groupCreates: NewGroup[] = [];
  const groupUpdates: NewGroup[] = [];
  const groupDeletes: number[] = [];
  const keyCreates: NewKey[] = [];
  const keyUpdates: KeyUpdate[] = [];
  const keyMoves: KeyReassignment[] = [];
  const keyDeletes: number[] = [];
  const keyRows: Array<{ create: boolean; id: number; name: string }> = [];

  for (const c of plan.changes) {
    if (c.kind === 'group') {
      if (c.action === 'delete') groupDeletes.push(c.id);
      else {
        const g = required(groups.get(c.name), `group "${c.name}"`);
        (c.action === 'create' ? groupCreates : groupUpdates).push({ id: c.id, name: g.name, description: g.description, allow: g.allow, source: 'config', at });
      }
    } else if (c.action === 'delete') keyDeletes.push(c.id);
    else if (!keys.has(c.name)) {
      // An api-owned key that moves off a deleted group, with the rules the plan gave it.
      const after = c.after as KeyView;
      keyMoves.push({ id: c.id, groupId: BUILTIN_GROUPS[ALL_USERS_GROUP].id, allow: after.allow, disabled: after.disabled, at, updatedBy: 'config' });
    } else keyRows.push({ create: c.action === 'create', id: c.id, name: c.name });
  }

  await tx.insertGroups(groupCreates);
  await tx.updateGroups(groupUpdates);
  const groupIds = new Map((await tx.listGroups()).map((g) => [g.name, g.id]));
  for (const r of keyRows) {
    const k = required(keys.get(r.name), `key "${r.name}"`);
    const groupId = groupIds.get(k.group);
    if (groupId === undefined) throw new Error(`group "${k.group}" of key "${k.name}" does not exist`);
    const row: NewKey = {
      id: r.id,
      name: k.name,
      digest: k.digest,
      prefix: k.prefix,
      groupId,
      source: 'config',
      description: k.description,
      creator: k.creator,
      expiresAt: k.expiresAt,
      disabled: k.disabled,
      allow: k.allow,
      at,
      updatedBy: 'config',
    };
    (r.create ? keyCreates : keyUpdates).push(row);
  }

  try {
    await tx.deleteKeys(keyDeletes);
    await tx.updateKeys(keyUpdates);
    await tx.reassignKeys(keyMoves);
    await tx.insertKeys(keyCreates);
    await tx.deleteGroups(groupDeletes);
    const s = plan.summary;
    return await tx.recordRevision({ configSha256: plan.configSha256, configFile: plan.configFile, at, created: s.create, updated: s.update, deleted: s.delete });
  } catch (err) {
    if (err instanceof StoreConflictError) throw new KeygateError('KG_ERR_APPLY_FAILED', `apply failed, nothing was changed: ${describeConflict(err, plan)}`, { cause: err });
    if (err instanceof KeygateError) throw err;
    throw new KeygateError('KG_ERR_APPLY_FAILED', `apply failed, nothing was changed: ${(err as Error).message}`, { cause: err });
  }
}

function describeConflict(err: StoreConflictError, plan: Plan): string {
  if (err.kind === 'key' && err.field === 'digest') {
    const names = plan.changes.filter((c) => c.kind === 'key' && c.action !== 'delete').map((c) => c.name);
    return `a key declared in the file is already used by another key in the database (one of: ${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}); every key must be unique`;
  }
  return `a ${err.kind} name declared in the file is already taken in the database`;
}
