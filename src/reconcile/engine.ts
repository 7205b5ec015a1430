import type { DesiredState } from '../config/types.ts';
import { DeletionGuardError } from '../errors.ts';
import type { ActualState, RevisionRow, Store } from '../store/types.ts';
import { applyPlan } from './apply.ts';
import { deletionLimit, diff, type Plan } from './diff.ts';

export interface ReconcileOptions {
  /** false: plan only, write nothing. */
  apply: boolean;
  /** Lift the deletion guard for this run. */
  allowDeletes?: boolean;
  now?: Date;
}

export interface GuardVerdict {
  /** Config-owned keys the change deletes, plus api-owned keys it moves off deleted groups. */
  deletes: number;
  /** Of those, the api-owned keys moved off deleted groups. */
  moved: number;
  limit: number;
  refused: boolean;
}

export interface ReconcileResult {
  plan: Plan;
  revision: RevisionRow | null;
  guard: GuardVerdict;
}

function planChecked(desired: DesiredState, actual: ActualState, allowDeletes: boolean): { plan: Plan; guard: GuardVerdict } {
  const plan = diff(desired, actual);
  const limit = deletionLimit(plan.summary.configKeys, desired.settings.maxDeletes);
  const deletes = plan.summary.keysDeleted + plan.summary.keysMoved;
  return { plan, guard: { deletes, moved: plan.summary.keysMoved, limit, refused: !allowDeletes && deletes > limit } };
}

/**
 * Plan and apply run the same engine; only apply writes. A plan that the
 * deletion guard would refuse is still returned by a plan (so that a reviewer
 * sees it), and refused by an apply. An apply reads, diffs and writes in one
 * store transaction under the store's write lock, so two appliers (two
 * replicas, or `keygate apply` beside a daemon) never interleave: the second
 * finds nothing left to do.
 */
export async function reconcile(store: Store, desired: DesiredState, opts: ReconcileOptions): Promise<ReconcileResult> {
  const allowDeletes = opts.allowDeletes === true;
  if (!opts.apply) return { ...planChecked(desired, await store.readActual(), allowDeletes), revision: null };
  return store.write(async (tx) => {
    const { plan, guard } = planChecked(desired, await tx.readActual(), allowDeletes);
    if (guard.refused) throw new DeletionGuardError(plan.summary.keysDeleted, guard.limit, plan.summary.configKeys, plan.summary.keysMoved);
    return { plan, guard, revision: await applyPlan(tx, desired, plan, opts.now) };
  });
}
